"""After a batch job (local or Ray): the DICOM SEG of every DICOM input, built from the masks on disk.

The job writes one PNG mask per frame (masks/<name>.png, or <name>_class<k>.png); for a fractional SEG
also probabilities/<name>.png (round(p * 255): exactly the 8-bit values a FRACTIONAL SEG stores).
Here the frames of each source instance (or series) are gathered in frame order and written as
<out>/seg/<name>.seg.dcm. A SEG is written only when every one of its frames has a mask; otherwise
that source is reported (its PNG masks stay), so every frame is accounted for.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cmunext_edge.data.discovery import Sample, sample_name
from cmunext_edge.fileio import atomic_path
from cmunext_edge.predict.dicom_seg import Algorithm, SegOptions, build_seg


def _dicom_sources(samples: list[Sample]) -> dict[Path, list[Sample]]:
    """DICOM source file -> its frame samples in frame order (files refused at discovery excluded)."""
    from cmunext_edge.core.dicom import is_dicom_file
    by_path: dict[Path, list[Sample]] = {}
    for s in samples:
        if s.frame is not None and is_dicom_file(s.image):
            by_path.setdefault(s.image, []).append(s)
    return {p: sorted(ss, key=lambda s: s.frame) for p, ss in by_path.items()}


def _groups(sources: dict[Path, list[Sample]], per: str) -> list[tuple[str, list[tuple[Path, list[Sample]]]]]:
    """(output name, [(source file, frames)]) per SEG: one per instance, or one per series of
    single-frame instances (multi-frame instances keep their own SEG). A series whose images differ
    in size gets one SEG per size (series-<uid>, series-<uid>-2, ...): a SEG's frames share one size."""
    from cmunext_edge.core.dicom import read_header
    groups: dict[tuple, tuple[str, list]] = {}
    for path, frames in sources.items():
        key, base = ("instance", path), sample_name(path)     # one SEG per file, whatever its stem
        if per == "series" and len(frames) == 1:
            header = read_header(path)
            uid = header.get("SeriesInstanceUID", path.stem)
            key, base = ("series", str(uid), int(header.Rows), int(header.Columns)), f"series-{uid}"
        groups.setdefault(key, (base, []))[1].append((path, frames))
    if per == "series":
        for _, members in groups.values():
            members.sort(key=lambda m: (int(read_header(m[0]).get("InstanceNumber", 0) or 0), str(m[0])))
    names, out = set(), []
    for base, members in groups.values():
        name, k = base, 2
        while name.lower() in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name.lower())
        out.append((name, members))
    return out


def _planes(out_dir: Path, name: str, kind: str, classes: int) -> np.ndarray:
    """HxWxC mask (bool) or probability (float in [0, 1]) of one frame, read back from the PNGs the job
    wrote for it (job.mask_file_names of its model's classes: another model's files that a previous
    run left in the folder, name.png beside name_class<k>.png, are not taken for them)."""
    from cmunext_edge.predict.job import mask_file_names
    folder = out_dir / ("probabilities" if kind == "fractional" else "masks")
    planes = [cv2.imdecode(np.fromfile(str(folder / f), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
              for f in mask_file_names(name, classes)]
    stack = np.stack(planes, axis=-1)
    return stack.astype(np.float32) / 255.0 if kind == "fractional" else stack > 127


def write_dicom_segs(rows: list[dict], samples: list[Sample], out_dir, options: SegOptions,
                     algorithm: Algorithm, reported=()) -> tuple[list[Path], list[dict]]:
    """One SEG per instance/series of the DICOM samples -> (written files, problems as skipped rows).
    A source none of whose frames has a mask, all of them in `reported` (names the job already
    reported), is not reported again; one with some frames missing is (its SEG is not written)."""
    from cmunext_edge.core.dicom import read_header
    out_dir = Path(out_dir)
    from cmunext_edge.predict.scores import row_classes
    classes = {r["name"]: row_classes(r) for r in rows}
    written, problems = [], []
    for name, members in _groups(_dicom_sources(samples), options.per):
        frames = [s for _, ss in members for s in ss]
        missing = [s.name for s in frames if s.name not in classes]
        where = str(members[0][0])
        if missing and len(missing) == len(frames) and set(missing) <= set(reported) and len(members) == 1:
            continue
        if missing:
            problems.append({"path": where, "name": f"{name}.seg.dcm", "error":
                             f"{where}: DICOM SEG not written: {len(missing)} of {len(frames)} frame(s) have no "
                             f"mask (e.g. {missing[0]}); the masks of the others are in {out_dir / 'masks'}"})
            continue
        path = out_dir / "seg" / f"{name}.seg.dcm"
        try:
            masks = np.stack([_planes(out_dir, s.name, options.kind, classes[s.name]) for s in frames])
            seg = build_seg([read_header(p) for p, _ in members], masks, options, algorithm)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                seg.save_as(tmp)
        except Exception as exc:       # highdicom refuses, highdicom missing, a mask unreadable: reported
            problems.append({"path": where, "name": f"{name}.seg.dcm",
                             "error": f"{where}: DICOM SEG not written ({type(exc).__name__}: "
                                      f"{(str(exc).splitlines() or [''])[0][:200]})"})
        else:
            written.append(path)
    return written, problems
