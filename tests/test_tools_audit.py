"""Audit of the tools around the model (cmunext-info, cmunext-compare, cmunext-check, cmunext-keys):
what each let through, as tests on real artifacts, bundles, reports and keys.

info passed a tampered artifact that had no manifest (the load refuses it) and a NaN checkpoint
(every other tool refuses it); compare wrote over its own input, repeated a report silently, wrote
NaN into JSON and let a newline break its table; check wrote its report over the bundle's own
manifest, found a bad --report only after the whole check, and extracted an archive over existing
files before the trust policy refused it; keys new followed a dangling link and left half a pair;
keys sign signed a tampered artifact; and several messages said "no such file" of a folder."""
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from cmunext_edge.cli import check as check_cli
from cmunext_edge.cli import compare as compare_cli
from cmunext_edge.cli import info as info_cli
from cmunext_edge.cli import keys as keys_cli

from test_reliability import one_error_line, onnx_art, run_cli  # noqa: F401  (onnx_art: a fixture)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "cmunext-s-busi.safetensors"
REPORTS = ROOT / "benchmarks" / "results" / "devices_arm49_2026-12-05_reports"


def _flip(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _alone(art: Path, folder: Path, flip: bool = False) -> Path:
    """The artifact copied without its manifest.json (only its embedded hash can vouch for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copy(art, folder / art.name))
    return _flip(copy) if flip else copy


def _with_manifest(art: Path, folder: Path, flip: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(art.parent / "manifest.json", folder / "manifest.json")
    return _alone(art, folder, flip)


# 1. info checks the embedded content hash of an artifact without a manifest entry

def test_info_refuses_a_tampered_artifact_without_manifest_like_the_load(onnx_art, tmp_path, capsys):
    from cmunext_edge.artifacts.integrity import IntegrityError
    from cmunext_edge.runtime.registry import open_backend
    good = _alone(onnx_art, tmp_path / "good")
    rc, out, err = run_cli(info_cli.main, [good], capsys)
    assert rc == 0, err
    assert "content hash embedded at export" in out and "MODIFIED" not in out
    bad = _alone(onnx_art, tmp_path / "bad", flip=True)
    with pytest.raises(IntegrityError, match="content sha256"):     # what a load says
        open_backend(bad)
    rc, out, err = run_cli(info_cli.main, [bad], capsys)
    assert rc == 1 and "MODIFIED OR DAMAGED" in out
    assert "content sha256" in one_error_line(err, "cmunext-info")
    rc, out, err = run_cli(info_cli.main, [bad, "--json"], capsys)
    check = json.loads(out)["files_check"]
    assert rc == 1 and check["ok"] is False and check["source"] == "embedded"


def test_info_still_checks_the_manifest_when_there_is_one(onnx_art, tmp_path, capsys):
    rc, out, _ = run_cli(info_cli.main, [_with_manifest(onnx_art, tmp_path / "m")], capsys)
    assert rc == 0 and "matches manifest.json" in out
    rc, _, err = run_cli(info_cli.main, [_with_manifest(onnx_art, tmp_path / "t", flip=True)], capsys)
    assert rc == 1 and "differs from manifest.json" in one_error_line(err, "cmunext-info")


# 2. info on a checkpoint holding a NaN weight

@pytest.fixture(scope="module")
def nan_checkpoints(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from cmunext_edge.checkpoints.weights import load_checkpoint, save_official_pth, save_safetensors
    if not SHIPPED.is_file():
        pytest.skip("no shipped model")
    folder = tmp_path_factory.mktemp("nan")
    ckpt = load_checkpoint(SHIPPED)
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    state["Conv_1x1.bias"][0] = float("nan")
    half = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in state.items()}
    return {"safetensors": save_safetensors(state, folder / "nan.safetensors", ckpt.spec),
            "bf16": save_safetensors(half, folder / "nan_bf16.safetensors", ckpt.spec),
            "pth": save_official_pth(state, folder / "nan.pth")}


@pytest.mark.parametrize("kind", ["safetensors", "bf16", "pth"])
def test_info_says_a_checkpoint_with_a_nan_weight_is_unusable(nan_checkpoints, kind, capsys):
    from cmunext_edge.checkpoints.inspect import CheckpointError
    from cmunext_edge.checkpoints.weights import load_checkpoint
    path = nan_checkpoints[kind]
    if kind != "bf16":
        with pytest.raises(CheckpointError, match="NaN or infinite"):      # what every other tool does
            load_checkpoint(path)
    rc, out, err = run_cli(info_cli.main, [path], capsys)
    assert rc == 1 and "NOT FINITE" in out and "Conv_1x1.bias" in out
    assert "NaN or infinite" in one_error_line(err, "cmunext-info")
    rc, out, _ = run_cli(info_cli.main, [path, "--json"], capsys)
    assert rc == 1 and json.loads(out)["weights_finite"] is False


def test_info_on_the_shipped_model_checks_its_weights_without_torch(capsys):
    if not SHIPPED.is_file():
        pytest.skip("no shipped model")
    assert info_cli._safetensors_nonfinite(SHIPPED) == []          # the numpy reader, no torch
    rc, out, _ = run_cli(info_cli.main, ["cmunext-s-busi"], capsys)
    assert rc == 0 and "every value finite" in out


# 3. compare: its output never replaces a report it reads; duplicates, NaN, newlines

def _report(name: str = "host_ov-int8.json") -> dict:
    path = REPORTS / name
    if not path.is_file():
        pytest.skip(f"no {path}")
    return json.loads(path.read_text())


def test_compare_refuses_an_out_prefix_that_would_replace_its_input(tmp_path, capsys):
    (tmp_path / "cmp").mkdir()
    rep = tmp_path / "cmp" / "r1.json"
    rep.write_text(json.dumps(_report()))
    before = rep.read_bytes()
    rc, out, err = run_cli(compare_cli.main, [rep, "--out", tmp_path / "cmp" / "r1"], capsys)
    assert rc == 2 and "would be overwritten" in one_error_line(err, "cmunext-compare")
    assert rep.read_bytes() == before and sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["r1.json"]
    rc, _, err = run_cli(compare_cli.main, [rep, "--out", tmp_path / "cmp"], capsys)     # cmp.md beside cmp/
    assert rc == 0, err


def test_compare_shows_a_report_given_twice_once_with_a_note(tmp_path, capsys):
    rep = tmp_path / "r.json"
    rep.write_text(json.dumps(_report()))
    copy = Path(shutil.copy(rep, tmp_path / "copy.json"))
    rc, out, err = run_cli(compare_cli.main, [rep, rep, copy, "--out", tmp_path / "cmp"], capsys)
    assert rc == 0
    assert f"{rep}: given twice; shown once" in err and f"{copy}: the same report as {rep}" in err
    assert len(json.loads((tmp_path / "cmp.json").read_text())["rows"]) == 1


def test_compare_writes_null_for_nan_and_never_calls_it_a_pass(tmp_path, capsys):
    rep = _report()
    assert rep["passed"] is True
    rep["agreement"]["mask_dice_mean"] = float("nan")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(rep))                   # Python writes NaN, which json.loads accepts
    rc, out, err = run_cli(compare_cli.main, [path, "--out", tmp_path / "cmp"], capsys)
    assert rc == 0, err
    text = (tmp_path / "cmp.json").read_text()
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))["rows"][0]
    assert row["agreement"] is None and row["passed"] is False and ": NaN" not in text
    line = next(ln for ln in out.splitlines() if ln.startswith("| ") and "device" not in ln)
    assert "FAIL: agreement not a finite number" in line and "| pass |" not in line


@pytest.mark.parametrize("edit", [{"n": 5}, {"n": "5", "n_bad": 0, "bad_share_upper95": 0.4},
                                  {"n": 5, "n_bad": 0, "bad_share_upper95": "x"}])
def test_compare_names_an_edited_distribution_as_such(tmp_path, capsys, edit):
    rep = _report()
    rep["agreement"]["distribution"] = edit
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(rep))
    rc, _, err = run_cli(compare_cli.main, [path], capsys)
    line = one_error_line(err, "cmunext-compare")
    assert rc == 2 and "unexpected" not in line and "edited device report" in line and str(path) in line, line


def test_compare_keeps_the_table_whole_with_a_newline_or_bar_in_a_label(tmp_path, capsys):
    rep = _report()
    rep["label"] = "evil\n| injected | row |\nmore"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rep))
    rc, out, _ = run_cli(compare_cli.main, [path, "--title", "two\nlines"], capsys)
    assert rc == 0
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert len(table) == 3 and "evil / injected / row / more" in table[2]
    assert table[2].count(" | ") == len(table[0].split(" | ")) - 1
    assert "## two lines" in out


# 4. check --report: checked before the check, never a file of the bundle

@pytest.fixture(scope="module")
def bundle_made(onnx_art, tmp_path_factory):
    from cmunext_edge.device.bundle import make_bundle
    return make_bundle(onnx_art, tmp_path_factory.mktemp("bundle"), n_images=2)


@pytest.fixture
def bundle(bundle_made, tmp_path):
    return Path(shutil.copytree(bundle_made.folder, tmp_path / bundle_made.folder.name))


def _check(argv, capsys):
    return run_cli(check_cli.main, [*argv, "--iters", "1", "--warmup", "0", "--quiet"], capsys)


@pytest.mark.parametrize("where,says", [
    ("bundle.json", "is a file this check reads"),
    ("bundle.json.sha256", "is a file this check reads"),
    ("preprocess.json", "is a file this check reads"),
    ("verify/reference.npz", "is a file this check reads"),
    ("artifact/report.json", "lies in the bundle's artifact/ folder"),
])
def test_check_report_never_names_a_file_of_the_bundle(bundle, capsys, where, says):
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    rc, _, err = _check([bundle, "--report", bundle / where], capsys)
    assert rc == 2 and says in one_error_line(err, "cmunext-check")
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    rc, _, err = _check([bundle], capsys)                 # the bundle is still one, and passes
    assert rc == 0, err


def test_check_report_is_checked_before_the_check_runs(bundle, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for report, says in (("", "--report is empty"), (tmp_path, "is a folder"),
                         (afile / "r.json", "is not a folder")):
        rc, out, err = _check([bundle, "--report", report], capsys)
        assert rc == 2 and says in one_error_line(err, "cmunext-check") and "Errno" not in err
        assert not (bundle / "device_report.json").exists()           # the check did not run
    rc, _, err = _check([bundle, "--report", tmp_path / "new" / "dir" / "r.json"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "new" / "dir" / "r.json").read_text())["passed"] is True


def test_check_report_is_not_a_trusted_key(bundle, keys, capsys):
    pub = keys["release"][1]
    before = pub.read_bytes()
    rc, _, err = _check([bundle, "--trusted-key", pub, "--report", pub], capsys)
    assert rc == 2 and "is a file this check reads" in one_error_line(err, "cmunext-check")
    assert pub.read_bytes() == before


# 5. an archive is checked in a staging folder; nothing already there is ever replaced

def _member(name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def test_a_refused_archive_leaves_nothing_and_replaces_nothing(tmp_path, keys, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    archive = tmp_path / "update.bundle.tar.gz"
    manifest = json.dumps({"format": "cmunext-edge device bundle", "files": {}, "artifact": "x.onnx"}).encode()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("victim/bundle.json", manifest), ("victim/notes.txt", b"attacker's")):
            tar.addfile(*_member(name, data))
    rc, _, err = _check([archive, "--trusted-key", keys["release"][1]], capsys)
    assert rc == 2 and "refused by the trust policy" in one_error_line(err, "cmunext-check")
    assert (victim / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]          # no report written there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["update.bundle.tar.gz", "victim"]


def test_an_archive_checked_twice_goes_to_a_new_folder_each_time(bundle_made, tmp_path, capsys):
    archive = Path(shutil.copy(bundle_made.archive, tmp_path / bundle_made.archive.name))
    name = bundle_made.folder.name
    rc, out, err = _check([archive], capsys)
    assert rc == 0, err
    first = tmp_path / name
    assert json.loads((first / "device_report.json").read_text())["bundle"]["path"] == str(first)
    (first / "device_report.json").write_text("the first check's report")
    rc, out, err = _check([archive], capsys)
    assert rc == 0, err
    second = tmp_path / f"{name}-2"
    assert (first / "device_report.json").read_text() == "the first check's report"     # not replaced
    assert json.loads((second / "device_report.json").read_text())["passed"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, name, f"{name}-2"])


def test_read_bundle_of_an_archive_never_merges_into_an_existing_folder(bundle_made, tmp_path):
    """The API's read_bundle merged an archive over a folder of the same name (files replaced):
    it now stages and publishes like cmunext-check does."""
    from cmunext_edge.device.bundle import read_bundle
    archive = Path(shutil.copy(bundle_made.archive, tmp_path / bundle_made.archive.name))
    mine = tmp_path / bundle_made.folder.name
    mine.mkdir()
    (mine / "bundle.json").write_text("mine")
    folder, manifest = read_bundle(archive)
    assert folder == tmp_path / f"{mine.name}-2" and manifest["format"] == "cmunext-edge device bundle"
    assert (mine / "bundle.json").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["bundle.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]        # no staging folder left


# 6. keys new: both files or neither, never through a link

def test_keys_new_refuses_a_dangling_link_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("model_signing")
    folder = tmp_path / "k"
    folder.mkdir()
    os.symlink(tmp_path / "elsewhere" / "stolen.pem", folder / "b.pub.pem")
    rc, _, err = run_cli(keys_cli.main, ["new", "--out", folder / "b"], capsys)
    assert rc == 2 and f"{folder / 'b.pub.pem'} exists (a symbolic link)" in one_error_line(err, "cmunext-keys")
    assert sorted(p.name for p in folder.iterdir()) == ["b.pub.pem"] and not (tmp_path / "elsewhere").exists()
    (folder / "b.pub.pem").unlink()
    rc, out, err = run_cli(keys_cli.main, ["new", "--out", folder / "b"], capsys)
    assert rc == 0 and sorted(p.name for p in folder.iterdir()) == ["b.pem", "b.pub.pem"], err


def test_a_key_pair_whose_public_key_cannot_be_written_leaves_no_private_key(tmp_path):
    pytest.importorskip("model_signing")
    from cmunext_edge.artifacts.signing import KeyWriteError, new_key_pair
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KeyWriteError, match="was removed again") as info:
        new_key_pair(tmp_path / "b.pem", tmp_path / "afile" / "b.pub.pem")
    assert str(tmp_path / "afile" / "b.pub.pem") in str(info.value) and "Errno" not in str(info.value)
    assert not (tmp_path / "b.pem").exists()
    new_key_pair(tmp_path / "b.pem", tmp_path / "b.pub.pem")          # a rerun is not refused
    assert (tmp_path / "b.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "b.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


# 7. keys sign refuses an artifact whose files no longer match

@pytest.mark.parametrize("copy", [_with_manifest, _alone])
def test_keys_sign_refuses_a_tampered_artifact(onnx_art, tmp_path, keys, capsys, copy):
    bad = copy(onnx_art, tmp_path / "bad", flip=True)
    rc, _, err = run_cli(keys_cli.main, ["sign", bad, "--key", keys["release"][0]], capsys)
    line = one_error_line(err, "cmunext-keys")
    assert rc == 2 and "refused to sign" in line and ("manifest.json" in line or "content sha256" in line)
    assert not (bad.parent / f"{bad.name}.sig").exists()
    good = copy(onnx_art, tmp_path / "good")
    rc, out, err = run_cli(keys_cli.main, ["sign", good, "--key", keys["release"][0]], capsys)
    assert rc == 0 and (good.parent / f"{good.name}.sig").is_file(), err


# 8. messages that name what the file is

def test_info_names_folders_bundles_and_openvino_weights(bundle_made, tmp_path, capsys):
    weights_bin = tmp_path / "model.bin"
    weights_bin.write_bytes(b"\x00" * 64)
    cases = ((tmp_path, "is a folder; cmunext-info reads"),
             (bundle_made.folder, f"is a device bundle folder: cmunext-check {bundle_made.folder}"),
             (bundle_made.archive, "is a device bundle archive, not a model file: cmunext-check"),
             (weights_bin, f"OpenVINO IR (or another binary file); cmunext-info reads the IR's .xml: "
                           f"cmunext-info {tmp_path / 'model.xml'} (not found beside it)"))
    for path, says in cases:
        rc, _, err = run_cli(info_cli.main, [path], capsys)
        line = one_error_line(err, "cmunext-info")
        assert rc == 2 and says in line and "no such file" not in line and "PyTorch" not in line, line
    rc, _, err = run_cli(info_cli.main, [bundle_made.folder], capsys)
    assert f"cmunext-info {bundle_made.folder / bundle_made.manifest['artifact']}" in err


def test_keys_name_a_folder_as_a_folder(onnx_art, tmp_path, keys, capsys):
    rc, _, err = run_cli(keys_cli.main, ["verify", onnx_art, "--trusted-key", tmp_path], capsys)
    assert rc == 2 and f"trusted key {tmp_path}: a folder" in one_error_line(err, "cmunext-keys")
    rc, _, err = run_cli(keys_cli.main, ["sign", onnx_art, "--key", tmp_path], capsys)
    assert rc == 2 and f"--key {tmp_path}: a folder" in one_error_line(err, "cmunext-keys")
    rc, _, err = run_cli(keys_cli.main, ["sign", tmp_path, "--key", keys["release"][0]], capsys)
    assert rc == 2 and "a folder" in one_error_line(err, "cmunext-keys")
