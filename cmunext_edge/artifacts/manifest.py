"""manifest.json beside exported artifacts: the one reader. cmunext-export writes it
(export/manifest.py); verified load, cmunext-info, bundles, the bench report and the auto export
read an artifact's entry (its files' sha256, precision, verification) through `manifest_entry`.

`read_manifest` is strict (a damaged manifest raises ManifestError: it is what verified load
checks artifacts against, so an export must not overwrite it); `manifest_lookup` is lenient (a
missing or damaged manifest, or an artifact it does not list, gives no entry: the embedded content
hash can still vouch for the files) but says why a damaged one is damaged, so that no reader
reports it as a missing entry (`no_entry_reason`); `manifest_entry` is its entry alone."""
from __future__ import annotations

from pathlib import Path

from cmunext_edge.fileio import SPECIAL_FILE, loads_json, not_a_file

NAME = "manifest.json"
FORMAT = "cmunext-edge export manifest"


class ManifestError(ValueError):
    """A manifest.json that cannot be read as one."""


def manifest_path(folder: str | Path) -> Path:
    return Path(folder) / NAME


def read_manifest(folder: str | Path) -> dict:
    """folder/manifest.json as a dict (a new, empty one if absent); ManifestError if it is damaged."""
    path = manifest_path(folder)
    if not path.exists() and not path.is_symlink():     # a link to nothing is damaged, not absent
        return {"format": FORMAT, "version": 1, "artifacts": {}}
    if not_a_file(path) == SPECIAL_FILE:              # a FIFO would block the read
        raise ManifestError(f"{path} is damaged: {SPECIAL_FILE}")
    try:
        data = loads_json(path.read_text(encoding="utf-8"))    # whatever the locale
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        problem = f"not readable JSON ({exc})"
    else:
        problem = _shape_problem(data)
        if problem is None:
            return data
    raise ManifestError(f"{path} is damaged: {problem}")


def _shape_problem(data) -> str | None:
    """Why parsed JSON is not a manifest (None: it is one): 'artifacts' maps names to entries, and
    each entry's "files" is a list (what verified load checks the files against)."""
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
        return "not a manifest ('artifacts' must map artifact names to entries)"
    for name, entry in data["artifacts"].items():
        if not isinstance(entry, dict):
            return f"its entry for {name!r} is not an object"
        if not isinstance(entry.get("files"), list):
            return f"its entry for {name!r} has no list of files ('files')"
    return None


def manifest_lookup(artifact: str | Path) -> tuple[dict | None, str | None]:
    """(entry, problem) of `artifact` in the manifest.json beside it: (its entry, None); (None,
    None) without a manifest or an entry for it; (None, the one line saying why the manifest is
    damaged) for a damaged one, which holds no entry a reader may use."""
    artifact = Path(artifact)
    try:
        return read_manifest(artifact.parent)["artifacts"].get(artifact.name), None
    except ManifestError as exc:
        return None, str(exc)


def manifest_entry(artifact: str | Path) -> dict | None:
    """The entry of `artifact` in the manifest.json beside it, or None (no manifest, a damaged one,
    or one that does not list it)."""
    return manifest_lookup(artifact)[0]


def no_entry_reason(problem: str | None) -> str:
    """Why an artifact has no manifest entry to check: the manifest's damage (from manifest_lookup),
    else that none is beside it."""
    return problem or "no manifest.json entry beside it"


def calibration_files(artifact: str | Path) -> list[str]:
    """The images that calibrated `artifact` (INT8), as its manifest entry records them; [] if none."""
    return ((manifest_entry(artifact) or {}).get("calibration") or {}).get("files") or []


def entry_hashes(entry: dict) -> tuple[dict[str, str], list[str]]:
    """An entry's files as {name: sha256}, and a problem line for each malformed file item."""
    expected, problems = {}, []
    for item in entry.get("files") or []:
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name and name not in (".", "..") and "/" not in name and "\\" not in name:
            expected[name] = str(item.get("sha256"))
        elif isinstance(name, str) and name:   # an artifact's files lie beside it: never read another path
            problems.append(f"manifest.json lists {name!r}, which is not a file beside the artifact")
        else:
            problems.append(f"manifest.json entry has a malformed file item {item!r}")
    return expected, problems


def unlisted_files(entry: dict, names) -> list[str]:
    """The rule that an entry lists every file of its artifact: the names in `names` it leaves out
    (an empty or partial "files" list cannot vouch for an artifact, it is never a pass)."""
    listed, _ = entry_hashes(entry)
    return [n for n in names if n not in listed]
