"""The auto-selection report: JSON (everything), Markdown (the table, kept/rejected and why) and a
PNG plot (p50 latency vs. Dice, the budget line and the winner marked)."""
from __future__ import annotations

import json
from pathlib import Path

from cmunext_edge.fileio import atomic_path


def _f(v, fmt):
    return "" if v is None else format(v, fmt)


def to_markdown(rep: dict) -> str:
    lines = [f"# Auto selection: {Path(rep['weights']).name} ({rep['variant']}) on {rep['device']}", "",
             f"- date: {rep['date']}; threads: {rep['threads'] or 'runtime default'}",
             f"- CPU: {rep['capabilities']['summary'] if rep.get('capabilities') else 'not recorded'}",
             f"- evaluation: {rep['eval_set']['n_images']} images of {rep['eval_set']['source']}",
             f"- PyTorch eager FP32: Dice {_f(rep['pytorch_fp32_dice'], '.4f')}, "
             f"p50 {_f(rep['pytorch_fp32_p50_ms'], '.1f')} ms (batch 1)",
             f"- Dice budget: {rep['max_dice_drop_points']:g} points (absolute "
             f"{rep['max_dice_drop_points'] / 100:g}) below PyTorch FP32 on the same images",
             f"- **winner: {rep['winner'] or 'none'}** -> `{rep['artifact']}`",
             f"- why: {rep.get('why') or '-'}",
             "- agreement gate per precision (mean floor, at most this share of images below 0.90, images "
             "needed for that tail claim): " + "; ".join(f"{p} {g['mean']} / {100 * g['tail']:g}% / {g['min_images']}"
                                                         for p, g in (rep.get("gates") or {}).items()), "",
             "| # | candidate | target | prec | p50 ms | img/s | vs torch | Dice | drop (pts) | agree | worst "
             "(image) | < 0.90 | 95% bound | status | why |", "|" + "---|" * 15]
    torch_ms = rep.get("pytorch_fp32_p50_ms")
    for i, r in enumerate(rep["candidates"], 1):
        speed = f"{torch_ms / r['p50_ms']:.1f}x" if torch_ms and r["p50_ms"] else ""
        lines.append(f"| {i} | {r['name']} | {r['target']} | {r['precision']} | {_f(r['p50_ms'], '.2f')} | "
                     f"{_f(r['images_per_s'], '.1f')} | {speed} | {_f(r['dice'], '.4f')} | "
                     f"{_f(r['dice_drop_points'], '+.3f')} | {_f(r['agreement'], '.4f')} | "
                     f"{_f(r.get('worst'), '.3f')}{' (' + str(r['worst_image']) + ')' if r.get('worst_image') else ''} | "
                     f"{'' if r.get('n_bad') is None else r['n_bad']} | "
                     f"{'' if r.get('bad_upper95') is None else format(100 * r['bad_upper95'], '.1f') + '%'} | "
                     f"{'**' + r['status'] + '**' if r['status'] == 'kept' else r['status']} | {r['reason']} |")
    lines += _per_class_lines(rep)
    lines += ["", "Candidate settings (graph rewrites, quantization options, stored runtime settings):", ""]
    for r in rep["candidates"]:
        s = r["settings"]
        lines.append(f"- `{r['name']}`: {r['note'] or r['target'] + ' ' + r['precision']}; graph "
                     f"{s['graph'] or '-'}; nncf {s['nncf'] or '-'}; ort {s['ort_quant'] or '-'}; runtime "
                     f"{s['runtime'] or '-'}; throughput {r.get('throughput_setting') or '-'}; "
                     f"export {r.get('export_s') or '-'} s")
    return "\n".join(lines) + "\n"


def _per_class_lines(rep: dict) -> list[str]:
    """Per-class Dice against ground truth (several classes only: one-class reports are unchanged)."""
    rows = [(r["name"], r.get("per_class_dice")) for r in rep["candidates"] if r.get("per_class_dice")]
    if rep.get("pytorch_fp32_per_class_dice") is None and not rows:
        return []
    torch = rep.get("pytorch_fp32_per_class_dice")
    rows = ([("PyTorch FP32", torch)] if torch else []) + rows
    return ["", "Per-class Dice vs ground truth (class 0, 1, ...):", ""] + \
        [f"- {name}: " + " / ".join(f"{d:.4f}" for d in dice) for name, dice in rows]


def write_plot(rep: dict, path) -> Path:
    from cmunext_edge.bench.report import new_latency_plot, save_latency_plot
    fig, ax = new_latency_plot()
    for i, r in enumerate(rep["candidates"], 1):
        if r["p50_ms"] is None or r["dice"] is None:
            continue
        kept = r["status"] == "kept"
        color = {"kept": "tab:green", "within budget": "tab:blue"}.get(r["status"], "tab:red")
        ax.scatter([r["p50_ms"]], [r["dice"]], s=120 if kept else 45, color=color,
                   marker="*" if kept else "o", label=f"{i}: {r['name']} ({r['status']})")
        ax.annotate(str(i), (r["p50_ms"], r["dice"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if rep.get("pytorch_fp32_dice") is not None:
        floor = rep["pytorch_fp32_dice"] - rep["max_dice_drop_points"] / 100
        ax.axhline(rep["pytorch_fp32_dice"], color="gray", lw=0.8, label="PyTorch FP32 Dice")
        ax.axhline(floor, color="tab:red", ls="--", lw=0.8, label="Dice budget")
    return save_latency_plot(fig, ax, path, "Dice vs. ground truth",
                             f"auto selection {rep['variant']} on {rep['device']}: winner {rep['winner']}")


def write_report(rep: dict, stem) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix, text in ((".json", json.dumps(rep, indent=2) + "\n"), (".md", to_markdown(rep))):
        path = stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
        out.append(path)
    try:
        out.append(write_plot(rep, stem.with_suffix(".png")))
    except ImportError:                # matplotlib is optional: the table is the record
        pass
    return out
