"""Signed artifacts and the trust policy (issue 24): under a policy, an unsigned artifact, a signature
by another key, and any file swapped, edited or truncated after signing are refused before the
runtime reads it (ONNX, OpenVINO IR, ONNX Runtime INT8, TensorRT sidecar files); a substituted
model (another checkpoint exported under the deployed name) is refused by EdgeSegmenter and
cmunext-predict with exit 2; without a policy, behaviour stays and the load reports "unsigned"."""
import json
import shutil
from pathlib import Path

import pytest

from cmunext_edge.artifacts.integrity import SignatureError, artifact_files, precheck
from cmunext_edge.artifacts.signing import (ENV_VAR, TrustPolicyError, sign_artifact,
                                            signature_path, trust_policy)
from cmunext_edge.cli import keys as keys_cli
from cmunext_edge.cli import predict as predict_cli
from cmunext_edge.resources import SAMPLES_DIR
from cmunext_edge.runtime.registry import open_backend
from cmunext_edge.runtime.segmenter import EdgeSegmenter

pytest.importorskip("model_signing")
pytest.importorskip("onnxruntime")


def _export(trained, out, key, **options):
    from cmunext_edge.export.pipeline import export
    # not verified against PyTorch (signing does not depend on it; tests/test_agreement.py covers it)
    return export(trained, out=out, calib_size=4, sign_key=key, verify=False, log=lambda m: None, **options)


@pytest.fixture(scope="module")
def signed(trained, keys, tmp_path_factory):
    """kind -> entry file of a signed artifact, each in its own folder (TensorRT: files written here)."""
    out = tmp_path_factory.mktemp("signed")
    key = keys["release"][0]
    arts = {"onnx": _export(trained, out / "onnx", key, target="onnx").artifact}
    if pytest.importorskip("openvino"):
        arts["openvino"] = _export(trained, out / "ov", key, target="openvino").artifact
    arts["ort-int8"] = _export(trained, out / "ort", key, target="ort", precision="int8").artifact
    trt = out / "trt"
    trt.mkdir()
    engine = trt / "cmunext-s-busi_fp16.engine"
    engine.write_bytes(bytes(range(256)) * 64)             # a plan file: bytes TensorRT would deserialize
    (trt / (engine.name + ".json")).write_text(json.dumps(
        {"tensorrt_version": "10.0", "compute_capability": "8.7", "precision": "fp16",
         "metadata": {"cmunext_edge.preprocess": json.dumps({"mean": [0.5, 0.5, 0.5]})}}))
    sign_artifact(engine, key)
    arts["tensorrt"] = engine
    return arts


def _private_copy(entry: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in artifact_files(entry) + [signature_path(entry), entry.parent / "manifest.json"]:
        if f.is_file():
            shutil.copyfile(f, folder / f.name)
    return folder / entry.name


def _refused(entry: Path, pub: Path, match: str) -> None:
    """Refused by the policy before any runtime reads a file (also with verify=False)."""
    report = precheck(entry, [pub])
    assert not report.ok and report.signature == "refused by the trust policy", report.message()
    assert match in report.message(), report.message()
    with pytest.raises(SignatureError, match=match):
        open_backend(entry, device="cuda" if entry.suffix == ".engine" else "cpu", verify=False, trusted_keys=[pub])


def test_signature_lies_beside_the_files_and_is_published_with_them(signed):
    onnx = signed["onnx"]
    manifest = json.loads((onnx.parent / "manifest.json").read_text())
    entry = manifest["artifacts"][onnx.name]
    assert [f["name"] for f in entry["files"]] == [onnx.name] and entry["signature"] == onnx.name + ".sig"
    assert sorted(p.name for p in signed["openvino"].parent.iterdir() if not p.name.startswith(".")) == [
        "cmunext-s-busi_fp32.bin", "cmunext-s-busi_fp32.xml", "cmunext-s-busi_fp32.xml.sig", "manifest.json"]


@pytest.mark.parametrize("kind", ["onnx", "openvino", "ort-int8", "tensorrt"])
def test_signed_files_pass_the_policy(signed, keys, kind):
    report = precheck(signed[kind], [keys["release"][1]])
    assert report.ok and report.signature.startswith("signed by trusted key"), report.message()


@pytest.mark.parametrize("kind", ["onnx", "openvino", "ort-int8", "tensorrt"])
def test_every_file_swapped_edited_or_truncated_is_refused(signed, keys, kind, tmp_path):
    pub = keys["release"][1]
    donor = signed["onnx" if kind != "onnx" else "ort-int8"]     # signed by the same key, another artifact
    for f in artifact_files(signed[kind]):
        for change in ("swap", "flip-start", "flip-middle", "flip-end", "truncate"):
            entry = _private_copy(signed[kind], tmp_path / f"{f.name}-{change}")
            target = entry.parent / f.name
            data = bytearray(target.read_bytes())
            if change == "swap":
                data = bytearray(donor.read_bytes())
            elif change == "truncate":
                data = data[:-1]
            else:
                data[{"flip-start": 0, "flip-middle": len(data) // 2, "flip-end": len(data) - 1}[change]] ^= 0x01
            target.write_bytes(bytes(data))
            _refused(entry, pub, f"{f.name} changed after signing")


@pytest.mark.parametrize("kind", ["onnx", "openvino", "tensorrt"])
def test_unsigned_and_other_key_are_refused(signed, keys, kind, tmp_path):
    entry = _private_copy(signed[kind], tmp_path / "unsigned")
    signature_path(entry).unlink()
    _refused(entry, keys["release"][1], "unsigned: no signature")
    sign_artifact(entry, keys["other"][0])
    _refused(entry, keys["release"][1], "not signed by a trusted key")
    assert precheck(entry, [keys["release"][1], keys["other"][1]]).ok      # either trusted key will do


def test_segmenter_trust_policy_by_argument_and_environment(signed, keys, tmp_path, monkeypatch):
    seg = EdgeSegmenter(signed["onnx"], trusted_keys=[keys["release"][1]])
    assert seg.describe()["signature"].startswith("signed by trusted key")
    assert "signed by trusted key" in seg.describe()["verified"]
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        EdgeSegmenter(signed["onnx"], trusted_keys=[keys["other"][1]])
    monkeypatch.setenv(ENV_VAR, str(keys["other"][1]))
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        EdgeSegmenter(signed["onnx"])                           # the firmware's policy, no argument
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.pub.pem"))
    with pytest.raises(TrustPolicyError, match="no such file"):
        trust_policy()
    for naming_nothing in (":", " : "):                          # set, but no key: never "no policy"
        monkeypatch.setenv(ENV_VAR, naming_nothing)
        with pytest.raises(TrustPolicyError, match="names no public key file"):
            trust_policy()
    monkeypatch.delenv(ENV_VAR)
    assert trust_policy() is None
    for empty in ([], (), iter([])):                         # an empty list is refused, never "no policy"
        with pytest.raises(TrustPolicyError, match="trusted_keys is empty"):
            EdgeSegmenter(signed["onnx"], trusted_keys=empty)


def test_a_symlinked_file_is_refused_naming_the_link(signed, keys, tmp_path):
    """model-signing checks regular files only: a link is refused, and the message says it is a link
    (not "another key"); the same files copied pass."""
    entry = _private_copy(signed["onnx"], tmp_path / "copy")
    assert precheck(entry, [keys["release"][1]]).ok
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / entry.name).symlink_to(entry)
    shutil.copyfile(signature_path(entry), signature_path(linked / entry.name))
    _refused(linked / entry.name, keys["release"][1], f"{entry.name} in {linked} is a symbolic link")


def test_without_a_policy_behaviour_stays_and_unsigned_is_reported(signed, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    entry = _private_copy(signed["onnx"], tmp_path / "plain")
    signature_path(entry).unlink()
    seg = EdgeSegmenter(entry)
    assert seg.describe()["signature"] == "unsigned" and seg.verification.ok
    assert EdgeSegmenter(signed["onnx"]).describe()["signature"] == "signed, not checked (no trusted key)"


def test_openvino_cache_dir_is_refused_under_a_policy(signed, keys):
    with pytest.raises(SignatureError, match="cache_dir"):
        open_backend(signed["openvino"], trusted_keys=[keys["release"][1]], cache_dir="/tmp/ov-cache")


@pytest.fixture(scope="module")
def substituted(signed, ckpt_s, tmp_path_factory):
    """The deployed signed ONNX folder with another CMUNeXt checkpoint (random weights) exported
    under the deployed name copied over its .onnx and manifest.json."""
    from cmunext_edge.export.pipeline import export
    root = tmp_path_factory.mktemp("substitution")
    deployed = _private_copy(signed["onnx"], root / "deployed")
    other = export(ckpt_s, target="onnx", out=root / "other", name=deployed.stem, calib_size=4,
                   log=lambda m: None).artifact
    shutil.copyfile(other, deployed)
    shutil.copyfile(other.parent / "manifest.json", deployed.parent / "manifest.json")
    return deployed


def test_substituted_model_is_refused_with_exit_2(substituted, keys, tmp_path, capsys):
    with pytest.raises(SignatureError, match="cmunext-s-busi_fp32.onnx changed after signing"):
        EdgeSegmenter(substituted, trusted_keys=[keys["release"][1]])
    rc = predict_cli.main([str(SAMPLES_DIR), "--weights", str(substituted), "--out", str(tmp_path / "o"),
                           "--trusted-key", str(keys["release"][1]), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "changed after signing" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o" / "masks").exists()
    seg = EdgeSegmenter(substituted)                    # no policy: it runs, as before (verified by its manifest)
    assert seg.describe()["signature"] == "signed, not checked (no trusted key)"


def test_signed_original_runs_through_the_cli(signed, keys, tmp_path, capsys):
    rc = predict_cli.main([str(SAMPLES_DIR), "--weights", str(signed["onnx"]), "--out", str(tmp_path / "o"),
                           "--trusted-key", str(keys["release"][1]), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "signature: signed by trusted key" in out and "mean Dice" in out


def test_keys_cli_makes_signs_and_verifies(signed, tmp_path, capsys):
    assert keys_cli.main(["new", "--out", str(tmp_path / "k")]) == 0
    assert oct((tmp_path / "k.pem").stat().st_mode & 0o777) == "0o600"
    before = (tmp_path / "k.pem").read_bytes()
    capsys.readouterr()
    assert keys_cli.main(["new", "--out", str(tmp_path / "k")]) == 2            # never overwrites a key
    assert capsys.readouterr().err == (f"cmunext-keys: error: {tmp_path / 'k.pem'} exists; not overwritten "
                                       "(a lost private key cannot be recovered)\n")
    assert (tmp_path / "k.pem").read_bytes() == before
    assert keys_cli.main(["new", "--out", str(tmp_path / "keys" / "release")]) == 0   # as docs/signing.md: keys/ made
    assert (tmp_path / "keys" / "release.pub.pem").is_file()
    entry = _private_copy(signed["openvino"], tmp_path / "ov")
    assert keys_cli.main(["sign", str(entry), "--key", str(tmp_path / "k.pem")]) == 0
    assert keys_cli.main(["verify", str(entry), "--trusted-key", str(tmp_path / "k.pub.pem")]) == 0
    (entry.with_suffix(".bin")).write_bytes(b"")
    capsys.readouterr()
    assert keys_cli.main(["verify", str(entry), "--trusted-key", str(tmp_path / "k.pub.pem")]) == 2
    assert "cmunext-s-busi_fp32.bin changed after signing" in capsys.readouterr().err


def test_export_refuses_an_unusable_sign_key_before_any_work(trained, tmp_path):
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.export.targets import ExportUsageError
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ExportUsageError, match="not an unencrypted PEM private key"):
        export(trained, target="onnx", out=tmp_path / "x", sign_key=tmp_path / "bad.pem", log=lambda m: None)
    assert not (tmp_path / "x").exists()


def _other_key(path: Path, kind: str) -> Path:
    """A private key of a type or curve signatures do not use (RSA, Ed25519, EC secp256k1)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    private = {"rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
               "ed25519": ed25519.Ed25519PrivateKey.generate,
               "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1())}[kind]()
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.mark.parametrize("kind, says", [("rsa", "a key of type RSA"), ("ed25519", "a key of type Ed25519"),
                                        ("secp256k1", "an EC key on secp256k1")])
def test_a_signing_key_of_another_type_or_curve_is_refused_before_any_work(signed, kind, says, tmp_path, capsys):
    """RSA, Ed25519 or secp256k1 keys load as PEM private keys but cannot make a signature the device
    verifies: cmunext-keys sign and the export refuse them at once (exit 2, one line), no .sig written."""
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.export.targets import ExportUsageError
    key = _other_key(tmp_path / f"{kind}.pem", kind)
    entry = _private_copy(signed["onnx"], tmp_path / "onnx")
    signature_path(entry).unlink()
    capsys.readouterr()
    assert keys_cli.main(["sign", str(entry), "--key", str(key)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "P-256" in err, err
    assert not signature_path(entry).exists()
    with pytest.raises(ExportUsageError, match=says):
        export(signed["onnx"], target="onnx", out=tmp_path / "x", sign_key=key, log=lambda m: None)
    assert not (tmp_path / "x").exists()


def test_a_missing_file_or_artifact_is_named_under_a_policy(signed, keys, tmp_path):
    """Under a policy, an IR without its .bin, or an artifact path that does not exist, is named as
    missing (not "unsigned" or "another key")."""
    pub = keys["release"][1]
    entry = _private_copy(signed["openvino"], tmp_path / "ov")
    entry.with_suffix(".bin").unlink()
    _refused(entry, pub, "cmunext-s-busi_fp32.bin: no such file")
    _refused(tmp_path / "nowhere" / "m.onnx", pub, "m.onnx: no such file")


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_one_flipped_byte_anywhere_is_refused(signed, keys, kind, tmp_path):
    """60 seeded offsets spread over every file of the artifact (header, graph, weights, tail)."""
    import numpy as np
    entry = _private_copy(signed[kind], tmp_path / "sweep")
    rng = np.random.default_rng(24)
    for f in artifact_files(entry):
        original = f.read_bytes()
        for offset in sorted(set(rng.integers(0, len(original), 60).tolist()) | {0, len(original) - 1}):
            data = bytearray(original)
            data[offset] ^= 1 << int(rng.integers(0, 8))
            f.write_bytes(bytes(data))
            report = precheck(entry, [keys["release"][1]])
            assert not report.ok and f"{f.name} changed after signing" in report.message(), (f.name, offset)
        f.write_bytes(original)
    assert precheck(entry, [keys["release"][1]]).ok


def test_bench_ray_and_serve_refuse_before_anything_runs(signed, keys, tmp_path, capsys):
    """The trust policy's verdict comes before any timing, Ray worker or Serve replica."""
    from cmunext_edge.cli import bench as bench_cli
    from cmunext_edge.cli import serve as serve_cli
    other = str(keys["other"][1])
    assert bench_cli.main([str(signed["onnx"]), str(signed["openvino"]), "--trusted-key", str(keys["release"][1]),
                           "--trusted-key", other, "--iters", "1", "--warmup", "0", "--throughput-time", "0",
                           "--matmul-time", "0", "--batch-sizes", "1", "--streams", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert bench_cli.main([str(signed["onnx"]), "--trusted-key", other, "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not signed by a trusted key" in err
    rc = predict_cli.main([str(SAMPLES_DIR), "--weights", str(signed["onnx"]), "--out", str(tmp_path / "o"),
                           "--engine", "ray", "--trusted-key", other])
    err = capsys.readouterr().err
    assert rc == 2 and "not signed by a trusted key" in err and "Traceback" not in err
    assert serve_cli.main([str(signed["onnx"]), "--trusted-key", other]) == 2
    assert "not signed by a trusted key" in capsys.readouterr().err


def test_triton_packaging_refuses_sign_key(signed, keys, tmp_path):
    from cmunext_edge.export.pipeline import export
    from cmunext_edge.export.targets import ExportUsageError
    with pytest.raises(ExportUsageError, match="--sign-key does not apply to --target triton"):
        export(signed["onnx"], target="triton", out=tmp_path / "repo", sign_key=keys["release"][0])
    assert not (tmp_path / "repo").exists()
