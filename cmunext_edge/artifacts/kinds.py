"""The artifact kinds: one table from file suffix to what the file is, which runtime backend loads
it, which companion files belong to it, how its files are hashed and where its metadata lives.

Every place that needs one of these facts (the runtime registry, verified load, device bundles,
cmunext-info, the Triton packager, the bench report, export verification) reads it here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmunext_edge.fileio import not_a_file
from cmunext_edge.resources import CHECKPOINT_SUFFIXES

# how the files of a kind are hashed: an exported artifact by manifest.json beside it, else by the
# content hash embedded at export; a checkpoint is read by the safe loader and carries no hash
HASHED_BY_MANIFEST_OR_EMBEDDED = "manifest.json entry, else the embedded content_sha256"
NOT_HASHED = "none (a checkpoint: read by the safe loader)"


@dataclass(frozen=True)
class ArtifactKind:
    name: str                      # short name ("onnx", "openvino", "tensorrt", "checkpoint")
    label: str                     # what cmunext-info calls it
    suffixes: tuple[str, ...]      # entry-file suffixes, lower case
    backend: str                   # runtime registry name (runtime/registry.py BACKENDS)
    companions: tuple[str, ...]    # companion file names: "{stem}" / "{name}" of the entry file
    hashing: str                   # how its files are checked before they run
    metadata: str                  # where the cmunext-edge metadata lives

    @property
    def exported(self) -> bool:
        """An exported artifact (hash and self-test checked), not a plain checkpoint."""
        return self.hashing != NOT_HASHED

    def companion_files(self, entry: str | Path) -> list[Path]:
        entry = Path(entry)
        return [entry.with_name(c.format(stem=entry.stem, name=entry.name)) for c in self.companions]

    def files(self, entry: str | Path) -> list[Path]:
        """The artifact's files, entry file first."""
        return [Path(entry), *self.companion_files(entry)]


KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind("onnx", "ONNX", (".onnx",), "onnxruntime", (),
                 HASHED_BY_MANIFEST_OR_EMBEDDED, "ONNX metadata_props"),
    ArtifactKind("openvino", "OpenVINO IR", (".xml",), "openvino", ("{stem}.bin",),
                 HASHED_BY_MANIFEST_OR_EMBEDDED, "rt_info/model_info of the .xml"),
    ArtifactKind("tensorrt", "TensorRT plan", (".engine", ".plan"), "tensorrt", ("{name}.json",),
                 HASHED_BY_MANIFEST_OR_EMBEDDED, "the sidecar <engine>.json"),
    ArtifactKind("checkpoint", "PyTorch checkpoint", CHECKPOINT_SUFFIXES, "pytorch", (),
                 NOT_HASHED, "the safetensors header (none in a .pth)"),
)
_BY_SUFFIX = {s: k for k in KINDS for s in k.suffixes}
ARTIFACT_SUFFIXES = tuple(s for k in KINDS if k.exported for s in k.suffixes)
SUFFIXES = tuple(_BY_SUFFIX)


def kind_of(path: str | Path) -> ArtifactKind | None:
    """The kind of the file at `path` by its suffix, or None for a suffix no kind has."""
    return _BY_SUFFIX.get(Path(path).suffix.lower())


def kind_named(name: str) -> ArtifactKind:
    for k in KINDS:
        if k.name == name:
            return k
    raise KeyError(f"unknown artifact kind {name!r}; known: {', '.join(k.name for k in KINDS)}")


def is_checkpoint(path: str | Path) -> bool:
    return Path(path).suffix.lower() in CHECKPOINT_SUFFIXES


def artifact_files(path: str | Path) -> list[Path]:
    """The files of the artifact at `path` by its kind (entry file first); [path] for an unknown kind."""
    kind = kind_of(path)
    return kind.files(path) if kind else [Path(path)]


def companion_problem(path: str | Path) -> str | None:
    """Why the artifact at `path` cannot be read whole: the first of its companion files (an IR's
    .bin, a plan's sidecar .json) that is not a regular file beside it, named with what it is
    instead; None when all are there (or the kind has none)."""
    kind = kind_of(path)
    for f in kind.companion_files(path) if kind else []:
        if not f.is_file():
            return f"{path}: {f.name}, which the {kind.label} needs beside it, is {not_a_file(f) or 'missing'}"
    return None


def sidecar_entry(path: str | Path) -> Path:
    """The entry file a companion path names (m.engine.json -> m.engine); other paths unchanged."""
    path = Path(path)
    for kind in KINDS:
        for companion, suffix in ((c, s) for c in kind.companions if c.startswith("{name}") for s in kind.suffixes):
            tail = companion.format(name=suffix)
            if path.name.lower().endswith(tail) and len(path.name) > len(tail):
                return path.with_name(path.name[: -len(tail) + len(suffix)])
    return path
