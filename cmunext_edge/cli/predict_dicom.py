"""The DICOM side of `cmunext-predict` (local and --engine ray): the --dicom-seg/--seg-type/--seg-codes
choices and the DICOM SEGs of a finished job (docs/dicom.md). Its own module so that cli/predict.py
and cli/predict_ray.py both use it without importing each other."""
from __future__ import annotations

from pathlib import Path


def seg_options(args):
    """The DICOM SEG choices of the command line (None: --dicom-seg off)."""
    if args.dicom_seg == "off":
        return None
    from cmunext_edge.predict.dicom_seg import SegOptions, read_codes
    codes = read_codes(args.seg_codes) if args.seg_codes else ()
    return SegOptions(per=args.dicom_seg, kind=args.seg_type, codes=codes)


def fractional(args) -> bool:
    return args.seg_options is not None and args.seg_options.kind == "fractional"


def dicom_segs(args, samples, result, precision: str | None = None) -> None:
    """Write the DICOM SEGs of the DICOM inputs; problems join the job's skipped list."""
    if args.seg_options is None or not any(s.frame is not None for s in samples):
        return
    from cmunext_edge.predict.dicom_outputs import write_dicom_segs
    from cmunext_edge.predict.scores import row_classes
    from cmunext_edge.runtime.algorithm import algorithm_of
    written, problems = write_dicom_segs(result.rows, samples, Path(args.out), args.seg_options,
                                         algorithm_of(args.weights, precision),
                                         {s.get("name") for s in result.skipped})
    result.skipped.extend(problems)
    codes = len(args.seg_options.codes)
    classes = row_classes(result.rows[0]) if result.rows else codes
    if codes > classes:
        print(f"note: --seg-codes gives {codes} segment codes, the model has {classes} class(es): "
              f"the last {codes - classes} are not used")
    if written and not args.quiet:
        print(f"{len(written)} DICOM SEG file(s) in {Path(args.out) / 'seg'}")
