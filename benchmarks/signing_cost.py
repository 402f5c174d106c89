"""What signing costs (docs/signing.md): the install footprint of the signing library on a device
and the time to sign and verify one artifact.

Footprint: three fresh virtual environments (bare; `model-signing pyopenssl`; `cryptography`, the
alternative), each measured by its package count (`pip list`) and the size of its site-packages.
Needs the package index (pip). Timing: the artifact signed and verified `--repeats` times with
cmunext_edge.artifacts.signing after one warm-up (the first import of model-signing is timed apart).

    .venv/bin/python benchmarks/signing_cost.py ARTIFACT [--repeats 10] [--out benchmarks/results/signing_cost_DATE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, rel

ENVIRONMENTS = (("bare venv (pip, setuptools)", []),
                ("pip install model-signing pyopenssl", ["model-signing", "pyopenssl"]),
                ("pip install cryptography (the alternative: Ed25519 over a manifest of hashes)", ["cryptography"]))


def _site_packages_mb(venv: Path) -> float:
    site = next(venv.glob("lib/python3*/site-packages"))
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 1e6


def footprint(root: Path) -> list[dict]:
    rows = []
    for i, (label, packages) in enumerate(ENVIRONMENTS):
        venv = root / f"env{i}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        if packages:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *packages], check=True)
        listed = json.loads(subprocess.run([str(venv / "bin" / "pip"), "list", "--format", "json"],
                                           check=True, capture_output=True, text=True).stdout)
        rows.append({"environment": label, "packages": len(listed), "site_packages_mb": round(_site_packages_mb(venv), 1),
                     "versions": {p["name"]: p["version"] for p in listed}})
    return rows


def timing(artifact: Path, repeats: int, root: Path) -> dict:
    import shutil
    started = time.perf_counter()
    from cmunext_edge.artifacts import signing
    signing._model_signing()
    import_s = time.perf_counter() - started
    folder = root / "artifact"
    folder.mkdir()
    from cmunext_edge.artifacts.kinds import artifact_files
    files = artifact_files(artifact)
    for f in files:
        shutil.copy(f, folder / f.name)
    entry = folder / artifact.name
    private, public = signing.new_key_pair(root / "k.pem", root / "k.pub.pem")
    sign_ms, verify_ms = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        sig = signing.sign_artifact(entry, private)
        t1 = time.perf_counter()
        signing.check_signature(folder, [f.name for f in files], sig, [public])
        t2 = time.perf_counter()
        if i:                                   # the first round is a warm-up
            sign_ms.append((t1 - t0) * 1e3)
            verify_ms.append((t2 - t1) * 1e3)
    return {"artifact": rel(artifact), "files": [f.name for f in files],
            "bytes": sum(f.stat().st_size for f in files), "repeats": repeats, "import_s": round(import_s, 2),
            "sign_ms_median": round(statistics.median(sign_ms), 1), "sign_ms_max": round(max(sign_ms), 1),
            "verify_ms_median": round(statistics.median(verify_ms), 1), "verify_ms_max": round(max(verify_ms), 1)}


def to_markdown(result: dict) -> str:
    t = result["timing"]
    lines = [f"# Signing cost, {result['date']}", "", f"- machine: {result['machine']}", f"- command: `{result['command']}`",
             "", "| environment (fresh venv) | packages | site-packages |", "|---|---:|---:|"]
    lines += [f"| {r['environment']} | {r['packages']} | {r['site_packages_mb']:.0f} MB |" for r in result["footprint"]]
    lines += ["", f"Signing `{t['artifact']}` ({', '.join(t['files'])}, {t['bytes'] / 1e6:.2f} MB), {t['repeats']} "
                  f"times after one warm-up: sign median {t['sign_ms_median']} ms (max {t['sign_ms_max']}), verify "
                  f"median {t['verify_ms_median']} ms (max {t['verify_ms_max']}); first import of model-signing "
                  f"{t['import_s']} s.", ""]
    return "\n".join(lines)


def machine() -> str:
    from cmunext_edge.capabilities import detect
    return f"{detect().summary()}; Python {platform.python_version()}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="an exported artifact (.onnx or .xml) to sign")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"signing_cost_{dt.date.today()}")
    args = p.parse_args(argv)
    if not args.artifact.is_file():
        print(f"signing_cost.py: error: {args.artifact}: no such artifact", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = {"date": dt.date.today().isoformat(), "machine": machine(), "command": "python " + " ".join(
                      [rel(Path(__file__)), *(rel(a) if Path(a).exists() else a for a in (argv or sys.argv[1:]))]),
                  "footprint": footprint(Path(tmp)), "timing": timing(args.artifact.resolve(), args.repeats, Path(tmp))}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
