"""Tensor shapes of a PyTorch `.pth`/`.pt` checkpoint without torch, and without running code.

A torch checkpoint is a pickle (inside a zip archive, or after three small header pickles in
the legacy format) whose tensors are calls to a handful of torch rebuild functions. This
reader resolves only those names, plus plain containers, to stand-ins that record the shape:
no torch function and no other global is ever looked up, let alone called, so a pickle that
would run code is refused exactly as `torch.load(weights_only=True)` refuses it. Tensor data
is never read.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C       # torch.serialization.MAGIC_NUMBER

_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
           "bool", "float", "double", "half", "long", "int")
_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")


class TensorStub:
    """A tensor's shape and dtype, as recorded in a checkpoint."""

    def __init__(self, shape, dtype: str | None = None):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"TensorStub{self.shape}"


def _rebuild_tensor(storage, _offset, size, _stride, *_rest) -> TensorStub:
    return TensorStub(size, getattr(storage, "dtype", None))


def _rebuild_parameter(data, *_rest):
    return data


class _StorageType(str):
    """Stands in for torch.FloatStorage & co. (only its name is kept)."""


class _Storage:
    def __init__(self, storage_type):
        self.dtype = str(storage_type)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **{("torch", f"{name}Storage"): _StorageType(f"{name}Storage") for name in _STORAGES},
    **{("torch", name): _StorageType(name) for name in _DTYPES},
}


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"Unsupported global: GLOBAL {module}.{name} is not a tensor or a plain container") from None

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view]): only the type is kept
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            return _Storage(pid[1])
        raise pickle.UnpicklingError(f"Unsupported persistent id {pid!r}")


def _zip_pickle(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if not names:
            raise pickle.UnpicklingError("zip archive without a data.pkl: not a torch checkpoint")
        return archive.read(names[0])


def _legacy_object(fh):
    if _ShapeUnpickler(fh).load() != LEGACY_MAGIC:
        raise pickle.UnpicklingError("legacy pickle without torch's magic number")
    _ShapeUnpickler(fh).load()       # protocol version
    _ShapeUnpickler(fh).load()       # sys info
    return _ShapeUnpickler(fh).load()


def read_pth(path: str | Path):
    """The checkpoint's object with every tensor replaced by a `TensorStub`.

    Raises pickle.UnpicklingError for anything but tensors and plain containers, and the
    usual EOFError / zipfile.BadZipFile / ValueError for damaged files.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _ShapeUnpickler(io.BytesIO(_zip_pickle(path))).load()
    with open(path, "rb") as fh:
        return _legacy_object(fh)
