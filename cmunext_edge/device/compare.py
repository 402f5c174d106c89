"""One table across devices: merge device_report.json files (cmunext-check) into Markdown, JSON
and a latency-vs-Dice plot. Per device and artifact: precision that ran, p50, FPS, agreement
with the export host, Dice against ground truth, and whether every check held. Emulated runs
are marked: their times are not speeds."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.fileio import atomic_path, not_a_file, real_path, loads_json
from cmunext_edge.core.metrics import format_class_dice

COLUMNS = ("device", "artifact", "ran", "p50 ms", "FPS", "agreement", "below 0.90 (95% bound)", "identical masks",
           "max logit delta", "end-to-end agreement", "inputs differing", "Dice (host)", "check")


def _read_report(p) -> tuple[str, dict]:
    """(sha256 of the file, the report it holds); OSError or ValueError naming `p` otherwise."""
    what = not_a_file(p)
    if what:
        raise OSError(f"{p}: {what}, not a report" + (" (give its device_report.json)" if Path(p).is_dir() else ""))
    if not Path(p).is_file():
        raise FileNotFoundError(f"{p}: no such report")
    raw = Path(p).read_bytes()
    if not raw:
        raise ValueError(f"{p}: an empty file, not a report")
    try:
        data = loads_json(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "cmunext-edge device report":
        raise ValueError(f"{p}: not a cmunext-check device report")
    return hashlib.sha256(raw).hexdigest(), data


def load_reports(paths, notes: list | None = None, skipped: list | None = None) -> list[dict]:
    """The reports at `paths`, each once: a report given twice (the same file, or another file with
    the same content) is read once and named in `notes` (it would be two identical rows). A report
    that cannot be read raises, or with `skipped` is named there and left out."""
    reports, seen = [], {}
    for p in paths:
        try:
            key, data = _read_report(p)
        except (OSError, ValueError) as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        if key in seen:
            same = "given twice" if real_path(p) == real_path(seen[key]) else f"the same report as {seen[key]}"
            if notes is not None:
                notes.append(f"{p}: {same}; shown once")
            continue
        data["_source"] = str(p)
        seen[key] = str(p)
        reports.append(data)
    return reports


def checked_rows(paths, notes: list, skipped: list) -> list[dict]:
    """The table's rows of the readable, unedited reports at `paths`; every other one is named in
    `skipped` (one line each). None usable: ValueError naming the first (and how many)."""
    rows = []
    for rep in load_reports(paths, notes, skipped):
        try:
            rows.append(_checked_row(rep))
        except ValueError as exc:
            skipped.append(str(exc))
    if not rows:
        more = f" (and {len(skipped) - 1} more report(s) not usable)" if len(skipped) > 1 else ""
        raise ValueError(skipped[0] + more)
    return rows


def finite(value):
    """`value` with every NaN or infinite float replaced by None (valid JSON; shown as '-')."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _nonfinite(value) -> bool:
    return finite(value) != value if isinstance(value, (float, dict, list, tuple)) else False


# the type each compared figure has in a report cmunext-check wrote (None: the check stopped before it)
_NUMBER = (int, float)
FIELD_TYPES = {"device": str, "passed": bool, "p50_ms": _NUMBER, "fps": _NUMBER, "agreement": _NUMBER,
               "identical_masks": int, "images": int, "max_logit_delta": _NUMBER, "e2e_agreement": _NUMBER,
               "inputs_differing": _NUMBER, "dice": _NUMBER, "host_dice": _NUMBER, "distribution": dict,
               "min_images": int}
_REQUIRED = ("device", "passed")
# the figures of an agreement distribution that the table shows (core/agreement.distribution)
DISTRIBUTION_TYPES = {"n": int, "n_bad": int, "bad_share_upper95": _NUMBER}


def _type_problem(key: str, value, kind) -> str | None:
    """Why `value` is not of `kind` (bool is an int to Python, but "images": true was edited)."""
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return None
    return f"{key} is {value!r}, not {'a number' if kind is _NUMBER else kind.__name__}"


def _checked_row(rep: dict) -> dict:
    """row(), with a report that lacks what cmunext-check writes, or holds a value of the wrong type,
    named as such (one line) rather than shown as if it had passed."""
    try:
        r = row(rep)
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{rep.get('_source')}: an incomplete or edited device report ({type(exc).__name__}: "
                         f"{exc}); compare the reports cmunext-check wrote") from None
    # a figure that is not a number (NaN, inf) is no figure: shown as '-', null in the JSON, never a pass
    bad = [k for k, v in r.items() if _nonfinite(v)]
    if bad:
        r = finite(r)
        r["passed"] = False
        r["first_failure"] = (f"{', '.join(bad)} not a finite number (NaN or infinite)"
                              + (f"; {r['first_failure']}" if r.get("first_failure") else ""))
    dist = r["distribution"] if isinstance(r["distribution"], dict) else {}
    problems = [_type_problem(key, r[key], kind) for key, kind in FIELD_TYPES.items()
                if r[key] is not None or key in _REQUIRED]
    problems += [_type_problem(f"distribution.{key}", dist.get(key), kind) for key, kind in DISTRIBUTION_TYPES.items()
                 if dist and dist.get("n")]
    problem = next((p for p in problems if p), None)
    if problem is None:
        try:                      # the row as the table shows it: any other edit is named here, not later
            _cells(r)
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"it cannot be shown ({type(exc).__name__}: {exc})"
    if problem:
        raise ValueError(f"{rep.get('_source')}: an edited device report: {problem}; compare the reports "
                         "cmunext-check wrote")
    checks = rep.get("checks")
    held = (isinstance(checks, list) and bool(checks) and all(isinstance(c, dict) and c.get("passed") is True
                                                               for c in checks) and not rep.get("interrupted"))
    if r["passed"] and (not held or r["agreement"] is None):
        raise ValueError(f"{rep.get('_source')}: an edited device report: it says passed, but "
                         f"{'its checks do not all hold' if not held else 'it holds no agreement figure'}; "
                         "compare the reports cmunext-check wrote")
    return r


def row(rep: dict) -> dict:
    """The compared figures of one report (None where the check stopped before them)."""
    b, ran = rep["bundle"], rep.get("ran") or {}
    agr, dice, lat, fps, e2e = (rep.get(k) or {} for k in ("agreement", "dice", "latency_ms", "fps", "end_to_end"))
    return {"device": rep["label"], "emulated": rep.get("emulated"), "machine": rep["device"].get("machine"),
            "artifact": f"{Path(b['artifact'] or '?').name} ({b['backend']} {b['precision']})",
            "backend": b["backend"], "artifact_precision": b["precision"], "ran_device": ran.get("device"),
            "ran_precision": ran.get("precision"), "p50_ms": lat.get("p50"), "fps": fps.get("batch1_loop"),
            "agreement": agr.get("mask_dice_mean"), "identical_masks": agr.get("identical_masks"),
            "images": agr.get("images"), "max_logit_delta": agr.get("max_abs_logit_delta"),
            "distribution": agr.get("distribution"), "tail_verified": agr.get("verified"),
            "min_images": agr.get("min_images"),
            "e2e_agreement": e2e.get("mask_dice_mean"), "inputs_differing": e2e.get("input_values_differing"),
            "dice": dice.get("device"), "host_dice": dice.get("host"), "passed": rep["passed"],
            **({"per_class_dice": dice["per_class_device"]} if dice.get("per_class_device") else {}),
            "first_failure": rep.get("first_failure"), "interrupted": (rep.get("interrupted") or {}).get("step")}


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def _cells(r: dict) -> list[str]:
    emu = r["emulated"] is not None
    return [r["device"] + (" *(emulated)*" if emu else ""), r["artifact"],
            f"{r['ran_device'] or '-'} {r['ran_precision'] or '-'}",
            _f(r["p50_ms"], ".2f") + ("¹" if emu and r["p50_ms"] is not None else ""),
            _f(r["fps"], ".3g") + ("¹" if emu and r["fps"] is not None else ""), _f(r["agreement"], ".4f"),
            _tail(r.get("distribution"), r.get("tail_verified"), r.get("min_images")),
            "-" if r["identical_masks"] is None else f"{r['identical_masks']}/{r['images']}",
            _f(r["max_logit_delta"], ".2g"), _f(r["e2e_agreement"], ".4f"),
            "-" if r["inputs_differing"] is None else f"{100 * r['inputs_differing']:.1f}%", f"{_f(r['dice'], '.4f')} ({_f(r['host_dice'], '.4f')})"
            + format_class_dice(r.get("per_class_dice")),
            _verdict(r)]


def _verdict(r: dict) -> str:
    if r["passed"]:
        return "pass"
    if r["first_failure"]:
        return f"FAIL: {r['first_failure']}"
    return f"interrupted during {r['interrupted']} (partial)" if r.get("interrupted") else "FAIL"


def _tail(d: dict | None, verified, min_images: int | None = None) -> str:
    """'0/49 (5.9%)': images below 0.90 of those compared, the 95% bound; 'few' when too few for the
    claim (a gate that failed on enough images says so in the check column, not here)."""
    if not d or not d.get("n"):
        return "-"
    few = not verified and (min_images is None or d["n"] < min_images)
    return f"{d['n_bad']}/{d['n']} ({100 * d['bad_share_upper95']:.1f}%)" + (" few" if few else "")


def _one_line(text) -> str:
    """`text` fit for one Markdown table cell or line: line breaks become spaces, '|' is '/'."""
    return " ".join(str(text).splitlines()).replace("|", "/")


def to_markdown(rows: list[dict], title: str = "Devices compared (cmunext-check reports)") -> str:
    lines = [f"## {_one_line(title)}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_one_line(c) for c in _cells(r)) + " |" for r in rows]
    notes = sorted({_one_line(f"{r['device']}: {r['emulated']}") for r in rows if r["emulated"]})
    if notes:
        lines += ["", "¹ emulated: measured under instruction-set emulation, so the time says nothing "
                      "about the real device's speed (correctness only). " + "; ".join(notes)]
    lines += ["", "agreement: mean mask Dice against the export host's outputs for the same artifact, the "
                  "device running the host's own input tensors (the runtime alone; gated by the precision's "
                  "floor and tail floor); below 0.90: images whose agreement is below 0.90, of those compared, "
                  "with the 95% upper bound on that share ('few': too few images for the precision's tail "
                  "claim); end-to-end agreement: the images preprocessed on the device (inputs differing: "
                  "share of input values that differ from the host's preprocessing); Dice: against ground "
                  "truth, end to end (host's in brackets; per class for several classes); ran: device and precision the runtime reported."]
    return "\n".join(lines) + "\n"


def write_plot(rows: list[dict], path) -> Path:
    """p50 latency (log) against Dice; emulated points hollow (their x is not a speed)."""
    require("matplotlib").use("Agg")
    plt = require("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    for i, r in enumerate(x for x in rows if x["p50_ms"] and x["dice"] is not None):
        hollow = r["emulated"] is not None
        ax.scatter([r["p50_ms"]], [r["dice"]], s=50, marker="os^Dv<>p*h"[i % 10],
                   facecolors="none" if hollow else None, edgecolors=f"C{i % 10}", color=f"C{i % 10}",
                   label=f"{i + 1}: {r['device']}{' (emulated)' if hollow else ''} / {r['artifact']} "
                         f"[{r['ran_precision']}]")
        ax.annotate(str(i + 1), (r["p50_ms"], r["dice"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency p50, batch 1 (ms, log scale; emulated points hollow: not speeds)")
    ax.set_ylabel("Dice vs. ground truth (bundle images)")
    ax.set_title("cmunext-check across devices")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


OUTPUT_SUFFIXES = (".md", ".json", ".png")


def output_files(out_prefix) -> list[Path]:
    """The files `compare(..., out_prefix)` writes: PREFIX.md, PREFIX.json, PREFIX.png."""
    out = Path(out_prefix)
    return [out.with_name(out.name + suffix) for suffix in OUTPUT_SUFFIXES]


def compare(paths, out_prefix=None, title: str | None = None) -> dict:
    """Merge reports -> {"rows", "markdown", "files", "notes", "skipped"}; writes files when out_prefix
    (the caller checks first that none of them is a report it reads: cli/compare.py). A report given
    twice is shown once and named in "notes"; one that cannot be read or was edited is left out and
    named in "skipped" (none usable: ValueError); NaN/inf figures are null and no pass."""
    notes: list[str] = []
    skipped: list[str] = []
    rows = checked_rows(paths, notes, skipped)
    md = to_markdown(rows, title) if title else to_markdown(rows)
    files = []
    if out_prefix:
        md_path, json_path, png_path = output_files(out_prefix)
        md_path.parent.mkdir(parents=True, exist_ok=True)
        for path, text in ((md_path, md), (json_path, json.dumps({"rows": finite(rows)}, indent=2,
                                                                 allow_nan=False) + "\n")):
            with atomic_path(path) as tmp:
                tmp.write_text(text)
            files.append(str(path))
        try:
            files.append(str(write_plot(rows, png_path)))
        except ImportError as exc:
            files.append(f"(no plot: {exc})")
    return {"rows": rows, "markdown": md, "files": files, "notes": notes, "skipped": skipped}
