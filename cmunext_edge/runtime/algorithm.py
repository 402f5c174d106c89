"""The algorithm identification a DICOM SEG carries (predict/dicom_seg.Algorithm), read from the
model's files without a runtime: name, variant, SHA-256, precision. In runtime/ because it reads both
artifacts (artifacts/info.py) and checkpoints (checkpoints/weights.py), which predict/ may not import."""
from __future__ import annotations

from pathlib import Path

from cmunext_edge.predict.dicom_seg import Algorithm


def algorithm_of(artifact, precision: str | None = None) -> Algorithm:
    """The Algorithm record of an artifact or checkpoint file (read from its files, no runtime)."""
    from cmunext_edge.fileio import sha256_file
    from cmunext_edge.resources import resolve_weights
    path = Path(resolve_weights(artifact))
    variant = "unknown"
    try:
        from cmunext_edge.artifacts.info import describe_artifact, is_artifact
        if is_artifact(path):
            info = describe_artifact(path)
            variant, precision = info.get("variant") or variant, precision or info.get("precision")
        else:
            from cmunext_edge.checkpoints.weights import inspect_checkpoint
            variant = inspect_checkpoint(path).info.variant
    except Exception:          # the identification stays "unknown" rather than failing the SEG
        pass
    return Algorithm(path.stem, str(variant), sha256_file(path), str(precision or "fp32"))
