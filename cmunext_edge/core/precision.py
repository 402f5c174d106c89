"""Precision and INT8-mode names as `str` enums (no heavy imports).

Members compare, hash, JSON-encode and format exactly like their string values, so
`Precision.INT8 == "int8"`, `{"int8": x}[Precision.INT8]`, `f"{Precision.FP16}" == "fp16"` and
`json.dumps(Precision.BF16) == '"bf16"'` all hold: code and files that use the plain strings keep working.
"""
from __future__ import annotations

from enum import Enum


class _StrValue(str, Enum):
    """A str Enum whose str() and format() give the bare value (Python 3.11+ would add the class)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class Precision(_StrValue):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class Int8Mode(_StrValue):
    """How TensorRT gets its INT8 scales: explicit Q/DQ nodes, or an implicit calibrator (JetPack 5)."""
    QDQ = "qdq"
    CALIBRATOR = "calibrator"
