"""How `cmunext-bench` results are shown: terminal table, Markdown, JSON and a PNG plot."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from cmunext_edge._deps import require
from cmunext_edge.artifacts.kinds import is_checkpoint
from cmunext_edge.artifacts.manifest import manifest_lookup
from cmunext_edge.core.agreement import HELD_OUT_UNKNOWN, NOT_HELD_OUT
from cmunext_edge.fileio import atomic_path


def _f(value, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def _lat(key):
    return lambda r: _f((r.get("latency_ms") or {}).get(key), ".2f")


def _best(r) -> str:
    b = r.get("best_throughput")
    return "-" if not b else f"{b['images_per_s']:.1f} (b{b['batch']}x{b['streams']})"


def _mem(r) -> str:
    m = r.get("memory") or {}
    return "-" if m.get("peak_rss_mb") is None else f"{m['peak_rss_mb']:.0f}/+{m.get('added_rss_mb') or 0:.0f}"


def verification(r, long: bool = False) -> str:
    """Whether a row's artifact is verified: 'yes' (export verification passed and, where the
    bench measured it, agreement with PyTorch meets the export floor of its precision), 'NO' (why
    with `long`; a damaged manifest.json beside it is 'NO' with its damage), 'ref' for a PyTorch
    checkpoint, '-' when nothing is known."""
    from cmunext_edge.artifacts.meta import AGREEMENT_THRESHOLDS
    art = Path(r.get("artifact") or "")
    if is_checkpoint(art):
        return "ref"
    entry, damage = manifest_lookup(art)
    if damage:
        return f"NO: {damage}" if long else "NO"
    # The floor is that of the precision the row ran at: an FP32 IR compiled with
    # inference_precision=bf16 (OpenVINO's own default on CPUs with native BF16) is judged
    # against the bf16 floor, as its own gate in the row was, not against fp32's.
    exported = (entry or {}).get("precision")
    prec = r.get("precision") or exported
    need = AGREEMENT_THRESHOLDS.get(prec or "", None)
    agree = r.get("agreement_dice")
    if need is not None and agree is not None and agree < need:
        ran = f"{prec}, as run; exported {exported}" if exported and exported != prec else prec
        return f"NO: agreement with PyTorch {agree:.4f} < {need} ({ran})" if long else "NO"
    gate = r.get("agreement") or {}
    if gate.get("passed") is False:
        return f"NO: {gate.get('failure')}" if long else "NO"
    from cmunext_edge.core.agreement import record_inconsistency
    edited = record_inconsistency((entry or {}).get("verification"))
    if edited:
        return f"NO: manifest.json's verification record contradicts itself ({edited})" if long else "NO"
    if entry is not None and not entry.get("verification"):
        auto = entry.get("auto") or {}
        if auto.get("mask_dice_agreement") is not None and need and auto["mask_dice_agreement"] >= need:
            return "yes (auto)"
        return "NO: exported without verification (--no-verify)" if long else "NO"
    if entry is not None:
        v = entry["verification"]
        if v.get("passed") and v.get("verified") is False:
            short = "few" if (v.get("unverified") or "too few images") == "too few images" else "not verified"
            return f"{short}: {v.get('claim')}" if long else short
        return "yes" if v.get("passed") else "NO"
    return "-"


# (header, function of a row dict -> cell text); one table drives terminal and Markdown.
COLUMNS = (
    ("configuration", lambda r: r["label"]),
    ("device", lambda r: (r.get("device") or "-") + (" (fallback)" if r.get("fallback") else "")),
    ("p50 ms", _lat("p50")), ("p90 ms", _lat("p90")), ("p99 ms", _lat("p99")),
    ("mean±std ms", lambda r: "-" if not r.get("latency_ms") else
     f"{r['latency_ms']['mean']:.2f}±{r['latency_ms']['std']:.2f}"),
    ("FPS b1", lambda r: _f(r.get("fps_batch1"), ".1f")),
    ("best img/s (batch x streams)", _best),
    ("pre/inf/post ms", lambda r: "-" if not r.get("latency_ms") else
     f"{r['preprocess_ms']:.2f}/{r['latency_ms']['p50']:.2f}/{r['postprocess_ms']:.2f}"),
    ("params M", lambda r: _f(r.get("params"), ".3f", 1e-6)),
    ("GMACs", lambda r: _f(r.get("macs"), ".3f", 1e-9)),
    ("size MB", lambda r: _f(r.get("artifact_mb"), ".2f")),
    ("peak/added RSS MB", _mem),
    ("Dice", lambda r: _f(r.get("dice"), ".4f")),
    ("agree Dice", lambda r: _f(r.get("agreement_dice"), ".4f")),
    ("verified", lambda r: verification(r)),
    ("max |Δlogit|", lambda r: _f(r.get("max_abs_logit_delta"), ".2e")),
    ("vs torch fp32", lambda r: _f(r.get("vs_torch_fp32"), ".2f") + ("x" if r.get("vs_torch_fp32") else "")),
    ("% of matmul floor", lambda r: _f(r.get("floor_fraction"), ".1f", 100.0)),
)


# The compact terminal table: these columns, the right-most dropped first when the terminal is
# too narrow (then the configuration label is shortened); --wide / Markdown show every column.
# (header in COLUMNS, shorter compact header), in the order they are kept.
COMPACT = (("configuration", "configuration"), ("device", "device"), ("p50 ms", "p50 ms"),
           ("Dice", "Dice"), ("agree Dice", "agree"), ("verified", "verified"), ("FPS b1", "FPS b1"),
           ("best img/s (batch x streams)", "best img/s"), ("size MB", "MB"))
MIN_LABEL = 36


def _as_dict(report) -> dict:
    return report if isinstance(report, dict) else report.to_dict()


def _columns(wide: bool = True):
    if wide:
        return COLUMNS
    by_header = dict(COLUMNS)
    return tuple((short, by_header[h]) for h, short in COMPACT)


# Multi-class runs: each class's Dice, after "Dice", in the wide / Markdown table only (the
# compact one keeps its width); absent when no row has per-class Dice (one-class tables unchanged).
PER_CLASS_DICE = ("Dice per class", lambda r: " / ".join(f"{d:.4f}" for d in r["per_class_dice"])
                  if r.get("per_class_dice") else "-")


def table_cells(report, wide: bool = True) -> tuple[list[str], list[list[str]]]:
    rows = _as_dict(report)["rows"]
    ok = [r for r in rows if not r.get("error")]
    cols = _columns(wide)
    if wide and any(r.get("per_class_dice") for r in ok):
        at = [h for h, _ in cols].index("Dice") + 1
        cols = (*cols[:at], PER_CLASS_DICE, *cols[at:])
    return [h for h, _ in cols], [[fn(r) for _, fn in cols] for r in ok]


def notes(report) -> list[str]:
    """Fallbacks, errors and the machine line: what must be read next to the numbers."""
    d = _as_dict(report)
    m = d["machine"]
    out = [f"machine: {m.get('cpu')}, {m.get('usable_cores')} cores, load average "
           f"{', '.join(f'{x:.2f}' for x in m.get('load_average') or [])}"]
    if m.get("matmul_gflops"):
        out.append(f"matmul floor: {m['matmul_gflops']:.1f} GFLOP/s ({m['matmul_method']}); "
                   "'% of matmul floor' = 2*MACs / p50 / that rate")
    for r in d["rows"]:
        if r.get("fallback"):
            out.append(f"FALLBACK {r['label']}: {r['fallback']}")
        if r.get("error"):
            out.append(f"ERROR {r['label']}: {r['error']}")
        if verification(r).startswith("NO"):
            out.append(f"UNVERIFIED {r['label']}: {verification(r, long=True)}")
        if r.get("no_dice"):
            out.append(f"NO DICE {r['label']}: {r['no_dice']}")
        if r.get("dice_note"):
            out.append(f"FEWER CLASSES {r['label']}: {r['dice_note']}")
    held: dict[str, list] = {}          # claim -> the rows it is about
    for r in d["rows"]:
        if (r.get("agreement") or {}).get("unverified") in (NOT_HELD_OUT, HELD_OUT_UNKNOWN):
            held.setdefault(r["agreement"].get("claim"), []).append(r["label"])
    out += [f"AGREEMENT DATA ({', '.join(labels)}): {claim} (this run's agreement figures are not a claim "
            f"about new images)" for claim, labels in sorted(held.items(), key=lambda kv: str(kv[0]))]
    out.append("latency: batch 1, Backend.infer only; pre/post per image (decode excluded); "
               "RSS: peak of the process while loading + batch-1 runs / added by this row; "
               "MACs: Conv2d only, per image")
    return out


def _widths(headers, cells) -> list[int]:
    return [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1 - (width - 1) // 2] + "…" + text[-((width - 1) // 2):]


def _fit(headers, cells, width: int):
    """Drop right-most columns, then shorten the configuration label, until the table fits."""
    total = lambda ws: sum(ws) + 2 * (len(ws) - 1)      # noqa: E731
    while len(headers) > 2 and total(_widths(headers, cells)) > width:
        label_room = width - (total(_widths(headers, cells)) - _widths(headers, cells)[0])
        if label_room >= MIN_LABEL:
            break
        headers, cells = headers[:-1], [c[:-1] for c in cells]
    widths = _widths(headers, cells)
    room = max(MIN_LABEL, width - (total(widths) - widths[0]))
    return headers, [[_shorten(c[0], room)] + c[1:] for c in cells]


def format_table(report, wide: bool = False, width: int | None = None) -> str:
    """The terminal table: compact (key columns, fitted to `width`, default the terminal's, which
    honours $COLUMNS) or `wide` (every column, unfitted, as in the Markdown file)."""
    headers, cells = table_cells(report, wide)
    width = width or shutil.get_terminal_size((100, 24)).columns
    if not wide:
        headers, cells = _fit(headers, cells, width)
    widths = _widths(headers, cells)
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    body = [line(headers), line(["-" * w for w in widths])] + [line(c) for c in cells]
    hidden = len(COLUMNS) - len(headers)
    if wide:
        return "\n".join(body + [""] + notes(report))
    if hidden:
        body.append(f"({hidden} of {len(COLUMNS)} columns hidden; --wide or --markdown FILE shows all)")
    return "\n".join(body + [""] + [textwrap.fill(n, width, subsequent_indent="  ") for n in notes(report)])


def to_markdown(report) -> str:
    d = _as_dict(report)
    headers, cells = table_cells(d)
    esc = lambda s: s.replace("|", "\\|")
    lines = ["# cmunext-bench results", "", "| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    lines += [""] + [f"- {n}" for n in notes(d)]
    versions = d["machine"].get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    if d.get("ort_overhead"):
        o = d["ort_overhead"]
        lines += [f"ONNX Runtime overhead check ({o['artifact']}): bench p50 {o['bench_ms']['p50']:.2f} ms, "
                  f"plain InferenceSession.run p50 {o['plain_ort_ms']['p50']:.2f} ms, ratio "
                  f"{o['ratio_p50']:.3f} ({'within' if o['within_tolerance'] else 'OUTSIDE'} "
                  f"±{o['tolerance']:.0%})", ""]
    return "\n".join(lines)


def write_json(report, path) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(_as_dict(report), indent=2, default=str) + "\n")
    return Path(path)


def write_markdown(report, path) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(to_markdown(report))
    return Path(path)


def write_plot(report, path) -> Path:
    """Latency (p50, batch 1, log axis) against Dice, one labelled point per configuration.

    Dice is against ground truth when the run had --data, else the agreement Dice with PyTorch.
    """
    rows = [r for r in _as_dict(report)["rows"] if r.get("latency_ms")]
    use_gt = any(r.get("dice") is not None for r in rows)
    key, ylabel = ("dice", "Dice vs. ground truth") if use_gt else ("agreement_dice", "mask Dice vs. PyTorch fp32")
    fig, ax = new_latency_plot()
    for i, r in enumerate(rows, 1):   # numbered points, full labels in the legend: no overlap
        x, y = r["latency_ms"]["p50"], r.get(key)
        if y is None:
            continue
        bad = verification(r).startswith("NO")
        ax.scatter([x], [y], s=45, marker="X" if bad else "os^Dv<>p*h"[(i - 1) % 10],
                   color="tab:red" if bad else None,
                   label=f"{i}: {r['label']}" + (" (UNVERIFIED)" if bad else ""))
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    return save_latency_plot(fig, ax, path, ylabel, "cmunext-bench: latency vs. accuracy")


def new_latency_plot():
    """A matplotlib (fig, ax) for a latency-vs-Dice plot, headless (Agg)."""
    require("matplotlib").use("Agg")
    return require("matplotlib.pyplot").subplots(figsize=(11, 5.5), dpi=120)


MIN_DICE_SPAN = 0.1     # the Dice axis never spans less: 0.003 apart must not look like a gap


def honest_dice_axis(ax) -> tuple[float, float]:
    """Dice limits spanning at least MIN_DICE_SPAN (within 0..1) around every plotted point and
    horizontal line, so that differences of a few thousandths do not fill the plot."""
    ys = [float(o[1]) for c in ax.collections for o in c.get_offsets()]
    ys += [float(y) for line in ax.lines for y in line.get_ydata()]
    if not ys:
        return ax.get_ylim()
    lo, hi = min(ys), max(ys)
    pad = max(0.0, MIN_DICE_SPAN - (hi - lo)) / 2 + 0.01
    lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    if hi - lo < MIN_DICE_SPAN:       # pushed against 0 or 1: extend the other way
        lo, hi = (0.0, MIN_DICE_SPAN) if lo == 0.0 else (1.0 - MIN_DICE_SPAN, 1.0)
    ax.set_ylim(lo, hi)
    return lo, hi


def save_latency_plot(fig, ax, path, ylabel: str, title: str) -> Path:
    """Shared finish of latency-vs-Dice plots: log latency axis, legend beside, atomic PNG."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    ax.set_xscale("log")
    ticker = require("matplotlib.ticker")
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    honest_dice_axis(ax)
    ax.set_xlabel("latency p50, batch 1 (ms, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    require("matplotlib.pyplot").close(fig)
    return Path(path)
