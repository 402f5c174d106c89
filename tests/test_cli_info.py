import json

import pytest

from cmunext_edge.cli.info import main


@pytest.mark.parametrize("tag,variant,params_m", [("s", "cmunext-s", 0.418), ("b", "cmunext", 3.149)])
def test_info_json(reference, capsys, tag, variant, params_m):
    assert main([str(reference / f"official_cmunext_{tag}_random.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["variant"], info["in_channels"], info["num_classes"], info["params_m"]) == (variant, 3, 1, params_m)
    assert info["input_size"] == [256, 256] and len(info["sha256"]) == 64


def test_macs_scale_with_input_area(ckpt_s, capsys):
    main([str(ckpt_s), "--json"])
    base = json.loads(capsys.readouterr().out)["macs"]
    main([str(ckpt_s), "--size", "512", "--json"])
    assert json.loads(capsys.readouterr().out)["macs"] == 4 * base


def test_text_output_and_errors(ckpt_s, tmp_path, capsys):
    assert main([str(ckpt_s)]) == 0
    assert "0.418 M" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:          # a bad --size is a usage error (argparse type)
        main([str(ckpt_s), "--size", "250"])
    assert exc.value.code == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main([str(tmp_path / "none.pth")]) == 2
    assert capsys.readouterr().err == f"cmunext-info: error: {tmp_path / 'none.pth'}: no such file\n"


def test_help_shows_example_and_mac_convention(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "example" in out and "How MACs are counted" in out


def test_a_file_of_no_known_kind_says_what_info_reads(tmp_path, capsys):
    """A file with a suffix no artifact kind has is still tried as a checkpoint (one may be saved
    under any name); the refusal then names the suffixes cmunext-info reads."""
    odd, bare = tmp_path / "model.foo", tmp_path / "model"
    for p in (odd, bare):
        p.write_bytes(b"not a model\n")
    assert main([str(odd)]) == 2
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint" in err and "'.foo' is no kind" in err and ".safetensors" in err
    assert main([str(bare)]) == 2
    assert "no kind" not in capsys.readouterr().err


def test_a_truncated_checkpoint_is_an_error_as_every_other_tool_says(tmp_path, capsys):
    from cmunext_edge.resources import models_dir
    shipped = models_dir() / "cmunext-s-busi.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(shipped.read_bytes()[:500_000])
    rc = main([str(cut)])
    out, err = capsys.readouterr()
    assert rc == 1 and "UNREADABLE" in out and "past the end of the file" in err


def test_a_verification_record_that_contradicts_itself_is_not_believed(onnx_trained, tmp_path, capsys):
    import shutil
    from cmunext_edge.bench.report import verification
    art = tmp_path / onnx_trained.artifact.name
    shutil.copy(onnx_trained.artifact, art)
    manifest = json.loads((onnx_trained.artifact.parent / "manifest.json").read_text())
    assert main([str(onnx_trained.artifact)]) == 0                      # the genuine record
    record = manifest["artifacts"][art.name]["verification"]
    record["mask_dice_agreement"] = 0.31                                  # edited; the files still match
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    rc = main([str(art)])
    out, err = capsys.readouterr()
    assert rc == 1 and "NOT TRUSTED" in out and "0.31" in err
    row = {"artifact": str(art), "precision": record["precision"], "agreement_dice": None}
    assert verification(row).startswith("NO") and "contradicts itself" in verification(row, long=True)


def test_a_damaged_manifest_makes_the_bench_row_unverified_and_says_why(onnx_trained, tmp_path):
    """Before: a bench row of an artifact whose manifest.json was damaged showed '-' (nothing known),
    like one that never had a manifest; a damaged record is a refusal, as at a verified load."""
    import shutil
    from cmunext_edge.bench.report import verification
    art = tmp_path / onnx_trained.artifact.name
    shutil.copy(onnx_trained.artifact, art)
    row = {"artifact": str(art), "precision": "fp32", "agreement_dice": None}
    assert verification(row) == "-"                                       # no manifest: nothing known
    (tmp_path / "manifest.json").write_text('{"artifacts": {')            # cut short
    assert verification(row) == "NO"
    assert "manifest.json" in verification(row, long=True) and verification(row, long=True).startswith("NO: ")
