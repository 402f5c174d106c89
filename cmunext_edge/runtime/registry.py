"""One table from backend to backend class, optional dependency, pip extra, the device names it
understands and the options it accepts (anything else is an error, never ignored). Which backend
a file needs follows from its kind (artifacts/kinds.py)."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from cmunext_edge._deps import MissingDependencyError, available
from cmunext_edge.artifacts import kinds
from cmunext_edge.artifacts.integrity import IntegrityError, SignatureError, VerifyReport, check_trust, enforce, precheck, verify_loaded
from cmunext_edge.artifacts.signing import trust_policy
from cmunext_edge.artifacts.meta import MetadataError
from cmunext_edge.capabilities import MAX_THREADS
from cmunext_edge.fileio import not_a_file
from cmunext_edge.runtime.base import Backend, BackendError


@dataclass(frozen=True)
class BackendEntry:
    name: str
    target: str          # "module:Class", imported lazily
    requires: str        # python module the backend needs
    extra: str           # pip extra that installs it
    aliases: tuple[str, ...] = ()
    devices: str = r"cpu"                      # regular expression of accepted device names
    device_help: str = "cpu"
    options: dict = field(default_factory=dict)   # option name -> BackendOption

    def check_device(self, device: str, strict: bool = False) -> None:
        """A device name no backend knows is an error; one another backend knows (e.g. npu for a
        checkpoint) is left to this backend (a reported fallback, or its own error) unless `strict`."""
        if re.fullmatch(self.devices, str(device), re.IGNORECASE):
            return
        if strict or not any(re.fullmatch(e.devices, str(device), re.IGNORECASE) for e in BACKENDS):
            raise BackendError(f"{self.name}: unknown device {device!r}; use one of {self.device_help}")

    def check_options(self, options: dict) -> dict:
        """Validated options (values normalised); an unknown or invalid one raises BackendError."""
        out = {}
        for key, value in options.items():
            if key not in self.options:
                valid = ", ".join(sorted(self.options)) or "none"
                raise BackendError(f"{self.name}: unknown option {key!r}; valid options: {valid}")
            out[key] = self.options[key].check(self.name, key, value)
        return out

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The file suffixes of the artifact kinds this backend loads."""
        return tuple(s for k in kinds.KINDS if k.backend == self.name for s in k.suffixes)

    def load_class(self) -> type[Backend]:
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class BackendOption:
    kind: str                        # "int" (>= 1, <= high), "bool", "str" or "choice"
    choices: tuple[str, ...] = ()
    help: str = ""
    high: int | None = None          # "int": the largest value accepted

    def check(self, backend: str, key: str, value):
        if value is None:
            return None
        if self.kind == "choice" and str(value).lower() in self.choices:
            return str(value).lower()
        if self.kind == "int" and str(value).strip().isdigit() and 1 <= int(value) <= (self.high or int(value)):
            return int(value)
        if self.kind == "bool" and str(value).lower() in _BOOLS:
            return _BOOLS[str(value).lower()]
        if self.kind == "str" and str(value):
            return str(value)
        expected = {"choice": f"one of {', '.join(self.choices)}",
                    "int": f"an integer in [1, {self.high}]" if self.high else "an integer >= 1",
                    "bool": "0/1 or true/false", "str": "a non-empty string"}[self.kind]
        raise BackendError(f"{backend}: invalid value {value!r} for option {key!r}: expected {expected}")


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_THREADS = BackendOption("int", help="inference threads", high=MAX_THREADS)

BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("pytorch",
                 "cmunext_edge.runtime.torch_backend:TorchBackend", "torch", "torch", ("torch",),
                 r"cpu|cuda(:\d+)?|gpu", "cpu, cuda, cuda:N",
                 {"precision": BackendOption("choice", ("fp32", "fp16", "bf16")),
                  "channels_last": BackendOption("bool"), "threads": _THREADS,
                  "cuda_graphs": BackendOption("bool", help="CUDA: replay one captured graph per input shape"),
                  "fold_bn": BackendOption("bool", help="fold post-GELU BatchNorms into the next 1x1 conv")}),
    BackendEntry("onnxruntime",
                 "cmunext_edge.runtime.onnxruntime_backend:OnnxRuntimeBackend", "onnxruntime", "onnxruntime",
                 ("ort", "onnx"), r"cpu|openvino|ov|(cuda|gpu|tensorrt|trt)(:\d+)?",
                 "cpu, cuda, cuda:N, tensorrt, tensorrt:N, openvino", {"threads": _THREADS}),
    BackendEntry("openvino",
                 "cmunext_edge.runtime.openvino_backend:OpenVINOBackend", "openvino", "openvino", ("ov",),
                 r"(cpu|gpu|npu|auto)(\.\d+)?", "cpu, gpu, npu, auto (OpenVINO device names)",
                 {"hint": BackendOption("choice", ("latency", "throughput")), "threads": _THREADS,
                  "num_streams": BackendOption("int"), "cache_dir": BackendOption("str"),
                  "inference_precision": BackendOption("choice", ("f32", "bf16", "f16")),
                  "batch": BackendOption("int")}),
    BackendEntry("tensorrt",
                 "cmunext_edge.runtime.tensorrt_backend:TensorRTBackend", "tensorrt", "tensorrt", ("trt",),
                 r"cuda(:0)?|gpu", "cuda (the current CUDA device; another GPU: CUDA_VISIBLE_DEVICES)"),
)


def device_problem(device: str) -> str | None:
    """Why `device` is no device name any backend knows (a typo, not a missing device), else None."""
    if any(re.fullmatch(e.devices, str(device), re.IGNORECASE) for e in BACKENDS):
        return None
    names = dict.fromkeys(n.split(" (")[0].strip() for e in BACKENDS for n in e.device_help.split(","))
    return f"unknown device {device!r}: no backend knows it; use one of {', '.join(names)}"


def entry_for(name: str) -> BackendEntry:
    for e in BACKENDS:
        if name == e.name or name in e.aliases:
            return e
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(e.name for e in BACKENDS)}")


def entry_for_path(path: str | Path) -> BackendEntry:
    path = Path(path)
    kind = kinds.kind_of(path)
    if kind is None:
        known = ", ".join(s for e in BACKENDS for s in e.suffixes)
        raise BackendError(f"{path}: unknown artifact kind {path.suffix.lower()!r}; known suffixes: {known}")
    return entry_for(kind.backend)


def check_request(path: str | Path, device: str = "cpu", backend: str | None = None,
                  options: dict | None = None) -> tuple[BackendEntry, dict]:
    """The registry row for `path` (or `backend`), with `device` and `options` checked against it
    (BackendError naming the valid ones otherwise); nothing is loaded."""
    what = not_a_file(path)               # a runtime would say "protobuf parsing failed"
    if what:
        raise BackendError(f"{path}: {what}, not a model file; give the artifact or checkpoint file itself")
    entry = entry_for(backend) if backend else entry_for_path(path)
    entry.check_device(device)
    return entry, entry.check_options(options or {})


def _check_flags(**flags) -> None:
    """verify and strict_device are True or False: a string such as "no" would silently mean True."""
    for name, value in flags.items():
        if type(value).__name__ not in ("bool", "bool_"):       # numpy's bool too
            raise TypeError(f"{name} must be True or False, got {value!r}")


def open_backend(path: str | Path, device: str = "cpu", backend: str | None = None,
                 strict_device: bool = False, verify: bool = True, trusted_keys=None, **options) -> Backend:
    """Load `path` with the backend its suffix (or `backend`) selects.

    Under a trust policy (`trusted_keys`, else $CMUNEXT_TRUSTED_KEYS; signing.py) the files must
    carry a valid signature by a trusted key before the runtime reads them, with or without
    `verify`. With `verify` (the default) an exported artifact is also checked before it is
    returned: its files against manifest.json or the embedded content hash, then its embedded
    self-test (artifacts/integrity.py); a mismatch raises IntegrityError and nothing runs."""
    _check_flags(verify=verify, strict_device=strict_device)
    entry, options = check_request(path, device, backend, options)
    policy = trust_policy(trusted_keys)
    if policy and options.get("cache_dir"):
        raise SignatureError(f"{path}: option cache_dir: compiled models in the OpenVINO cache are not covered "
                             f"by the signature; drop it under a trust policy")
    report = enforce(precheck(path, policy) if verify else check_trust(path, policy, VerifyReport(str(path))))
    if not available(entry.requires):
        raise MissingDependencyError(
            f"{entry.name} backend needs {entry.requires}; install it with: "
            f"pip install \"cmunext-edge[{entry.extra}]\"")
    try:
        loaded = entry.load_class()(path, device=device, strict_device=strict_device, **options).load()
    except MetadataError as exc:          # verified load refuses it, naming the file
        if not verify:
            raise
        raise IntegrityError(damaged_metadata(report, exc).message()) from None
    loaded.signature = report.signature
    channels = loaded.input_shape[1]
    if isinstance(channels, int) and channels != loaded.spec.in_channels:
        loaded.close()
        raise BackendError(f"{path}: the network takes {channels} input channel(s) but its preprocessing "
                           f"contract gives {loaded.spec.in_channels}; store the matching contract with the "
                           f"weights (weights.save_safetensors(..., spec=PreprocessSpec(in_channels="
                           f"{channels}, mean=..., std=...))) to use it")
    if verify:
        try:
            loaded.verification = enforce(verify_loaded(loaded, report))
        except BaseException:
            loaded.close()
            raise
    return loaded


def verify_artifact(path: str | Path, device: str = "cpu", trusted_keys=None, **options) -> VerifyReport:
    """Check an artifact's files (and signature, under a trust policy) and run its self-test on
    `device`; report, never raise for a mismatch (a missing runtime or unloadable file still raises
    its own error)."""
    report = precheck(path, trust_policy(trusted_keys))
    if report.problems:
        return report
    try:
        backend = open_backend(path, device=device, verify=False, trusted_keys=trusted_keys, **options)
    except MetadataError as exc:
        return damaged_metadata(report, exc)
    with backend:
        return verify_loaded(backend, report)


def damaged_metadata(report: VerifyReport, exc: MetadataError) -> VerifyReport:
    """`report` refusing an artifact whose embedded metadata cannot be decoded."""
    report.problems.append(f"{exc}: the file was modified or damaged")
    return report


def list_devices() -> dict[str, list[str]]:
    """What this machine offers to each backend (empty list: library missing or no device)."""
    out = {}
    for e in BACKENDS:
        out[e.name] = e.load_class().list_devices() if available(e.requires) else []
    return out
