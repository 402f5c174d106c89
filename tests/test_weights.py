import os

import pytest
import torch

from cmunext_edge.model import build_model
from cmunext_edge.weights import (CheckpointError, load_checkpoint, save_official_pth,
                                  save_safetensors)


def test_official_checkpoint_detected(ckpt_s):
    ck = load_checkpoint(ckpt_s)
    assert (ck.info.variant, ck.info.in_channels, ck.info.num_classes) == ("cmunext-s", 3, 1)
    assert len(ck.sha256) == 64


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_wrappers_and_module_prefix(tmp_path, wrap):
    sd = build_model("cmunext", in_channels=1, num_classes=2).state_dict()
    path = tmp_path / "w.pt"
    torch.save({wrap: {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    info = load_checkpoint(path).info
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


def test_code_executing_pickle_is_refused_never_run(tmp_path):
    marker = "/tmp/cmunext_pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pth"
    torch.save({"stem.conv.0.weight": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_truncated_file(tmp_path, ckpt_s):
    path = tmp_path / "cut.pth"
    path.write_bytes(ckpt_s.read_bytes()[:20000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint at all"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(path)


def test_other_architecture_lists_missing_and_unexpected_keys(tmp_path):
    sd = {"stem.conv.0.weight": torch.zeros(8, 3, 3, 3), "Conv_1x1.weight": torch.zeros(1, 8, 1, 1),
          "backbone.layer1.weight": torch.zeros(4)}
    torch.save(sd, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "other.pth")
    assert "missing keys" in str(err.value) and "unexpected keys" in str(err.value)
    assert "backbone.layer1.weight" in str(err.value)


def test_shape_mismatch_is_named(tmp_path):
    sd = build_model("cmunext-s").state_dict()
    sd["encoder3.up.conv.0.weight"] = torch.zeros(33, 16, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches.*encoder3\.up\.conv\.0\.weight"):
        load_checkpoint(tmp_path / "bad.pth")


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(tmp_path / "list.pth")
