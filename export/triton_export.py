"""Triton model repository from an exported artifact (ONNX, OpenVINO IR or TensorRT plan).

`cmunext-export --weights model.onnx --target triton --out repo` writes

    repo/<model>/config.pbtxt       platform/backend, max_batch_size, dynamic batching, the
                                    input/output names, dims and dtypes read from the artifact,
                                    and every cmunext_edge.* metadata entry (preprocessing
                                    contract, threshold, precision, self-test) as `parameters`
    repo/<model>/1/model.<ext>      the artifact's file(s), byte-identical (sha256 checked)

and records them in repo/manifest.json (Triton only scans sub-folders of the repository). The
model folder is staged beside it and swapped in at once. A dynamic-batch artifact gets
`max_batch_size` (ExportOptions.batch when > 1, else 8; a TensorRT profile's max caps it) and
a dynamic batcher; a static one gets max_batch_size 0 and its full shape (Triton cannot batch
it: export with --dynamic). Where the artifact's backend runs here, the copy's embedded
self-test is run before anything is published.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.artifacts.kinds import kind_named, kind_of
from cmunext_edge.artifacts.meta import PREFIX, check_selftest, parse_metadata
from cmunext_edge.fileio import require_file, sha256_file, loads_json
from cmunext_edge.export.manifest import file_entries, write_manifest
from cmunext_edge.export.options import ExportResult, ExportUsageError

DEFAULT_MAX_BATCH = 8
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "f32": "TYPE_FP32", "f16": "TYPE_FP16",
           "float": "TYPE_FP32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8"}


@dataclass
class Tensor:
    name: str
    dtype: str                  # Triton TYPE_*
    shape: tuple                # full shape, None for a dynamic dimension


@dataclass
class ArtifactIO:
    kind: str                   # onnx, openvino, tensorrt
    files: list[Path]           # source files, entry first
    inputs: list[Tensor]
    outputs: list[Tensor]
    metadata: dict              # flat cmunext_edge.* entries
    max_batch: int | None = None   # TensorRT profile max


def _onnx_io(path: Path) -> ArtifactIO:
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)

    def tensors(values):
        out = []
        for v in values:
            tt = v.type.tensor_type
            dtype = _DTYPES[onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name]
            out.append(Tensor(v.name, dtype, tuple(d.dim_value if d.HasField("dim_value") else None
                                                   for d in tt.shape.dim)))
        return out
    meta = {p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    return ArtifactIO("onnx", [path], tensors(model.graph.input), tensors(model.graph.output), meta)


def _openvino_io(path: Path) -> ArtifactIO:
    ov = require("openvino")
    from cmunext_edge.runtime.openvino_backend import read_rt_metadata
    model = ov.Core().read_model(str(path))

    def tensors(ports):
        return [Tensor(p.get_any_name(), _DTYPES[p.get_element_type().get_type_name()],
                       tuple(d.get_length() if d.is_static else None for d in p.get_partial_shape()))
                for p in ports]
    return ArtifactIO("openvino", kind_named("openvino").files(path), tensors(model.inputs),
                      tensors(model.outputs), read_rt_metadata(model))


def _tensorrt_io(path: Path) -> ArtifactIO:
    """From the sidecar (reading the plan itself needs TensorRT and its GPU): the engine is built
    from the toolkit's ONNX, so its tensors are that graph's input/logits, FP32 at the boundary."""
    from cmunext_edge.runtime.tensorrt_backend import sidecar_path
    from cmunext_edge.export.onnx_export import INPUT, OUTPUT
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{path}: missing sidecar {side.name}; export engines with cmunext-export")
    data = loads_json(side.read_text())
    shapes, meta = data["shapes"], data.get("metadata", {})
    shape = tuple(shapes["static"]) if "static" in shapes else (None, *shapes["max"][1:])
    classes = int(meta.get(PREFIX + "num_classes", 1))
    return ArtifactIO("tensorrt", [path], [Tensor(INPUT, "TYPE_FP32", shape)],
                      [Tensor(OUTPUT, "TYPE_FP32", (shape[0], classes, *shape[2:]))], meta,
                      None if "static" in shapes else int(shapes["max"][0]))


# artifact kind (artifacts/kinds.py) -> (reader, Triton platform/backend line, file names in the version folder)
KINDS = {
    "onnx": (_onnx_io, 'platform: "onnxruntime_onnx"', ["model.onnx"]),
    "openvino": (_openvino_io, 'backend: "openvino"', ["model.xml", "model.bin"]),
    "tensorrt": (_tensorrt_io, 'platform: "tensorrt_plan"', ["model.plan"]),
}


def read_artifact(path) -> ArtifactIO:
    path = Path(path)
    kind = kind_of(path)
    if kind is None or kind.name not in KINDS:
        raise ExportUsageError(f"target triton packages an exported artifact (.onnx, .xml, .engine), "
                               f"not {path.name}; export it first, e.g. cmunext-export --weights "
                               f"{path.name} --target onnx --dynamic")
    require_file(path)
    from cmunext_edge.artifacts.kinds import companion_problem
    problem = companion_problem(path)
    if problem:        # OpenVINO would say only "Exception from src/inference/src/cpp/core.cpp"
        raise FileNotFoundError(f"{problem} (an artifact's files travel together)")
    return KINDS[kind.name][0](path)


def _q(text: str) -> str:
    return json.dumps(text)      # a protobuf text-format string literal (JSON escaping is compatible)


def _tensor_block(tensors, batched: bool) -> str:
    items = []
    for t in tensors:
        dims = [(-1 if d is None else d) for d in (t.shape[1:] if batched else t.shape)]
        items.append(f"  {{\n    name: {_q(t.name)}\n    data_type: {t.dtype}\n    dims: {dims}\n  }}")
    return "[\n" + ",\n".join(items) + "\n]"


def config_text(name: str, io: ArtifactIO, max_batch: int, kind_gpu: bool) -> str:
    """config.pbtxt for the artifact (max_batch 0: no batching, full shapes)."""
    platform = KINDS[io.kind][1]
    batched = max_batch > 0
    lines = [f"name: {_q(name)}", platform, f"max_batch_size: {max_batch}",
             f"input {_tensor_block(io.inputs, batched)}", f"output {_tensor_block(io.outputs, batched)}"]
    if batched:
        preferred = [b for b in (2, 4, 8, 16) if b <= max_batch]
        lines.append("dynamic_batching {\n" + (f"  preferred_batch_size: {preferred}\n" if preferred else "")
                     + "  max_queue_delay_microseconds: 2000\n}")
    lines.append(f"instance_group [\n  {{\n    count: 1\n    kind: {'KIND_GPU' if kind_gpu else 'KIND_CPU'}\n  }}\n]")
    for key in sorted(io.metadata):
        lines.append(f"parameters {{\n  key: {_q(key)}\n  value: {{ string_value: {_q(str(io.metadata[key]))} }}\n}}")
    return "\n".join(lines) + "\n"


def _max_batch(io: ArtifactIO, options) -> int:
    if io.inputs[0].shape[0] is not None:
        return 0
    wanted = options.batch if options.batch > 1 else DEFAULT_MAX_BATCH
    return min(wanted, io.max_batch) if io.max_batch else wanted


def _model_name(artifact: Path, options) -> str:
    name = options.name or artifact.stem
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name.startswith("."):
        raise ExportUsageError(f"Triton model name {name!r}: use letters, digits, '_', '-' and '.'")
    return name


def _self_test(entry: Path, io: ArtifactIO, device: str) -> dict | None:
    """Run the copied artifact's embedded self-test where its backend runs here (not TensorRT off-GPU)."""
    from cmunext_edge._deps import available
    from cmunext_edge.runtime.registry import entry_for, open_backend
    be = entry_for(kind_named(io.kind).backend)
    if io.kind == "tensorrt" or not available(be.requires):
        return None
    meta = parse_metadata(io.metadata)
    with open_backend(entry, device=device) as backend:
        check = check_selftest(meta.get("selftest"), backend.spec, backend.infer)
        check.device, check.precision = backend.device, backend.precision
    if check.status == "fail":
        raise RuntimeError(f"{entry}: the packaged model fails its self-test: {check.message}")
    return check.as_dict()


def _stage(repo: Path, name: str, io: ArtifactIO, options) -> tuple[Path, list[Path]]:
    """Write the model folder into a staging folder inside `repo` -> (staging, files)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=repo))
    version = staging / "1"
    version.mkdir()
    files = []
    for src, dest_name in zip(io.files, KINDS[io.kind][2]):
        dest = version / dest_name
        shutil.copyfile(src, dest)
        if sha256_file(dest) != sha256_file(src):
            raise OSError(f"copy of {src} to {dest} differs from its source")
        files.append(dest)
    gpu = io.kind == "tensorrt" or str(options.device or "cpu").lower() in ("cuda", "gpu")
    config = staging / "config.pbtxt"
    config.write_text(config_text(name, io, _max_batch(io, options), gpu))
    return staging, files + [config]


def _swap_in(staging: Path, final: Path) -> None:
    """Replace `final` (if any) by `staging` with two renames; the old one is removed after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def package(artifact, options, log=print):
    """Write the Triton model repository entry of `artifact` -> ExportResult."""
    artifact = Path(artifact)
    io = read_artifact(artifact)
    if options.verify:          # the user's files checked as a load checks them, before anything is written
        from cmunext_edge.artifacts.integrity import enforce, precheck
        enforce(precheck(artifact))
    meta = parse_metadata(io.metadata)
    have = meta.get("precision", "fp32")
    if options.precision is not None and options.precision.value != have:
        raise ExportUsageError(f"target triton packages the artifact as it is; {artifact.name} is "
                               f"{have}, not {options.precision.value} (export that precision first)")
    name = _model_name(artifact, options)
    repo = Path(options.out)
    made = not repo.exists()
    repo.mkdir(parents=True, exist_ok=True)
    try:
        staging, files = _stage(repo, name, io, options)
        try:
            selftest = _self_test(files[0], io, options.device or "cpu") if options.verify else None
            log(f"self-test of the packaged model: {selftest['message'] if selftest else 'not run here'}")
            _swap_in(staging, repo / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if made and not any(repo.iterdir()):       # a refused packaging leaves no empty --out behind
            repo.rmdir()
        raise
    files = [repo / name / f.relative_to(staging) for f in files]
    entry = {"target": "triton", "precision": have, "source": {"path": str(artifact),
             "sha256": sha256_file(artifact), "kind": io.kind}, "files": file_entries(files),
             "selftest": selftest, "max_batch_size": _max_batch(io, options)}
    manifest = write_manifest(repo, name, entry)
    from cmunext_edge.core.precision import Precision
    return ExportResult(files[0], files, manifest, "triton", Precision(have), None, selftest or {},
                        [f"tritonserver --model-repository={repo.resolve()}",
                         f"curl localhost:8000/v2/models/{name}/config"])
