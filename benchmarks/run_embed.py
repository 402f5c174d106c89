"""C++ EdgeSegmenter (embed/, issue 25) against cmunext-predict on the same artifacts and images:
end-to-end time per image, peak memory and what a device must install.

    .venv/bin/python benchmarks/run_embed.py [--rounds 5] [--work /tmp/embed_bench] [--tag DATE]

1. builds embed/ and installs a self-contained folder (program, libcmunext_edge, the OpenVINO
   runtime libraries a CPU needs) with `embed/build.sh --install`, and checks with ldd that it
   resolves nothing outside itself but the C/C++ system libraries;
2. exports the shipped model as FP32 OpenVINO IR and FP32 ONNX (cmunext-export);
3. creates the Python device environments, fresh: `pip install "REPO[openvino]"` (runs the .xml)
   and `pip install "REPO[onnxruntime]"` (runs the .onnx), and measures them with `du`;
4. runs, alternating, `cmunext_segment ART IMAGES --out ...` and, in the device environment,
   `cmunext-predict IMAGES --weights ART --out ... --no-overlay --quiet` on the 16 bundled
   images (a plain folder: no ground truth to score) and on 1 image, each under
   `/usr/bin/time -f "%e %M"` (wall seconds, peak resident KB). Per image end to end =
   (wall of 16 images - wall of 1 image) / 15: decode, verify-free steady state, inference and
   mask writing, without process start, model load and self-test (reported apart as the wall of
   1 image). Medians over the rounds;
5. checks the masks of both programs agree, and writes benchmarks/results/embed_<tag>.md/.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "cmunext_edge" / "samples" / "busi" / "images"
RESULTS = REPO / "benchmarks" / "results"
SYSTEM_LIB_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")


def run(cmd, check=True, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"run_embed: command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return r


def rel(path) -> str:
    """A path as written in the report: repo-relative, $WORK-relative, or as is."""
    p = Path(path)
    for base, name in ((REPO, ""), (WORK, "$WORK/")):
        try:
            return name + str(p.relative_to(base))
        except ValueError:
            pass
    return str(p)


def timed(cmd) -> tuple[float, int, float]:
    """(wall seconds, peak resident MB, CPU seconds user + system) of one command under GNU time."""
    r = run(["/usr/bin/time", "-f", "TIME %e %M %U %S", *cmd])
    m = re.search(r"TIME ([\d.]+) (\d+) ([\d.]+) ([\d.]+)", r.stderr)
    return float(m.group(1)), int(m.group(2)) // 1024, float(m.group(3)) + float(m.group(4))


def du_mb(path) -> int:
    return int(run(["du", "-sm", path]).stdout.split()[0])


def du_bytes(path) -> int:
    return int(run(["du", "-sb", path]).stdout.split()[0])


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_bf16") if f in flags]
    mem = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    cxx = run(["c++", "--version"]).stdout.splitlines()[0]
    return {"cpu_model": cpu, "cpus": os.cpu_count(), "isa": isa, "memory_mb": mem, "kernel": platform.release(),
            "python": platform.python_version(), "compiler": cxx}


def check_self_contained(dist: Path) -> list[str]:
    """ldd of the program and every library in dist/lib: what resolves outside dist and the system."""
    problems = []
    for f in [dist / "bin" / "cmunext_segment", *sorted((dist / "lib").glob("*.so*"))]:
        if f.is_symlink():
            continue
        out = run(["ldd", f], check=False, env={k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}).stdout
        for line in out.splitlines():
            if "not found" in line:
                problems.append(f"{f.name}: {line.strip()}")
            m = re.search(r"=> (/\S+)", line)
            if m and not m.group(1).startswith(str(dist)) and not m.group(1).startswith(SYSTEM_LIB_DIRS):
                problems.append(f"{f.name}: resolves {m.group(1)} outside the folder")
    return problems


def mask_agreement(a: Path, b: Path) -> tuple[float, int]:
    import cv2
    scores = []
    for f in sorted(b.glob("*.png")):
        x = cv2.imread(str(a / f.name), cv2.IMREAD_UNCHANGED) > 127
        y = cv2.imread(str(f), cv2.IMREAD_UNCHANGED) > 127
        inter, union = np.logical_and(x, y).sum(), np.logical_or(x, y).sum()
        iou = (inter + 1e-5) / (union + 1e-5)
        scores.append(2 * iou / (iou + 1))
    return float(np.mean(scores)), len(scores)


def device_venv(extra: str, force: bool) -> Path:
    venv = WORK / f"venv-{extra}"
    if force or not (venv / "bin" / "cmunext-predict").exists():
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", venv])
        run([venv / "bin" / "pip", "install", "-q", f"{REPO}[{extra}]"])
    return venv


def main(argv=None) -> int:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/cmunext_embed_bench"), help="scratch folder ($WORK)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tag", default=dt.date.today().isoformat())
    ap.add_argument("--reuse-venvs", action="store_true", help="keep device environments from an earlier run")
    ap.add_argument("--report-only", type=Path, metavar="JSON", help="rewrite the .md of an earlier run's JSON")
    args = ap.parse_args(argv)
    if args.report_only:
        record = json.loads(args.report_only.read_text())
        args.report_only.with_suffix(".md").write_text(report(record))
        return 0
    WORK = args.work.resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.time()
    commit = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = bool(run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"]).stdout.strip())

    # 1. build and install the self-contained C++ folder
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    exe = Path(run(["bash", REPO / "embed" / "build.sh", "--install", dist],
                   env={**os.environ, "PYTHON": sys.executable}).stdout.strip().splitlines()[-1])
    problems = check_self_contained(dist)
    if problems:
        raise SystemExit("run_embed: the installed folder is not self-contained:\n" + "\n".join(problems))
    files = {str(f.relative_to(dist)): f.stat().st_size for f in sorted(dist.rglob("*"))
             if f.is_file() and not f.is_symlink() and "include" not in f.parts}
    cpp_install = {"total_mb": round(sum(files.values()) / 2**20, 1), "files_mb": {k: round(v / 2**20, 2) for k, v in files.items()},
                   "onnx_frontend_mb": round(sum(v for k, v in files.items() if "onnx_frontend" in k) / 2**20, 1)}

    # 2. artifacts
    arts = {}
    for kind, args_ in (("ir", ["--target", "openvino", "--fp32"]), ("onnx", ["--target", "onnx", "--fp32"])):
        out = WORK / "artifacts" / kind
        shutil.rmtree(out, ignore_errors=True)
        run([sys.executable, "-m", "cmunext_edge.cli.export", "--weights", "cmunext-s-busi", *args_, "--name", "model",
             "--out", out])
        arts[kind] = out / ("model.xml" if kind == "ir" else "model.onnx")

    # 3. device environments
    venvs = {"ir": device_venv("openvino", not args.reuse_venvs), "onnx": device_venv("onnxruntime", not args.reuse_venvs)}
    venv_mb = {kind: du_mb(v) for kind, v in venvs.items()}

    # images: a plain folder (cmunext-predict scores a dataset with ground truth; this measures prediction)
    images = WORK / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir()
    for f in sorted(SAMPLES.glob("*.png")):
        shutil.copy(f, images / f.name)
    one = WORK / "one"
    shutil.rmtree(one, ignore_errors=True)
    one.mkdir()
    shutil.copy(sorted(images.glob("*.png"))[0], one)

    # 4. alternate the two programs, round after round
    def cpp_cmd(kind, src, out):
        return [exe, arts[kind], src, "--out", out, "--quiet"]

    def py_cmd(kind, src, out):
        return [venvs[kind] / "bin" / "cmunext-predict", src, "--weights", arts[kind], "--out", out, "--no-overlay", "--quiet"]

    samples = {(prog, kind, n): [] for prog in ("cpp", "python") for kind in arts for n in (16, 1)}
    for rnd in range(args.rounds):
        for kind in arts:
            for n, src in ((16, images), (1, one)):
                for prog, make in (("cpp", cpp_cmd), ("python", py_cmd)):
                    out = WORK / "out" / f"{prog}-{kind}-{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    samples[(prog, kind, n)].append(timed(make(kind, src, out)))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    load_after = os.getloadavg()

    rows = {}
    for kind in arts:
        agree, n_masks = mask_agreement(WORK / "out" / f"cpp-{kind}-16" / "masks", WORK / "out" / f"python-{kind}-16" / "masks")
        for prog in ("cpp", "python"):
            w16 = [s[0] for s in samples[(prog, kind, 16)]]
            w1 = [s[0] for s in samples[(prog, kind, 1)]]
            per_image = [(a - b) / 15 * 1000 for a, b in zip(w16, w1)]
            c16 = [s[2] for s in samples[(prog, kind, 16)]]
            c1 = [s[2] for s in samples[(prog, kind, 1)]]
            cpu_per_image = [(a - b) / 15 * 1000 for a, b in zip(c16, c1)]
            rows[f"{prog}-{kind}"] = {
                "per_image_ms_median": round(statistics.median(per_image), 1),
                "per_image_ms_rounds": [round(v, 1) for v in per_image],
                "cpu_per_image_ms_median": round(statistics.median(cpu_per_image), 1),
                "cpu_per_image_ms_rounds": [round(v, 1) for v in cpu_per_image],
                "cpu_1_s_median": round(statistics.median(c1), 2),
                "wall_16_s_median": round(statistics.median(w16), 2), "wall_1_s_median": round(statistics.median(w1), 2),
                "peak_rss_mb_16": max(s[1] for s in samples[(prog, kind, 16)]),
                "mask_dice_vs_other": round(agree, 5), "n_masks": n_masks}
    record = {"tag": args.tag, "commit": commit + (" (with uncommitted changes)" if dirty else ""),
              "machine": machine(), "run_minutes": round((time.time() - started) / 60, 1), "load_average_before": load_before, "load_average_after": load_after,
              "rounds": args.rounds, "openvino": run([venvs["ir"] / "bin" / "python", "-c",
                                                      "import openvino; print(openvino.__version__)"]).stdout.strip(),
              "cpp_install": cpp_install, "python_device_env_mb": {"openvino": venv_mb["ir"], "onnxruntime": venv_mb["onnx"]},
              "results": rows,
              "commands": {"build": "embed/build.sh --install $WORK/dist",
                           "cpp": "$WORK/dist/bin/cmunext_segment ART $WORK/images --out $WORK/out/x --quiet",
                           "python": "$WORK/venv-EXTRA/bin/cmunext-predict $WORK/images --weights ART --out $WORK/out/x "
                                     "--no-overlay --quiet",
                           "timing": '/usr/bin/time -f "%e %M %U %S" <command>',
                           "venv": 'python3 -m venv $WORK/venv-EXTRA && $WORK/venv-EXTRA/bin/pip install -q ".[EXTRA]"; du -sm $WORK/venv-EXTRA'}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"embed_{args.tag}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"embed_{args.tag}.md").write_text(report(record))
    print(report(record))
    return 0


def sample_sizes() -> str:
    import cv2
    shapes = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape[:2] for f in sorted(SAMPLES.glob("*.png"))]
    return (f"widths {min(s[1] for s in shapes)}-{max(s[1] for s in shapes)}, "
            f"heights {min(s[0] for s in shapes)}-{max(s[0] for s in shapes)} pixels, 8-bit gray PNG")


def report(r: dict) -> str:
    m = r["machine"]
    res = r["results"]
    lines = [f"# C++ EdgeSegmenter (embed/) against cmunext-predict ({r['tag']}, commit {r.get('commit', '?')})", "",
             f"Machine: {m['cpu_model']} ({m['cpus']} CPUs, {', '.join(m['isa'])}; {m['memory_mb']} MB), "
             f"Linux {m['kernel']}, Python {m['python']}, {m['compiler']}, OpenVINO {r['openvino']}. "
             f"**Shared machine**: load average {r['load_average_before'][0]:.1f} before and "
             f"{r['load_average_after'][0]:.1f} after the run (other work on its {m['cpus']} CPUs); the two "
             f"programs were run alternately, {r['rounds']} rounds, medians reported.", "",
             "Both programs run the same artifact with OpenVINO's CPU plugin (the .xml) or each its "
             "runtime (the .onnx: OpenVINO in C++, ONNX Runtime in Python) at default threads, on the 16 "
             f"bundled BUSI images (a plain folder; {sample_sizes()}), writing 0/255 PNG masks; both verify "
             "the artifact (sha256 + self-test) at load.", "",
             "| artifact | program | per image, end to end: wall (ms) | per image: CPU (ms) | start + load + verify + 1 image: wall (s) / CPU (s) | 16 images, whole run (s) | peak RSS (MB) | masks vs the other (mean Dice) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind, label in (("ir", "FP32 IR (.xml)"), ("onnx", "FP32 ONNX")):
        for prog, name in (("cpp", "`cmunext_segment` (C++)"), ("python", "`cmunext-predict` (Python)")):
            x = res[f"{prog}-{kind}"]
            lines.append(f"| {label} | {name} | {x['per_image_ms_median']} | {x['cpu_per_image_ms_median']} | "
                         f"{x['wall_1_s_median']} / {x['cpu_1_s_median']} | "
                         f"{x['wall_16_s_median']} | {x['peak_rss_mb_16']} | {x['mask_dice_vs_other']} ({x['n_masks']} masks) |")
    for kind, label in (("ir", "FP32 IR"), ("onnx", "FP32 ONNX")):
        c, p = res[f"cpp-{kind}"], res[f"python-{kind}"]
        lines.append("")
        lines.append(f"{label}: C++ / Python per image {c['per_image_ms_median']} / {p['per_image_ms_median']} ms wall "
                     f"({c['per_image_ms_median'] / p['per_image_ms_median']:.2f}x), {c['cpu_per_image_ms_median']} / "
                     f"{p['cpu_per_image_ms_median']} ms CPU ({c['cpu_per_image_ms_median'] / p['cpu_per_image_ms_median']:.2f}x); "
                     f"start to first mask {c['wall_1_s_median']} / {p['wall_1_s_median']} s; peak memory "
                     f"{c['peak_rss_mb_16']} / {p['peak_rss_mb_16']} MB. Per-round spread of the per-image wall time: "
                     f"C++ {min(c['per_image_ms_rounds'])}-{max(c['per_image_ms_rounds'])}, Python "
                     f"{min(p['per_image_ms_rounds'])}-{max(p['per_image_ms_rounds'])} ms.")
    ci = r["cpp_install"]
    big = sorted(ci["files_mb"].items(), key=lambda kv: -kv[1])
    lines += ["", "Per image end to end = (wall of 16 images - wall of 1 image) / 15: decoding, preprocessing, "
              "inference, postprocessing and writing the mask, without process start, model load and self-test "
              "(those are in the 1-image column). CPU = user + system seconds of the process (all its threads), "
              "the same difference: what an image costs, less sensitive than wall time to the other load on a "
              "shared machine. Per-round values are in the JSON.", "",
              "## What a device installs", "",
              "| install | MB | contents |", "|---|---:|---|",
              f"| C++: `embed/build.sh --install DIR` | {ci['total_mb']} | " +
              ", ".join(f"{k} {v}" for k, v in big[:6]) + f"; without the ONNX reader (IR only) {round(ci['total_mb'] - ci['onnx_frontend_mb'], 1)} |",
              f"| Python: fresh venv with `cmunext-edge[openvino]` | {r['python_device_env_mb']['openvino']} | whole environment (`du -sm`) |",
              f"| Python: fresh venv with `cmunext-edge[onnxruntime]` | {r['python_device_env_mb']['onnxruntime']} | whole environment (`du -sm`) |",
              "", "The C++ folder was checked with `ldd`: every library resolves inside it, or to the C/C++ system "
              "libraries (libc, libstdc++, libm, libgcc_s) that any Linux device has. Sizes are unstripped, as "
              "the wheel ships them.", "", "## Commands", "",
              f"Reproduce everything (this run took {r['run_minutes']} minutes; it creates `$WORK`, e.g. "
              "/tmp/cmunext_embed_bench):", "", "```",
              f".venv/bin/python benchmarks/run_embed.py --rounds {r['rounds']} --work $WORK --tag {r['tag']}", "```", "",
              "Single measurements, as the script runs them:", "", "```"]
    c = r["commands"]
    lines += [c["build"], c["venv"], c["cpp"], c["python"], "# each under: " + c["timing"], "```", "",
              "EXTRA = `openvino` with ART = `$WORK/artifacts/ir/model.xml`, EXTRA = `onnxruntime` with "
              "ART = `$WORK/artifacts/onnx/model.onnx`; the artifacts come from "
              "`.venv/bin/python -m cmunext_edge.cli.export --weights cmunext-s-busi --target openvino|onnx --fp32 "
              "--name model --out $WORK/artifacts/ir|onnx`; the 1-image runs use `$WORK/one` (the first sample).", ""]
    return "\n".join(lines)


WORK = Path("/tmp/cmunext_embed_bench")

if __name__ == "__main__":
    sys.exit(main())
