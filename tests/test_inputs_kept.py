"""Reliability, round six: no output of a run replaces one of its inputs.

`cmunext-predict folder/ --summary-json folder/image.png` overwrote the image it had just segmented
(exit 0); `cmunext-predict clips/overlay.mp4 --out clips` wrote its overlay video over the video it
was reading; `cmunext-bench --json dataset/masks/0/x.png` replaced a ground-truth mask. Each is now
refused before any work (exit 2, one line) and the input is left as it was."""
import shutil

import pytest

from cmunext_edge.cli import bench as bench_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.resources import SAMPLES_DIR

from test_reliability import SHIPPED, one_error_line, onnx_art, run_cli  # noqa: F401  (onnx_art: a fixture)
from test_video import make_clip


def _images(tmp_path, n=2):
    folder = tmp_path / "in"
    folder.mkdir()
    for src in sorted((SAMPLES_DIR / "images").glob("*.png"))[:n]:
        shutil.copy(src, folder / src.name)
    return folder


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["summary_is_an_image", "summary_is_the_model", "summary_is_an_output",
                                  "out_masks_is_the_source"])
def test_predict_refuses_outputs_that_would_replace_inputs(case, tmp_path, capsys):
    src = _images(tmp_path)
    image = sorted(src.iterdir())[0]
    model = tmp_path / "m.safetensors"
    shutil.copy(SHIPPED, model)
    argv, says = {
        "summary_is_an_image": ([src, "--out", tmp_path / "o", "--summary-json", image], "is an input of this run"),
        "summary_is_the_model": ([src, "--weights", model, "--out", tmp_path / "o", "--summary-json", model],
                                 "is an input of this run"),
        "summary_is_an_output": ([src, "--out", tmp_path / "o", "--summary-json", tmp_path / "o" / "scores.csv"],
                                 "is an output the run writes under --out (scores.csv)"),
        "out_masks_is_the_source": ([src, "--out", tmp_path], "the run would write over"),
    }[case]
    if case == "out_masks_is_the_source":     # segmenting <out>/masks/ again into the same --out
        src = src.rename(tmp_path / "masks")
        argv = [src, *argv[1:]]
    before = _snapshot(tmp_path)
    rc, _, err = run_cli(predict_cli.main, argv, capsys)
    assert rc == 2 and says in one_error_line(err, "cmunext-predict"), err
    assert _snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def test_predict_refuses_an_overlay_video_over_its_source(tmp_path, capsys):
    clip = make_clip(tmp_path / "overlay.mp4")
    before = clip.read_bytes()
    for argv in ([clip, "--out", tmp_path], [clip, "--out", tmp_path / "o", "--summary-json", clip]):
        rc, _, err = run_cli(predict_cli.main, argv, capsys)
        assert rc == 2 and "overlay.mp4" in one_error_line(err, "cmunext-predict"), err
    assert clip.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]


def test_bench_never_writes_a_report_over_its_evaluation_data(onnx_art, tmp_path, capsys):
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    mask = sorted((data / "masks" / "0").glob("*.png"))[0]
    before = mask.read_bytes()
    rc, _, err = run_cli(bench_cli.main, [onnx_art, "--data", data, "--iters", "1", "--warmup", "0",
                                          "--json", mask], capsys)
    assert rc == 2 and "is an input of this run" in one_error_line(err, "cmunext-bench"), err
    assert mask.read_bytes() == before


def test_outputs_beside_the_inputs_are_still_allowed(tmp_path, capsys):
    """The check refuses only real overwrites: --out inside the source folder is fine."""
    pytest.importorskip("torch")
    src = _images(tmp_path, 1)
    rc, out, err = run_cli(predict_cli.main, [src, "--out", src / "pred", "--summary-json", src / "s.json",
                                              "--quiet"], capsys)
    assert rc == 0, err
    assert (src / "s.json").is_file() and len(list((src / "pred" / "masks").glob("*.png"))) == 1
