"""cmunext-predict: segment an image, a folder, an official-layout dataset, or video.

Writes <out>/masks/<name>.png (0/255; <name>_class<k>.png per class for multi-class models)
and <out>/overlays/<name>.png. Where ground-truth masks exist (official layout: images/,
masks/0/), also <out>/scores.csv with per-image official Dice/IoU (256x256 network-size masks,
as the CMUNeXt code computes them) and at original resolution, and prints the means.
Several classes (per-class mask folders masks/0/ ... masks/<N-1>/, or label images labels/): the
overlay tints and outlines each class in its own colour (class 0 orange, 1 sky blue, 2 bluish
green, ...; the key in <out>/legend.png), and scores.csv, the printed lines and --summary-json add
per-class Dice/IoU (dice_class<k> ...; per_class_dice ...).
An exported artifact is verified before use (files against manifest.json or its embedded
hash, then its self-test; --no-verify-load skips this); with --trusted-key (or
$CMUNEXT_TRUSTED_KEYS) it must also be signed by a trusted key, checked before it is read
(docs/signing.md). Unreadable or oversized images (--max-pixels) are skipped and reported, and
so is every file of the folder that is not read (a video beside images, GIF, other
files); a full disk stops the job cleanly.
Exit codes: 0 all done; 1 done but some inputs skipped or the job stopped; 2 nothing done
(usage, output folder, weights, artifact, or no input could be segmented); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM):
both finish the images being written and count exactly the images whose outputs are on disk.

DICOM: .dcm/.dicom files (or files with the DICOM preamble), alone or mixed with other images,
are converted as docs/dicom.md describes (needs the [dicom] extra); a multi-frame object (cine loop)
gives one mask per frame (<name>_frame0001.png, ...). Each DICOM instance also gets a DICOM
Segmentation, <out>/seg/<name>.seg.dcm (--dicom-seg series: one per series; off: none), binary or
fractional (--seg-type), one segment per class (--seg-codes; default: lesion).

Video: a video file, a folder of videos, a camera index (0) or a stream URL (rtsp://, http://)
is read through OpenCV; per video, <out>/overlay.mp4 and <out>/masks/NNNNNN.png (or
--mask-video: <out>/mask.mp4) with decoding, inference and writing overlapped, and
<out>/video_summary.json with every frame accounted for (a folder: one sub-folder per video).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from cmunext_edge._deps import available
from cmunext_edge.artifacts.info import export_verification_of
from cmunext_edge.data.discovery import discover, subfolder_notes, truth_notes, unread_files, unread_pages
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS
from cmunext_edge.predict.job import report_job
from cmunext_edge.predict.heap import bound_heap
from cmunext_edge.progress import Progress
from cmunext_edge.cli.common import (batch_size, cli_main, device_name, fail, interrupted_code, make_parser, positive_int, size_limit,
                                     signature_note, thread_count, trust_preflight)
from cmunext_edge.cli.predict_dicom import dicom_segs, fractional, seg_options
from cmunext_edge.cli.preflight import SUB_FOLDERS, check_model, check_outputs, input_files

EXAMPLE = """examples:
  cmunext-predict cmunext_edge/samples/busi --out out/predict            # shipped model
  cmunext-predict scan.png --weights my_cmunext.pth --out out/one
  cmunext-predict your_dataset/ --split your_val_names.txt --weights model.onnx --out out/val \\
      --summary-json out/val/summary.json
  cmunext-predict clip.mp4 --weights exports/cmunext-s-busi_fp32.xml --out out/clip
  cmunext-predict 0 --max-frames 300 --out out/camera          # camera 0, 300 frames"""
PROG = "cmunext-predict"


def build_parser():
    p = make_parser(PROG, __doc__, EXAMPLE)
    p.add_argument("source", help="image or DICOM file, folder of images, or official-layout dataset")
    p.add_argument("--weights", default=None,
                   help="checkpoint or exported artifact, or a shipped model name (default: the shipped model)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", help="file of image names (no extension) to use from a dataset")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, or an OpenVINO device (GPU, NPU, AUTO)")
    p.add_argument("--strict-device", action="store_true", help="fail instead of falling back to another device")
    p.add_argument("--batch-size", type=batch_size, default=8, help="images per inference call")
    p.add_argument("--workers", type=thread_count, default=1,
                   help="parallel inference requests, one model instance each (default 1)")
    p.add_argument("--no-overlay", action="store_true", help="write masks only")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: Ray Data actors, resumable (needs the [ray] extra; see docs/scale-out.md)")
    p.add_argument("--address", help="with --engine ray: join this Ray cluster (default: start a local one)")
    p.add_argument("--actors", type=thread_count, default=1, help="with --engine ray: model actors (default 1)")
    p.add_argument("--summary-json", type=Path, help="write {n_images, mean_dice, mean_iou, skipped} here")
    p.add_argument("--max-pixels", type=size_limit, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image decoded, in pixels, read from the file header before decoding "
                        f"(default {DEFAULT_MAX_PIXELS:,}); larger ones are skipped and reported")
    p.add_argument("--no-verify-load", dest="verify", action="store_false",
                   help="do not check the artifact's sha256 and self-test before use (not recommended)")
    p.add_argument("--trusted-key", action="append", metavar="PUB.pem",
                   help="trust policy: run the model only if it is signed by this public key (repeat for "
                        "several; default $CMUNEXT_TRUSTED_KEYS); refused otherwise, exit 2")
    p.add_argument("--quiet", action="store_true", help="no per-image lines and no progress bar")
    d = p.add_argument_group("DICOM inputs (the [dicom] extra)")
    d.add_argument("--dicom-seg", choices=["instance", "series", "off"], default="instance",
                   help="DICOM SEG output: one per source instance (default), one per series of "
                        "single-frame instances, or none")
    d.add_argument("--seg-type", choices=["binary", "fractional"], default="binary",
                   help="binary: the thresholded masks; fractional: the probabilities (8 bit; also "
                        "written as <out>/probabilities/*.png)")
    d.add_argument("--seg-codes", type=Path,
                   help="JSON list, one entry per class: {label, category: [code value, scheme, meaning], "
                        "type: [...]} (default: lesion, SNOMED CT)")
    v = p.add_argument_group("video, camera and streams")
    v.add_argument("--mask-video", action="store_true",
                   help="write <out>/mask.mp4 (mask_class<k>.mp4 per class) instead of per-frame PNG masks")
    v.add_argument("--max-frames", type=positive_int, help="stop after N frames (a camera or stream runs until it ends)")
    return p


@cli_main(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    bound_heap()                  # peak memory independent of thread interleaving (predict/heap.py)
    from cmunext_edge.predict.overlay import describe_colors
    from cmunext_edge.predict.job import run_job, unique_names
    from cmunext_edge.data.groundtruth import classes_check, classes_note
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    from cmunext_edge.predict.video import is_video_source, videos_in
    if is_video_source(args.source) or (Path(args.source).is_dir() and videos_in(args.source)
                                        and not discover(args.source)):
        from cmunext_edge.cli.predict_video import run_video
        return run_video(args)
    samples = unique_names(discover(args.source, args.split, args.max_pixels))   # errors: one line, exit 2
    args.seg_options = seg_options(args)
    unread = unread_files(args.source, args.split) + unread_pages(samples)
    subfolders = subfolder_notes(args.source, args.split)
    if not samples:
        return fail(PROG, f"{args.source}: no images found" + (
            f"; {len(unread)} file(s) not read, e.g. {unread[0]['error']}" if unread else "")
            + (f"; {subfolders[0]}" if subfolders else ""))
    problem = check_outputs(args.out, args.summary_json, input_files(args.weights, args.split, samples),
                            sub_folders=SUB_FOLDERS)
    if problem:
        return fail(PROG, problem)
    for note in ([] if args.split else truth_notes(args.source, samples)) + subfolders:
        print(f"note: {note}")
    if args.engine == "ray":
        from cmunext_edge.cli.predict_ray import predict_with_ray
        problem, note = trust_preflight(args.weights, args.trusted_key)
        if problem:
            return fail(PROG, problem)
        model = check_model(args.weights, args.device, args.verify)   # before Ray starts: exit 2, one line
        if not available("ray"):                                 # before anything is written
            return fail(PROG, 'ray is not installed (--engine ray); install it with: pip install "cmunext-edge[ray]"')
        for line in load_notes(args.verify, export_verification_of(model)):
            print(f"note: {line}")
        print(note)
        return predict_with_ray(args, samples, unread)
    try:
        segmenters = [EdgeSegmenter(args.weights, device=args.device, strict_device=args.strict_device,
                                    verify=args.verify, max_pixels=args.max_pixels, trusted_keys=args.trusted_key)
                      for _ in range(args.workers)]
    except Exception as exc:  # every load failure is one clear line, not a traceback
        return fail(PROG, f"cannot load model: {exc}")
    classes = segmenters[0].backend.num_classes
    problem = classes_check(samples, classes, args.source, unusable=None)   # an unreadable label image
    if problem:                                                            # is skipped and reported
        return fail(PROG, problem)
    fewer = classes_note(samples, classes, args.source)
    if fewer:
        print(f"note: {fewer}")
    info = segmenters[0].describe()
    print(f"model: {info['artifact']} ({info['backend']}, {info['device']}, {info['precision']})")
    if classes >= 2 and not args.no_overlay:
        print(f"overlay colours: {describe_colors(classes)} (key in {Path(args.out) / 'legend.png'})")
    if info.get("fallback"):
        print(f"note: {info['fallback']}")
    for line in load_notes(args.verify, info.get("export_verification")):
        print(f"note: {line}")
    print(signature_note(info))
    started = time.perf_counter()
    with Progress(len(samples), "segmenting", enabled=not args.quiet) as bar:
        result = run_job(segmenters, samples, Path(args.out), args.batch_size, not args.no_overlay, bar,
                         write_probabilities=fractional(args))
    dicom_segs(args, samples, result, info["precision"])
    return finish(result, args, time.perf_counter() - started, unread)


def load_notes(verify: bool, export_check: str | None) -> list[str]:
    """What a user must know about the model before its masks, the same for both engines: load
    checks turned off, and an export that was not verified (`export_check`: artifacts.info
    export_verification_of)."""
    notes = [] if verify else ["--no-verify-load: the artifact's integrity and self-test were not checked"]
    if export_check and not export_check.startswith("verified"):
        notes.append(f"export verification: {export_check}")
    return notes


def finish(result, args, elapsed: float, unread=(), prog: str = PROG) -> int:
    """The job's report (predict.job.report_job) -> exit code; 130/143 when Ctrl-C/SIGTERM stopped it."""
    code = report_job(result, args.out, args.summary_json, elapsed, quiet=args.quiet, prog=prog, unread=unread)
    interrupted = getattr(result, "interrupted", None)
    return interrupted_code(interrupted) if interrupted is not None else code


if __name__ == "__main__":
    sys.exit(main())
