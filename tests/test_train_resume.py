"""Reliability, round six (training): a resumed run keeps the settings that define it, one unreadable
image never stops a run, and a run's best.pth is exported at the size it trained at.

Before: resuming with another --seed or --val-fraction silently reused the old split, another
--img-size silently went on training at the new size, another --variant failed with "unexpected";
one truncated image stopped the whole run; a best.pth trained at 64 x 64 was exported at 256."""
import json
import shutil

import pytest

from cmunext_edge.cli import train as train_cli
from cmunext_edge.resources import SAMPLES_DIR

from test_reliability import one_error_line, run_cli

torch = pytest.importorskip("torch")

from cmunext_edge.checkpoints.weights import inspect_checkpoint, load_checkpoint  # noqa: E402
from cmunext_edge.train.recipe import TrainConfig, train  # noqa: E402


def _cfg(data, out, **kw):
    return TrainConfig(**{"data": str(data), "out": str(out), "epochs": 1, "batch_size": 4, "img_size": 64,
                          "val_fraction": 0.25, "max_train_images": 4, **kw})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = tmp_path_factory.mktemp("ds") / "busi"
    shutil.copytree(SAMPLES_DIR, data)
    return data


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    train(_cfg(dataset, out), log=lambda *_: None)
    return out


@pytest.mark.parametrize("change,says", [
    ({"seed": 7}, "started with --seed 42, not --seed 7"),
    ({"val_fraction": 0.5}, "started with --val-fraction 0.25, not --val-fraction 0.5"),
    ({"img_size": 96}, "started with --img-size 64, not --img-size 96"),
    ({"variant": "cmunext"}, "started with --variant cmunext-s, not --variant cmunext"),
])
def test_resume_with_other_run_settings_is_refused_and_touches_nothing(dataset, run, change, says):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ValueError, match="resume with the same settings") as err:
        train(_cfg(dataset, run, epochs=2, **change), log=lambda *_: None)
    assert says in str(err.value)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_refusal_is_one_line_exit_2(dataset, run, capsys):
    rc, _, err = run_cli(train_cli.main, [dataset, "--out", run, "--epochs", "2", "--img-size", "64",
                                          "--val-fraction", "0.25", "--seed", "3"], capsys)
    assert rc == 2 and "--seed 42, not --seed 3" in one_error_line(err, "cmunext-train"), err


def test_settings_that_do_not_define_the_run_may_change_on_resume(dataset, run, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(run, out)
    logs = []
    state = train(_cfg(dataset, out, epochs=2, lr=0.005, threads=1, init="cmunext-s-busi"), log=logs.append)
    assert state["epoch"] == 2 and any("--lr 0.01 -> 0.005" in line for line in logs), logs
    assert any("--init cmunext-s-busi is not used: the run resumes with the weights of" in line for line in logs)


def test_a_runs_best_pth_keeps_its_training_size(run, tmp_path):
    split = json.loads((run / "split.json").read_text())
    assert split["img_size"] == 64 and split["variant"] == "cmunext-s"
    assert load_checkpoint(run / "best.pth").spec.size == (64, 64)
    assert inspect_checkpoint(run / "best.pth").spec.size == (64, 64)
    alone = tmp_path / "best.pth"                        # without its split.json: the official 256
    shutil.copy(run / "best.pth", alone)
    assert load_checkpoint(alone).spec.size == (256, 256)


def test_a_runs_last_pt_is_read_with_its_split_at_its_training_size(run, capsys):
    """Before: split.json listed only best.*, so cmunext-info (and export) on the run's own last.pt
    said its split.json "belongs to another cmunext-train run" and read it at 256 x 256."""
    from cmunext_edge.cli import info as info_cli
    assert load_checkpoint(run / "last.pt").spec.size == (64, 64)
    assert info_cli.main([str(run / "last.pt")]) == 0
    out, err = capsys.readouterr()
    assert "resize to 64x64" in out and "another cmunext-train run" not in err, err


def test_an_unreadable_image_is_skipped_reported_and_recorded(dataset, tmp_path, capsys):
    data = tmp_path / "ds"
    shutil.copytree(dataset, data)
    bad = sorted((data / "images").glob("*.png"))[0]
    bad.write_bytes(bad.read_bytes()[:200])                     # truncated
    out = tmp_path / "r"
    rc, printed, err = run_cli(train_cli.main, [data, "--out", out, "--epochs", "1", "--img-size", "64",
                                                "--batch-size", "4", "--val-fraction", "0.25"], capsys)
    assert rc == 1 and f"skipped: {bad}" in printed and "1 image(s) could not be used" in err, (printed, err)
    split = json.loads((out / "split.json").read_text())
    assert list(split["skipped"]) == [bad.stem] and bad.stem not in split["train"] + split["val"]
    assert len(split["train"]) + len(split["val"]) == 15 and (out / "best.pth").is_file()
    shutil.copy(dataset / "images" / bad.name, bad)             # fixed, then the run resumed: it keeps its
    rc, printed, err = run_cli(train_cli.main, [data, "--out", out, "--epochs", "2", "--img-size", "64",   # split
                                                "--batch-size", "4", "--val-fraction", "0.25"], capsys)
    assert rc == 1 and f"skipped: {bad}" not in printed, printed       # not read again, so not called unreadable now
    assert "left out when this run started stay out" in printed and "a new --out" in printed, printed


def test_a_training_image_replaced_under_its_name_stops_the_resume(dataset, run, tmp_path, capsys):
    """Before: a resumed run matched its images by name only, so other pixels under a training
    image's name were trained on silently. Now its recorded fingerprints must match."""
    data, out = tmp_path / "ds", tmp_path / "r"
    shutil.copytree(dataset, data)
    shutil.copytree(run, out)
    split = json.loads((out / "split.json").read_text())
    import cv2
    swapped = str(data / "images" / f"{split['train'][0]}.png")
    cv2.imwrite(swapped, 255 - cv2.imread(swapped))            # same size, other pixels
    rc, _, err = run_cli(train_cli.main, [data, "--out", out, "--epochs", "2", "--img-size", "64",
                                          "--val-fraction", "0.25"], capsys)
    line = one_error_line(err, "cmunext-train")
    assert rc == 2 and "1 of its training images" in line and repr(split["train"][0]) in line, err
    assert json.loads((out / "split.json").read_text()) == split                 # nothing rewritten


def test_a_split_naming_images_no_longer_in_the_dataset_is_one_line(dataset, run, tmp_path, capsys):
    data, out = tmp_path / "ds", tmp_path / "r"
    shutil.copytree(dataset, data)
    shutil.copytree(run, out)
    gone = json.loads((out / "split.json").read_text())["train"][0]
    (data / "images" / f"{gone}.png").unlink()
    rc, _, err = run_cli(train_cli.main, [data, "--out", out, "--epochs", "2", "--img-size", "64",
                                          "--val-fraction", "0.25"], capsys)
    assert rc == 2 and "no longer in" in one_error_line(err, "cmunext-train"), err


def test_a_best_checkpoint_without_last_pt_is_not_replaced_by_a_fresh_run(dataset, run, tmp_path, capsys):
    """Before: --out holding a finished run's best.* whose last.pt was removed (it is the big file)
    started a fresh run that replaced best.pth and best.safetensors after its first epoch."""
    kept = tmp_path / "kept"
    shutil.copytree(run, kept)
    (kept / "last.pt").unlink()
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    rc, _, err = run_cli(train_cli.main, [dataset, "--out", kept, "--epochs", "1", "--img-size", "64",
                                          "--val-fraction", "0.25"], capsys)
    line = one_error_line(err, "cmunext-train")
    assert rc == 2 and "no last.pt to resume" in line and "best.pth, best.safetensors" in line, err
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
