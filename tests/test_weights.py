import os

import pytest
import torch

from cmunext_edge.core.model import build_model
from cmunext_edge.checkpoints.weights import (
    CheckpointError, inspect_checkpoint, load_checkpoint, save_official_pth, save_safetensors)

# load_checkpoint reads tensors with torch; inspect_checkpoint reads shapes without torch.
# Both must accept and refuse the same files with the same messages.
LOADERS = pytest.mark.parametrize("load", [load_checkpoint, inspect_checkpoint],
                                  ids=["load", "inspect"])


def test_official_checkpoint_detected(ckpt_s):
    ck = load_checkpoint(ckpt_s)
    assert (ck.info.variant, ck.info.in_channels, ck.info.num_classes) == ("cmunext-s", 3, 1)
    assert len(ck.sha256) == 64


@LOADERS
@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_wrappers_and_module_prefix(tmp_path, wrap, load):
    sd = build_model("cmunext", in_channels=1, num_classes=2).state_dict()
    path = tmp_path / "w.pt"
    torch.save({wrap: {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    info = load(path).info
    assert (info.variant, info.in_channels, info.num_classes) == ("cmunext", 1, 2)


def test_safetensors_and_official_pth_round_trip(tmp_path):
    model = build_model("cmunext-l")
    st = save_safetensors(model, tmp_path / "m.safetensors")
    pth = save_official_pth(model, tmp_path / "m.pth")
    for path in (st, pth):
        ck = load_checkpoint(path)
        assert ck.info.variant == "cmunext-l"
        for k, v in model.state_dict().items():
            assert torch.equal(ck.state_dict[k], v)
    # official format = a plain state dict readable by torch.load(weights_only=True)
    assert list(torch.load(pth, weights_only=True)) == list(model.state_dict())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cmunext_pwned",))


@LOADERS
def test_code_executing_pickle_is_refused_never_run(tmp_path, load):
    marker = "/tmp/cmunext_pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pth"
    torch.save({"stem.conv.0.weight": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load(path)
    assert not os.path.exists(marker)


@LOADERS
def test_truncated_file(tmp_path, ckpt_s, load):
    path = tmp_path / "cut.pth"
    path.write_bytes(ckpt_s.read_bytes()[:20000])
    with pytest.raises(CheckpointError, match="truncated"):
        load(path)


@LOADERS
@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint at all"])
def test_not_a_checkpoint(tmp_path, content, load):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a"):
        load(path)


@LOADERS
def test_other_architecture_lists_missing_and_unexpected_keys(tmp_path, load):
    sd = {"stem.conv.0.weight": torch.zeros(8, 3, 3, 3), "Conv_1x1.weight": torch.zeros(1, 8, 1, 1),
          "backbone.layer1.weight": torch.zeros(4)}
    torch.save(sd, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "other.pth")
    assert "missing keys" in str(err.value) and "unexpected keys" in str(err.value)
    assert "backbone.layer1.weight" in str(err.value)


@LOADERS
def test_shape_mismatch_is_named(tmp_path, load):
    sd = build_model("cmunext-s").state_dict()
    sd["encoder3.up.conv.0.weight"] = torch.zeros(33, 16, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches.*encoder3\.up\.conv\.0\.weight"):
        load(tmp_path / "bad.pth")


@LOADERS
def test_not_a_state_dict(tmp_path, load):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load(tmp_path / "list.pth")


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_inspect_reads_parameters_and_both_pth_formats_without_tensors(tmp_path, zipped):
    model = build_model("cmunext-s", num_classes=2)
    params = dict(model.named_parameters())          # nn.Parameter objects pickle differently
    sd = {**model.state_dict(), **params}
    path = tmp_path / "p.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zipped)
    summary = inspect_checkpoint(path)
    assert (summary.info.variant, summary.info.num_classes) == ("cmunext-s", 2)
    assert summary.shapes == {k: tuple(v.shape) for k, v in sd.items()}
    assert summary.sha256 == load_checkpoint(path).sha256


def test_inspect_safetensors_matches_load(tmp_path):
    path = save_safetensors(build_model("cmunext", in_channels=1), tmp_path / "m.safetensors")
    summary, full = inspect_checkpoint(path), load_checkpoint(path)
    assert summary.info == full.info and summary.spec == full.spec
    assert summary.shapes == {k: tuple(v.shape) for k, v in full.state_dict.items()}


@pytest.mark.parametrize("content", [b"\x10\x00\x00\x00\x00\x00\x00\x00{}",
                                     b"\x05\x00\x00\x00\x00\x00\x00\x00nope!", b"short"])
def test_damaged_safetensors_header_is_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        inspect_checkpoint(path)
