"""TensorRT backend: a plain plan file (.engine/.plan) plus its sidecar `<engine>.json`.

A plan only runs with the TensorRT version and the GPU (compute capability) it was built for;
the sidecar records both and loading refuses a mismatch with a message saying so, instead of
TensorRT's opaque deserialisation error. Device buffers are torch CUDA tensors (torch ships on
Jetson and CUDA machines alike), so no pycuda is needed. Not run on our machines (no GPU).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmunext_edge._deps import MissingDependencyError, available, require
from cmunext_edge.artifacts.kinds import companion_problem, kind_named
from cmunext_edge.artifacts.meta import apply_metadata
from cmunext_edge.runtime.base import Backend, BackendError, DeviceUnavailableError
from cmunext_edge.fileio import loads_json

INSTALL_HINT = ('TensorRT is not installed. On an x86 machine with an NVIDIA GPU: '
                'pip install "cmunext-edge[tensorrt]" (the tensorrt wheel); on a Jetson it comes with '
                'JetPack (sudo apt install nvidia-jetpack, python3-libnvinfer); TensorRT needs an NVIDIA GPU.')


def require_tensorrt():
    if not available("tensorrt"):
        raise MissingDependencyError(INSTALL_HINT)
    return require("tensorrt")


def sidecar_path(engine: str | Path) -> Path:
    """`<engine>.json`, the companion file artifacts/kinds.py names for a TensorRT plan."""
    return kind_named("tensorrt").companion_files(engine)[0]


def gpu_info(device_index: int = 0) -> dict:
    torch = require("torch")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError("TensorRT needs a CUDA GPU and torch.cuda.is_available() is False")
    major, minor = torch.cuda.get_device_capability(device_index)
    return {"gpu_name": torch.cuda.get_device_name(device_index), "compute_capability": f"{major}.{minor}"}


def check_compatible(sidecar: dict, trt_version: str, gpu: dict, path) -> None:
    """Refuse a plan built by another TensorRT version or for another GPU, saying which."""
    problems = []
    if sidecar.get("tensorrt_version") != trt_version:
        problems.append(f"built with TensorRT {sidecar.get('tensorrt_version')}, this machine has {trt_version}")
    if sidecar.get("compute_capability") != gpu["compute_capability"]:
        problems.append(f"built for {sidecar.get('gpu_name')} (compute capability "
                        f"{sidecar.get('compute_capability')}), this GPU is {gpu['gpu_name']} "
                        f"({gpu['compute_capability']})")
    if problems:
        raise BackendError(f"{path}: this TensorRT engine cannot run here: {'; '.join(problems)}. "
                           f"Rebuild it on this machine: cmunext-export --target tensorrt ...")


class TensorRTBackend(Backend):
    name = "tensorrt"

    def _load(self) -> None:
        device, _, index = self.requested_device.lower().partition(":")
        if index not in ("", "0"):     # the engine, its stream and buffers use the current CUDA device
            raise BackendError(f"tensorrt: device {self.requested_device!r}: this backend runs on the current CUDA "
                               f"device only (cuda or cuda:0); to run on GPU {index}, start the process with "
                               f"CUDA_VISIBLE_DEVICES={index}")
        trt = require_tensorrt()
        torch = self.torch = require("torch")
        problem = companion_problem(self.path)
        if problem:
            raise BackendError(f"{problem} (it records the TensorRT version, GPU and preprocessing); export "
                               f"engines with cmunext-export")
        sidecar = loads_json(sidecar_path(self.path).read_text())
        check_compatible(sidecar, trt.__version__, gpu_info(), self.path)
        meta = apply_metadata(self, sidecar.get("metadata", {}))
        self.precision = meta.get("precision", sidecar.get("precision", "fp32"))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{self.path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if n != self.input_name)
        self.input_shape = tuple(d if d > 0 else None for d in self.engine.get_tensor_shape(self.input_name))
        self.device = "dla" if sidecar.get("dla_core") is not None else "cuda"
        self.stream = torch.cuda.Stream()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(batch).cuda()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError("TensorRT execution failed")
        self.stream.synchronize()
        return y.cpu().numpy()

    def _close(self) -> None:
        self.context = self.engine = None

    @classmethod
    def list_devices(cls) -> list[str]:
        if not available("tensorrt") or not available("torch"):
            return []
        torch = require("torch")
        return ["cuda:0"] if torch.cuda.device_count() else []     # the current device (see _load)
