"""Verified load (issue 12): a tampered artifact never runs silently; the self-test covers the
preprocessing contract and threshold; a damaged self-test digest is a failure, not a crash."""
import json
import shutil

import numpy as np
import pytest

from cmunext_edge.artifacts.meta import check_selftest, make_selftest, selftest_input
from cmunext_edge.cli import bench as bench_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.artifacts.integrity import IntegrityError
from cmunext_edge.runtime.registry import verify_artifact
from cmunext_edge.core.preprocess import PreprocessSpec, get_preset
from cmunext_edge.runtime.segmenter import EdgeSegmenter

from test_reliability import run_cli

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture
def onnx_art(onnx_trained):
    """The session's verified ONNX of the shipped model (conftest): tests change only copies."""
    return onnx_trained.artifact


def _flip(path, offset_fraction=0.5):
    data = bytearray(path.read_bytes())
    i = int(len(data) * offset_fraction)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _copy(art, folder, with_manifest=True):
    folder.mkdir()
    shutil.copy(art, folder / art.name)
    if with_manifest:
        shutil.copy(art.parent / "manifest.json", folder / "manifest.json")
    return folder / art.name


def test_untouched_artifact_is_verified_by_manifest_and_embedded_hash(onnx_art, tmp_path):
    rep = verify_artifact(onnx_art)
    assert rep.ok and rep.hash_source == "manifest" and rep.selftest["status"] == "pass"
    alone = _copy(onnx_art, tmp_path / "alone", with_manifest=False)
    rep = verify_artifact(alone)
    assert rep.ok and rep.hash_source == "embedded"
    seg = EdgeSegmenter.from_artifact(alone)
    assert "verified" in seg.describe()["verified"]


@pytest.mark.parametrize("with_manifest", [True, False])
def test_flipped_byte_is_refused_before_inference(onnx_art, tmp_path, with_manifest):
    art = _copy(onnx_art, tmp_path / "t", with_manifest)
    _flip(art)
    with pytest.raises(IntegrityError, match="manifest.json" if with_manifest else "embedded"):
        EdgeSegmenter.from_artifact(art)
    rep = verify_artifact(art)
    assert not rep.ok and rep.hash_source == ("manifest" if with_manifest else "embedded")
    assert ("differs from manifest.json" if with_manifest else "differs from the hash embedded at export") \
        in rep.message(), rep.message()


def test_flipped_artifact_cli_exit_2_no_traceback(onnx_art, tmp_path, capsys):
    from cmunext_edge.resources import SAMPLES_DIR
    art = _copy(onnx_art, tmp_path / "t")
    _flip(art)
    rc = predict_cli.main([str(SAMPLES_DIR), "--weights", str(art), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "refused" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "masks").exists()
    rc = bench_cli.main([str(art), "--iters", "2", "--warmup", "0", "--throughput-time", "0",
                         "--matmul-time", "0", "--quiet"])
    out = capsys.readouterr()
    assert rc == 2 and "refused" in out.out + out.err        # the only row failed: nothing measured


def _flip_a_weight(art):
    """Flips one byte inside the largest initializer's raw data: the graph stays loadable, only a
    weight changes (a flip at a fixed offset of the file could land in the graph instead)."""
    weights = max(onnx.load(str(art)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data = bytearray(art.read_bytes())
    start = data.find(weights)
    assert start > 0 and data.count(weights[:256]) == 1
    data[start + len(weights) // 2] ^= 0xFF
    art.write_bytes(bytes(data))


def test_opt_out_loads_a_modified_artifact(onnx_art, tmp_path):
    art = _copy(onnx_art, tmp_path / "t")
    _flip_a_weight(art)
    with pytest.raises(IntegrityError, match="differs from manifest.json"):
        EdgeSegmenter.from_artifact(art)                   # the default refuses it ...
    seg = EdgeSegmenter.from_artifact(art, verify=False)  # ... the opt-out loads and runs it, unverified
    assert seg.describe()["verified"] is None
    assert seg.segment(np.full((64, 48, 3), 90, np.uint8)).mask.shape == (64, 48)


def _edit_metadata(art, key, change):
    model = onnx.load(str(art))
    for prop in model.metadata_props:
        if prop.key == "cmunext_edge." + key:
            prop.value = change(prop.value)
    onnx.save(model, str(art))


@pytest.mark.parametrize("field, value, expect", [("threshold", 0.9, "threshold"),
                                                  ("mean", [0.5, 0.5, 0.5], "mean"),
                                                  ("extra_scale", 1.0, "extra_scale")])
def test_edited_preprocessing_or_threshold_fails_the_self_test_naming_it(onnx_art, tmp_path, field, value,
                                                                         expect):
    art = _copy(onnx_art, tmp_path / "t", with_manifest=False)

    def change(text):
        spec = json.loads(text)
        spec[field] = value
        return json.dumps(spec)
    _edit_metadata(art, "preprocess", change)
    with pytest.raises(IntegrityError, match="embedded"):      # the hash sees the edit first
        EdgeSegmenter.from_artifact(art)
    seg = EdgeSegmenter.from_artifact(art, verify=False)
    result = seg.self_test()                # without the hash, the self-test names the change
    assert not result.passed and expect in result.message and "changed after export" in result.message
    assert "numpy/OpenCV" not in result.message


def test_a_threshold_key_that_disagrees_with_the_contract_is_refused(onnx_art, tmp_path):
    # the key edited and manifest.json re-hashed to match (what a careless "fix" would do): the
    # self-test passes (the contract is intact), but the two thresholds disagree, as C++ refuses too
    import hashlib
    art = _copy(onnx_art, tmp_path / "t")
    _edit_metadata(art, "threshold", lambda _: "0.9")
    manifest = json.loads((art.parent / "manifest.json").read_text())
    for f in manifest["artifacts"][art.name]["files"]:
        if f["name"] == art.name:
            f["sha256"], f["bytes"] = hashlib.sha256(art.read_bytes()).hexdigest(), art.stat().st_size
    (art.parent / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="threshold 0.9 in the metadata differs from the contract's 0.5"):
        EdgeSegmenter.from_artifact(art)
    assert EdgeSegmenter.from_artifact(art, verify=False).backend.spec.threshold == 0.5


def _digest():
    spec = get_preset("official")
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (1, 1, spec.height, spec.width)).astype(np.float32)
    return spec, logits, make_selftest(spec, logits, "fp32")


def test_threshold_change_fails_the_self_test():
    spec, logits, st = _digest()
    assert check_selftest(st, spec, lambda x: logits).passed
    edited = spec.with_size(spec.height).__class__(**{**json.loads(spec.to_json()), "threshold": 0.9,
                                                      "mean": tuple(spec.mean), "std": tuple(spec.std)})
    res = check_selftest(st, edited, lambda x: logits)
    assert not res.passed and "threshold 0.9" in res.message


@pytest.mark.parametrize("field, value", [("channel_order", "rgb"), ("interpolation", "nearest"),
                                          ("interpolation", "area"), ("interpolation", "cubic")])
def test_channel_order_or_resize_edited_in_the_selftest_copy_too_fails(field, value):
    """The self-test input is gray at network size; the contract probe shows these edits, even when the
    self-test's own copy of the contract was edited alike. A digest made before the probe existed
    (no contract_probe) is still checked as before."""
    spec, logits, st = _digest()
    edited = PreprocessSpec.from_json({**json.loads(spec.to_json()), field: value})
    st_edited = {**st, "preprocess": edited.to_json()}
    res = check_selftest(st_edited, edited, lambda x: logits)
    assert not res.passed and "does not resize or order channels as at export" in res.message
    legacy = {k: v for k, v in st_edited.items() if k != "contract_probe"}
    assert check_selftest(legacy, edited, lambda x: logits).passed


@pytest.mark.parametrize("damage", [lambda st: st.pop("mask_bits"), lambda st: st.update(mask_bits="@@notb64"),
                                    lambda st: st.update(mask_bits="AAAA"), lambda st: st.pop("seed"),
                                    lambda st: st.update(pooled_logits="x"),
                                    lambda st: st.update(contract_probe=[1.0, "x"]),
                                    lambda st: st.update(contract_probe={"a": 1})])
def test_damaged_selftest_digest_is_a_failure_not_an_exception(damage):
    spec, logits, st = _digest()
    damage(st)
    res = check_selftest(st, spec, lambda x: logits)
    assert res.status == "fail" and "damaged" in res.message


def test_nan_output_fails_the_self_test():
    spec, logits, st = _digest()
    bad = logits.copy()
    bad[..., :3, :3] = np.nan
    assert not check_selftest(st, spec, lambda x: bad).passed
    assert selftest_input(spec).shape == (1, 3, 256, 256)


def test_openvino_bin_flip_is_refused(trained, tmp_path):
    pytest.importorskip("openvino")
    from cmunext_edge.export.pipeline import export
    res = export(trained, target="openvino", out=tmp_path / "ov", calib_size=4)
    assert verify_artifact(res.artifact).ok
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in res.files:
        shutil.copy(f, alone / f.name)
    assert verify_artifact(alone / res.artifact.name).hash_source == "embedded"
    for folder in (res.artifact.parent, alone):
        _flip(folder / res.artifact.with_suffix(".bin").name)
        with pytest.raises(IntegrityError, match="differs"):
            EdgeSegmenter.from_artifact(folder / res.artifact.name)


def test_a_metadata_format_this_runtime_does_not_read_is_refused():
    """As the C++ library does: format_version other than 1 is refused, not read as format 1."""
    from cmunext_edge.artifacts.meta import FORMAT_VERSION, PREFIX, parse_metadata
    assert parse_metadata({PREFIX + "format_version": FORMAT_VERSION})["format_version"] == "1"
    with pytest.raises(ValueError, match="format_version '2'; this runtime reads format 1"):
        parse_metadata({PREFIX + "format_version": "2"})


def test_a_self_test_that_is_not_json_is_named_damaged():
    from cmunext_edge.artifacts.meta import parse_metadata
    with pytest.raises(ValueError, match="embedded self-test data is damaged \\(not JSON"):
        parse_metadata({"cmunext_edge.selftest": "{not json"})


@pytest.mark.parametrize("key", ["selftest", "preprocess"])
def test_damaged_embedded_metadata_without_a_manifest_is_refused_naming_the_file(onnx_art, tmp_path, capsys, key):
    """An artifact copied without manifest.json whose embedded self-test (or contract) JSON had a
    byte changed: verify_artifact raised ValueError instead of reporting, and cmunext-predict and
    cmunext-info said 'the embedded self-test data is damaged' without naming the file."""
    from cmunext_edge.cli import info as info_cli
    from cmunext_edge.resources import SAMPLES_DIR
    data = bytearray(onnx_art.read_bytes())
    brace = data.index(b"{", data.index(f"cmunext_edge.{key}".encode()))
    data[brace] = ord("[")                          # same length: only the JSON is broken
    art = tmp_path / onnx_art.name
    art.write_bytes(bytes(data))
    what = {"selftest": "self-test data", "preprocess": "preprocessing contract"}[key]
    report = verify_artifact(art)
    assert not report.ok and f"refused: the embedded {what} is damaged" in report.message(), report.message()
    with pytest.raises(IntegrityError, match=f"{art.name}: refused: the embedded {what} is damaged"):
        EdgeSegmenter.from_artifact(art)
    for cli, argv in ((predict_cli.main, [str(art), "--out", str(tmp_path / "o")]), (info_cli.main, [str(art)])):
        rc, _, err = run_cli(cli, argv if cli is info_cli.main else [str(SAMPLES_DIR / "images" / "benign (100).png"),
                                                                     "--weights", *argv], capsys)
        assert rc == 2 and str(art) in err and f"the embedded {what} is damaged" in err, err


def test_a_manifest_that_is_a_fifo_is_damaged_not_read(tmp_path):
    """A FIFO named manifest.json blocked every reader (read_text waits for a writer forever)."""
    import os
    from cmunext_edge.artifacts.manifest import ManifestError, read_manifest
    os.mkfifo(tmp_path / "manifest.json")
    with pytest.raises(ManifestError, match="manifest.json is damaged: not a regular file"):
        read_manifest(tmp_path)


# a damaged manifest.json beside an artifact -> what its one line says is wrong with it
DAMAGED_MANIFESTS = [("{not json", "is damaged: not readable JSON"),
                     ("[]", "is damaged: not a manifest"),
                     (json.dumps({"artifacts": {"cmunext-s-busi_fp32.onnx": {"files": 3}}}),
                      "is damaged: its entry for 'cmunext-s-busi_fp32.onnx' has no list of files")]


@pytest.mark.parametrize("content, says", DAMAGED_MANIFESTS)
def test_a_damaged_manifest_is_named_not_taken_for_a_missing_entry(onnx_art, tmp_path, capsys, content, says):
    """Before: a damaged manifest.json beside an artifact (not JSON, a list, an entry whose "files"
    is not a list) was reported as 'no manifest.json entry' by cmunext-info and cmunext-predict.
    Now each names the file and its damage; the content hash embedded at export still vouches for
    the files, as for an artifact copied without its manifest."""
    from cmunext_edge.cli import info as info_cli
    from cmunext_edge.resources import SAMPLES_DIR
    art = _copy(onnx_art, tmp_path / "t", with_manifest=False)
    (art.parent / "manifest.json").write_text(content)
    named = f"{art.parent / 'manifest.json'} {says}"
    rep = verify_artifact(art)
    assert rep.ok and rep.hash_source == "embedded" and rep.manifest_problem.startswith(named), rep.as_dict()
    rc, out, _ = run_cli(info_cli.main, [art], capsys)
    lines = {ln[:14].strip(): ln[14:] for ln in out.splitlines()}
    assert rc == 0 and "no manifest.json entry" not in out, out
    assert lines["verification"].startswith(f"unknown ({named}")
    assert lines["files check"].startswith(named) and lines["files check"].endswith("the content hash embedded at export")
    rc, out, _ = run_cli(predict_cli.main, [SAMPLES_DIR / "images" / "benign (100).png", "--weights", art,
                                         "--out", tmp_path / "o", "--quiet"], capsys)
    assert rc == 0 and f"note: export verification: unknown ({named}" in out, out


def test_a_damaged_manifest_is_refused_where_a_missing_entry_is(onnx_art, tmp_path, capsys):
    """Without an embedded content hash nothing vouches for the files: a missing entry is refused,
    and so is a damaged manifest, naming its damage (it was 'no manifest.json entry beside it')."""
    from cmunext_edge.cli import bundle as bundle_cli
    from cmunext_edge.cli import info as info_cli
    from cmunext_edge.resources import SAMPLES_DIR
    art = _copy(onnx_art, tmp_path / "t", with_manifest=False)
    _edit_metadata(art, "content_sha256", lambda _: "")
    for content, says in [(None, "no manifest.json entry beside it"), *DAMAGED_MANIFESTS]:
        if content is not None:
            (art.parent / "manifest.json").write_text(content)
            says = f"{art.parent / 'manifest.json'} {says}"
        refused = f"{art}: refused: {says}"
        for main, argv, code in ((predict_cli.main, [SAMPLES_DIR, "--weights", art, "--out", tmp_path / "o"], 2),
                                 (bundle_cli.main, [art, "--out", tmp_path / "b"], 2),
                                 (info_cli.main, [art], 1)):
            rc, _, err = run_cli(main, argv, capsys)
            lines = [ln for ln in err.splitlines() if ": error: " in ln]
            assert rc == code and len(lines) == 1 and "and no embedded content hash" in lines[0], err
            assert (refused if code == 2 else f"{art}: {says}") in lines[0], err
        assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_a_malformed_manifest_entry_is_refused_by_bundle_too(onnx_art, tmp_path, capsys):
    """Before: cmunext-bundle copied the files an entry listed before verifying them, and a file
    item that is not an object ended it with 'unexpected TypeError'; now it is refused as a load
    refuses it, before anything is copied."""
    from cmunext_edge.cli import bundle as bundle_cli
    art = _copy(onnx_art, tmp_path / "t", with_manifest=False)
    (art.parent / "manifest.json").write_text(json.dumps({"artifacts": {art.name: {"files": [3]}}}))
    rc, _, err = run_cli(bundle_cli.main, [art, "--out", tmp_path / "b"], capsys)
    assert rc == 2 and "manifest.json entry has a malformed file item 3" in err and err.count("\n") == 1, err
    assert not (tmp_path / "b").exists()


def test_bundle_notes_a_damaged_manifest_beside_its_artifact(onnx_art, tmp_path, capsys):
    """The embedded hash vouches for the files (the bundle is made), but the manifest's calibration
    record is lost with it: cmunext-bundle says so instead of nothing."""
    from cmunext_edge.cli import bundle as bundle_cli
    art = _copy(onnx_art, tmp_path / "t", with_manifest=False)
    (art.parent / "manifest.json").write_text("[]")
    rc, out, err = run_cli(bundle_cli.main, [art, "--out", tmp_path / "b", "--n-images", "2", "--no-archive"], capsys)
    assert rc == 0 and f"note: {art.parent / 'manifest.json'} is damaged: not a manifest" in out, out + err
