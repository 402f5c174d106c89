"""Reliability, round five: what a user's mistakes with train, bench, export, keys and bundle broke.

A bench report written over the model it measured (exit 0), a split file listing one image 49
times that made an export 'verified' on 49 images, options without an upper bound (a batch of
100000 was killed at 22 GB, --lr 1e30 wrote NaN weights with exit 0), an empty --out that wrote
into the current folder, --name ../x, --device cuda without CUDA as an 'unexpected' error."""
import json
import shutil

import pytest

from cmunext_edge.cli import bench as bench_cli
from cmunext_edge.cli import bundle as bundle_cli
from cmunext_edge.cli import check as check_cli
from cmunext_edge.cli import compare as compare_cli
from cmunext_edge.cli import export as export_cli
from cmunext_edge.cli import info as info_cli
from cmunext_edge.cli import keys as keys_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.cli import train as train_cli
from cmunext_edge.resources import SAMPLES_DIR

from test_reliability import one_error_line, onnx_art, run_cli  # noqa: F401  (onnx_art: a fixture)


def test_bench_never_writes_a_report_over_its_inputs(onnx_art, tmp_path, capsys):
    art = tmp_path / "m" / onnx_art.name
    art.parent.mkdir()
    for f in (onnx_art, onnx_art.parent / "manifest.json"):
        shutil.copy(f, art.parent / f.name)
    before = art.read_bytes()
    for outputs, says in ((["--json", art], "is an input of this run"),
                          (["--markdown", art.parent / "manifest.json"], "is an input of this run"),
                          (["--json", tmp_path / "r", "--markdown", tmp_path / "r"], "name the same file")):
        rc, _, err = run_cli(bench_cli.main, [art, "--iters", "1", "--warmup", "0", *outputs], capsys)
        assert rc == 2 and says in one_error_line(err, "cmunext-bench"), err
    assert art.read_bytes() == before and not (tmp_path / "r").exists()


def test_a_split_file_naming_an_image_twice_is_refused(tmp_path, capsys):
    split = tmp_path / "val.txt"
    split.write_text("benign (100)\n" * 49)
    rc, _, err = run_cli(predict_cli.main, [SAMPLES_DIR, "--split", split, "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "more than once (e.g. 'benign (100)' 49 times)" in one_error_line(err, "cmunext-predict")


BOUND, EMPTY = "out of range", "--out: is empty: give a path"


@pytest.mark.parametrize("main,argv,says", [
    (export_cli.main, ["--weights", "cmunext-s-busi", "--batch", "100000"], BOUND),
    (export_cli.main, ["--weights", "cmunext-s-busi", "--imgsz", "25600"], BOUND),
    (export_cli.main, ["--weights", "cmunext-s-busi", "--opset", "7"], BOUND),     # was 'unexpected'
    (predict_cli.main, [SAMPLES_DIR, "--out", "o", "--max-pixels", str(2 ** 41)], BOUND),
    (train_cli.main, [SAMPLES_DIR, "--out", "t", "--lr", "1e30"], BOUND),
    (train_cli.main, [SAMPLES_DIR, "--out", "t", "--epochs", str(10 ** 20)], BOUND),
    (train_cli.main, [SAMPLES_DIR, "--out", "t", "--img-size", "8192"], BOUND),
    (bench_cli.main, ["cmunext-s-busi", "--min-time", "1e308"], BOUND),
    (train_cli.main, [SAMPLES_DIR, "--out", ""], EMPTY),           # an empty --out was the current folder
    (keys_cli.main, ["new", "--out", " "], EMPTY),
    (export_cli.main, ["--weights", "cmunext-s-busi", "--out", ""], EMPTY),
    (compare_cli.main, ["x.json", "--out", ""], EMPTY),
])
def test_options_have_upper_bounds_and_out_is_never_empty(main, argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(main, argv, capsys)
    prog = "cmunext-" + main.__module__.rsplit(".", 1)[1] + (" new" if argv[0] == "new" else "")
    line = one_error_line(err, prog)
    option = argv[-2]                                        # the option whose value is refused
    assert rc == 2 and says in line and option in line and err.count("\n") == 1, err
    if says == BOUND:
        assert f"argument {option}: {argv[-1]} is out of range" in line, line
    assert list(tmp_path.iterdir()) == []


def test_an_empty_bundle_out_is_refused(onnx_art, tmp_path, capsys):
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", ""], capsys)
    assert rc == 2 and "--out: is empty" in one_error_line(err, "cmunext-bundle") and err.count("\n") == 1, err


def test_export_name_must_be_a_plain_file_name(tmp_path, capsys):
    rc, _, err = run_cli(export_cli.main, ["--weights", "cmunext-s-busi", "--target", "onnx", "--name", "../x",
                                           "--out", tmp_path / "out"], capsys)
    assert rc == 2 and "--name must be a plain file name" in one_error_line(err, "cmunext-export"), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("device,says", [("tpu", "--device must be cpu or cuda"),
                                         ("cuda:x", "--device must be cpu or cuda"),
                                         ("cuda:99", "PyTorch sees no such CUDA device")])
def test_train_device_is_checked_before_anything_is_written(device, says, tmp_path, capsys):
    pytest.importorskip("torch")
    rc, _, err = run_cli(train_cli.main, [SAMPLES_DIR, "--out", tmp_path / "run", "--device", device,
                                          "--epochs", "1"], capsys)
    assert rc == 2 and says in one_error_line(err, "cmunext-train"), err
    assert not (tmp_path / "run").exists()


def test_train_out_inside_the_dataset_images_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    before = sorted(p.name for p in (data / "images").iterdir())
    rc, _, err = run_cli(train_cli.main, [data, "--out", data / "images" / "run", "--epochs", "1"], capsys)
    assert rc == 2 and "lies inside the dataset's images/ folder" in one_error_line(err, "cmunext-train"), err
    assert sorted(p.name for p in (data / "images").iterdir()) == before


def test_the_split_records_what_chose_it_and_names_unpaired_images(tmp_path):
    pytest.importorskip("torch")
    from cmunext_edge.train.recipe import TrainConfig, make_split
    data = tmp_path / "ds"
    shutil.copytree(SAMPLES_DIR, data)
    unpaired = data / "images" / "unpaired.png"
    shutil.copy(next((data / "images").glob("*.png")), unpaired)
    names = sorted(p.stem for p in (data / "masks" / "0").glob("*.png"))
    val = tmp_path / "val.txt"
    val.write_text("\n".join(names[:4]))
    said = []
    split = make_split(TrainConfig(data=str(data), out=str(tmp_path / "r"), val_list=str(val)), said.append)
    assert split["val_fraction"] is None and split["val_list"] == str(val) and split["val"] == names[:4]
    assert any("1 image(s)" in line and "'unpaired'" in line for line in said), said
    val.write_text("\n".join(names))
    with pytest.raises(ValueError, match="none is left to train on"):
        make_split(TrainConfig(data=str(data), out=str(tmp_path / "r"), val_list=str(val)), said.append)
    json.dumps(split)                                                    # what split.json holds


@pytest.mark.parametrize("cli", ["predict", "export", "bench", "bundle", "check", "compare", "serve", "train", "info",
                                 "keys", "demo"])
def test_a_usage_error_is_one_line_without_the_usage_block(cli, capsys):
    import importlib
    main = importlib.import_module(f"cmunext_edge.cli.{cli}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--no-such-option"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith(f"cmunext-{cli}: error:") and f"cmunext-{cli} --help" in err


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    import subprocess
    import sys
    info = subprocess.Popen([sys.executable, "-m", "cmunext_edge.cli.info", "cmunext-s-busi", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    info.stdout.close()                                  # the reader is gone before anything is printed
    err = info.stderr.read().decode()
    assert info.wait(timeout=120) == 141 and "Broken pipe" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("main,argv,says", [
    (train_cli.main, [SAMPLES_DIR, "--out", "a_file", "--epochs", "1"], "--out a_file exists and is not a folder"),
    (train_cli.main, [SAMPLES_DIR, "--out", "a_file/run", "--epochs", "1"], "a_file is not a folder"),
    (train_cli.main, [SAMPLES_DIR, "--out", "run", "--init", "a_file", "--epochs", "1"], "--init: a_file: not a PyTorch checkpoint"),
    (bench_cli.main, [], "give at least one ARTIFACT"),
    (bench_cli.main, ["cmunext-s-busi", "--data", "nowhere"], "--data nowhere: no such file or folder"),
    (keys_cli.main, ["new", "--out", "."], "is a folder; --out is the key files' path prefix"),
    (keys_cli.main, ["--frob"], "unrecognized arguments: --frob"),     # was "required: command"
    (keys_cli.main, [], "give a command: new, sign or verify"),
])
def test_outputs_and_inputs_are_checked_before_any_work(main, argv, says, tmp_path, capsys, monkeypatch):
    """A train run that cached its data, a demo that segmented all samples, a bench that prepared
    its images: each before refusing an --out that is a file or a missing --data/--init. Now one
    line and exit 2 before anything is read or written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder, not a checkpoint\n")
    rc, out, err = run_cli(main, argv, capsys)
    prog = main.__module__.rsplit(".", 1)[1]
    assert rc == 2 and says in one_error_line(err, f"cmunext-{prog}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and out == ""


def test_demo_refuses_an_out_it_cannot_write_before_segmenting(tmp_path, capsys):
    from cmunext_edge.cli import demo as demo_cli
    (tmp_path / "a_file").write_text("")
    rc, out, err = run_cli(demo_cli.main, ["--out", tmp_path / "a_file" / "demo", "--skip-export"], capsys)
    assert rc == 2 and "is not a folder" in one_error_line(err, "cmunext-demo") and out == "", (out, err)


def test_a_failed_bundle_keeps_the_previous_one_and_leaves_nothing_new(onnx_art, tmp_path, capsys):
    """The previous bundle of the same artifact was deleted before the new one was made, so a
    failing run lost it; an --out the run had made stayed behind empty. Now the new bundle is made
    aside and swapped in only when whole."""
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", tmp_path / "b", "--n-images", "2", "--no-archive"], capsys)
    assert rc == 0, err
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    for argv, says in (([onnx_art, "--out", tmp_path / "b", "--images", tmp_path / "none"], "no such file or folder"),
                       ([onnx_art, "--out", tmp_path / "new" / "deeper", "--images", tmp_path / "none"], "no such file"),
                       ([onnx_art.parent, "--out", tmp_path / "b"], "a folder, not an artifact file"),
                       ([onnx_art, "--out", tmp_path / "b" / f"{onnx_art.stem}.bundle" / "bundle.json" / "x"], "cannot be made")):
        rc, _, err = run_cli(bundle_cli.main, argv, capsys)
        assert rc == 2 and says in one_error_line(err, "cmunext-bundle"), err
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert after == before and not (tmp_path / "new").exists()
    assert [p.name for p in (tmp_path / "b").iterdir()] == [f"{onnx_art.stem}.bundle"]


def test_a_failed_publish_puts_the_previous_bundle_and_archive_back(tmp_path):
    """The new folder was swapped in before the archive moved; a failing archive move left the new
    folder in place and the old bundle deleted. Now every move is undone."""
    from cmunext_edge.device.bundle import _publish
    final = tmp_path / "m.bundle"
    final.mkdir()
    (final / "bundle.json").write_text("old")
    (tmp_path / "m.bundle.tar.gz").write_text("old archive")
    staging = tmp_path / ".m.bundle.staging-x"
    (staging / "m.bundle").mkdir(parents=True)
    (staging / "m.bundle" / "bundle.json").write_text("new")
    with pytest.raises(FileNotFoundError):           # the new archive is missing: its move fails
        _publish(staging / "m.bundle", staging / "m.bundle.tar.gz", final, staging)
    assert (final / "bundle.json").read_text() == "old"
    assert (tmp_path / "m.bundle.tar.gz").read_text() == "old archive"


def test_bundle_never_replaces_what_is_not_a_bundle_and_clears_its_own_stale_staging(onnx_art, tmp_path, capsys):
    """A file named like the bundle was silently replaced (exit 0); a SIGKILLed bundling's staging
    folder stayed for good; --no-archive left the previous bundle's archive, which no longer matched."""
    import subprocess
    import sys
    out, name = tmp_path / "b", f"{onnx_art.stem}.bundle"
    out.mkdir()
    (out / name).write_text("precious")
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", out, "--n-images", "2"], capsys)
    assert rc == 2 and "is not a bundle" in one_error_line(err, "cmunext-bundle") and (out / name).read_text() == "precious"
    (out / name).unlink()
    (out / f"{name}.tar.gz").mkdir()
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", out, "--n-images", "2"], capsys)
    assert rc == 2 and "is not a file: not replaced" in one_error_line(err, "cmunext-bundle")
    (out / f"{name}.tar.gz").rmdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, foreign = out / f".{name}.deadbeef.staging", out / f".{name}.staging-mine"   # ours / the user's
    for folder in (stale, foreign):
        (folder / "x").mkdir(parents=True)
    (stale / "owner.pid").write_text(gone.stdout)      # a process that has exited
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", out, "--n-images", "2"], capsys)
    assert rc == 0 and not stale.exists() and foreign.exists() and (out / f"{name}.tar.gz").is_file(), err
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", out, "--n-images", "3", "--no-archive"], capsys)
    assert rc == 0 and not (out / f"{name}.tar.gz").exists(), err
    assert sorted(p.name for p in out.iterdir()) == sorted([name, foreign.name])


def test_predict_says_when_its_artifact_was_not_verified_at_export(onnx_art, tmp_path, capsys):
    """describe()["verified"] is the load checks; an artifact exported with --no-verify ran with
    no word that PyTorch agreement was never checked. Now describe() carries the export's record
    and cmunext-predict notes an unverified one."""
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    with EdgeSegmenter.from_artifact(onnx_art) as seg:
        info = seg.describe()
    assert info["verified"] and info["export_verification"] == "NOT verified at export (--no-verify)"
    assert EdgeSegmenter().describe()["export_verification"] is None          # a checkpoint: no export
    rc, out, err = run_cli(predict_cli.main, [SAMPLES_DIR / "images" / "benign (100).png", "--weights", onnx_art,
                                              "--out", tmp_path / "o"], capsys)
    assert rc == 0 and "note: export verification: NOT verified at export (--no-verify)" in out, out + err


def test_debug_prints_the_traceback_of_errors_a_cli_catches_itself(tmp_path, capsys):
    """--debug promised a traceback, but cmunext-export (and others) catch their own errors and only
    printed the line; now every CLI's one error line is preceded by the traceback under --debug, once."""
    from cmunext_edge.cli import export as export_cli
    argv = ["--weights", str(tmp_path / "missing.pth"), "--target", "onnx", "--out", str(tmp_path / "o")]
    assert export_cli.main(argv) == 2
    plain = capsys.readouterr().err
    assert "Traceback" not in plain and plain.strip().endswith("missing.pth: no such file")
    assert export_cli.main([*argv, "--debug"]) == 2
    debug = capsys.readouterr().err
    assert debug.count("Traceback (most recent call last)") == 1 and "CheckpointError" in debug
    assert debug.strip().splitlines()[-1] == plain.strip()


def _careless(tmp_path):
    """What a careless user hands cmunext-info, cmunext-check and cmunext-compare: links to nothing,
    an IR without its .bin (or with a folder, or a link to nothing, in its place), a plan without
    its sidecar, a scan, a bundle's own files, an empty report, a FIFO."""
    import os
    scan = tmp_path / "scan.png"
    shutil.copy(next((SAMPLES_DIR / "images").glob("*.png")), scan)
    for name in ("gone.onnx", "gone", "gone.json", "gone.bundle"):
        (tmp_path / name).symlink_to(tmp_path / "nowhere" / name)
    for stem, bin_ in (("lone", None), ("bindir", "dir"), ("binlink", "link")):
        (tmp_path / f"{stem}.xml").write_text("<net/>")
        if bin_ == "dir":
            (tmp_path / f"{stem}.bin").mkdir()
        elif bin_ == "link":
            (tmp_path / f"{stem}.bin").symlink_to(tmp_path / "nowhere.bin")
    (tmp_path / "m.engine").write_bytes(b"plan")
    (tmp_path / "b" / "bundle.json").mkdir(parents=True)              # its manifest a folder
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bundle.json").write_text("{}")
    (tmp_path / "empty.json").write_text("")
    os.mkfifo(tmp_path / "fifo.json")


LINK = "a broken symbolic link (its target does not exist)"


@pytest.mark.parametrize("main,arg,says", [
    (info_cli.main, "", "argument path: is empty: give a path"),              # was: '. is a folder'
    (info_cli.main, "gone.onnx", f"gone.onnx: {LINK}, not an artifact file"),  # was: 'no such artifact'
    (info_cli.main, "gone", f"gone: {LINK}, not a checkpoint file"),    # was: 'neither a file nor a shipped model'
    (info_cli.main, "lone.xml", "lone.xml: lone.bin, which the OpenVINO IR needs beside it, is missing"),
    (info_cli.main, "bindir.xml", "bindir.xml: bindir.bin, which the OpenVINO IR needs beside it, is a folder"),
    (info_cli.main, "binlink.xml", f"binlink.xml: binlink.bin, which the OpenVINO IR needs beside it, is {LINK}"),
    (info_cli.main, "m.engine", "m.engine: m.engine.json, which the TensorRT plan needs beside it, is missing"),
    (check_cli.main, "", "argument bundle: is empty: give a path"),           # was: '.: not a bundle'
    (check_cli.main, "scan.png", "scan.png: a file, not a bundle folder or .tar.gz"),   # was: 'no bundle.json'
    (check_cli.main, "lone.xml", "lone.xml: a file, not a bundle folder or .tar.gz; it is an exported artifact: "
                                 "cmunext-bundle lone.xml makes its bundle"),
    (check_cli.main, "c/bundle.json", "c/bundle.json: a file, not a bundle folder or .tar.gz; it is a bundle's "
                                      "bundle.json: cmunext-check c checks that bundle"),
    (check_cli.main, "gone.bundle", f"gone.bundle: {LINK}"),          # was: 'no such bundle folder or .tar.gz'
    (check_cli.main, "b", "b: not a bundle (its bundle.json is a folder)"),       # was: 'no bundle.json'
    (compare_cli.main, "", "argument reports: is empty: give a path"),        # was: ': a folder, not a report'
    (compare_cli.main, "gone.json", f"gone.json: {LINK}, not a report"),        # was: 'no such report'
    (compare_cli.main, "empty.json", "empty.json: an empty file, not a report"),   # was: 'not a JSON file (Expecting...'
    (compare_cli.main, "fifo.json", "fifo.json: not a regular file (a FIFO, socket or device), not a report"),
])
def test_info_check_and_compare_name_a_wrong_path_and_what_is_wrong(main, arg, says, tmp_path, capsys, monkeypatch):
    """Each is one line, exit 2, naming the path given and what it is instead of what was wanted."""
    _careless(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(main, [arg], capsys)
    prog = main.__module__.rsplit(".", 1)[1]
    assert rc == 2 and err.count("\n") == 1 and says in one_error_line(err, f"cmunext-{prog}"), err


def test_check_names_a_folder_in_a_file_place_and_an_empty_hash_file(onnx_art, tmp_path, capsys):
    """An empty bundle.json.sha256 ended cmunext-check with 'unexpected IndexError'; an artifact
    replaced by a folder was 'missing'. Both are now the files check's failure (exit 1), said so."""
    rc, _, err = run_cli(bundle_cli.main, [onnx_art, "--out", tmp_path, "--n-images", "2", "--no-archive"], capsys)
    assert rc == 0, err
    bundle = tmp_path / f"{onnx_art.stem}.bundle"
    recorded = (bundle / "bundle.json.sha256").read_text()
    (bundle / "bundle.json.sha256").write_text("")
    rc, out, err = run_cli(check_cli.main, [bundle, "--iters", "1", "--warmup", "0"], capsys)
    assert rc == 1 and "bundle.json was modified" in out + err and "unexpected" not in out + err, out + err
    (bundle / "bundle.json.sha256").write_text(recorded)
    (bundle / "artifact" / onnx_art.name).unlink()
    (bundle / "artifact" / onnx_art.name).mkdir()
    rc, out, err = run_cli(check_cli.main, [bundle, "--iters", "1", "--warmup", "0"], capsys)
    assert rc == 1 and f"artifact/{onnx_art.name} is a folder" in out + err, out + err
