import json

import numpy as np
import pytest
import torch

from cmunext_edge.train.recipe import TrainConfig, bce_dice_loss, train
from cmunext_edge.checkpoints.weights import load_checkpoint


def _cfg(busi, out, epochs):
    return TrainConfig(data=str(busi), out=str(out), variant="cmunext-s", epochs=epochs,
                       batch_size=4, img_size=64, val_fraction=0.02, max_train_images=8)


def test_interrupted_run_resumes_where_it_stopped(busi, tmp_path, monkeypatch):
    import cmunext_edge.train.recipe as train_mod
    out = tmp_path / "run"
    real_evaluate, calls = train_mod.evaluate, []

    def interrupt_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(busi, out, 2), log=lambda *_: None)
    monkeypatch.setattr(train_mod, "evaluate", real_evaluate)
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) == 8 and len(split["val"]) == 9
    from cmunext_edge.data.discovery import discover
    from cmunext_edge.data.fingerprint import Seen, sample_fingerprints
    by_name = {s.name: s for s in discover(busi)}          # the training images' pixels, for exports
    exact, looks = Seen.of(sample_fingerprints([by_name[n] for n in split["train"]]).values()).lists()
    assert split["train_fingerprints"] == exact and split["train_lookalikes"] == looks and len(looks) >= 6
    logs = []
    second = train(_cfg(busi, out, 2), log=logs.append)
    assert any("resuming" in line and "1 of 2 epochs done" in line for line in logs)
    assert second["epoch"] == 2 and [r["epoch"] for r in second["history"]] == [1, 2]
    ck = load_checkpoint(out / "best.pth")
    assert ck.info.variant == "cmunext-s"
    assert load_checkpoint(out / "best.safetensors").info.variant == "cmunext-s"
    assert (out / "history.csv").read_text().count("\n") == 3
    # one class: the single-class outputs as before (no per-class columns or metadata)
    assert (out / "history.csv").read_text().splitlines()[0] == "epoch,loss,val_iou,val_dice,lr,epoch_s"
    assert load_checkpoint(out / "best.safetensors").info.num_classes == 1
    from cmunext_edge.checkpoints.inspect import read_safetensors_header
    assert "per_class_dice" not in read_safetensors_header(out / "best.safetensors")[1]
    assert not any("per class" in line for line in logs)


def test_same_seed_repeats_a_run_and_another_seed_does_not(busi, tmp_path):
    """--seed fixes the split, the augmentation and the fresh weights: two runs give the same model."""
    def weights(name, seed):
        torch.manual_seed(len(name))          # whatever the caller did to torch's global generator
        cfg = _cfg(busi, tmp_path / name, 1)
        cfg.seed = seed
        before = torch.get_rng_state()
        train(cfg, log=lambda *_: None)
        assert torch.equal(torch.get_rng_state(), before)     # the caller's generator is untouched
        return load_checkpoint(tmp_path / name / "best.safetensors").state_dict
    a, b, c = weights("a", 7), weights("bb", 7), weights("ccc", 8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_loss_is_the_official_bce_dice():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    p = torch.sigmoid(logits).flatten()
    bce = torch.nn.functional.binary_cross_entropy(p, target.flatten())
    dice = (2 * (p * target.flatten()).sum() + 1e-5) / (p.sum() + target.sum() + 1e-5)
    assert np.isclose(float(bce_dice_loss(logits, target)), float(0.5 * bce + 1 - dice), atol=1e-6)


def test_precision_default_follows_the_hardware():
    from cmunext_edge.capabilities import from_cpuinfo
    from cmunext_edge.train.recipe import resolve_precision
    zen3 = from_cpuinfo("model name: AMD EPYC 7763\nflags: sse2 avx avx2 fma", environ={})
    zen4 = from_cpuinfo("model name: AMD EPYC 9654\nflags: sse2 avx avx2 avx512f avx512_vnni avx512_bf16",
                        environ={})
    assert resolve_precision("auto", "cpu", zen3)[0] == "fp32"
    assert resolve_precision("auto", "cpu", zen4)[0] == "bf16"
    lowered = from_cpuinfo("flags: sse2 avx avx2 avx512f avx512_bf16", environ={"ATEN_CPU_CAPABILITY": "avx2"})
    assert resolve_precision("auto", "cpu", lowered)[0] == "fp32"
    assert resolve_precision("bf16", "cpu", zen3) == ("bf16", "as requested")


def test_first_epoch_logs_step_time_and_estimate(busi, tmp_path):
    from cmunext_edge.capabilities import detect
    logs = []
    state = train(_cfg(busi, tmp_path / "run", 2), log=logs.append)
    expected = "bf16" if detect().torch_bf16_native else "fp32"
    assert any(line.startswith(f"precision {expected} (") for line in logs)
    estimates = [line for line in logs if line.startswith("measured step time")]
    assert len(estimates) == 1 and "for the 2 epoch(s) left" in estimates[0]
    assert state["epoch"] == 2


def test_device_resident_batches_equal_the_host_batches():
    """The accelerator path (training set normalised once, kept on the device and augmented there)
    draws the same augmentations from the same generator and gives the same values as the host
    path, bit for bit; run here on CPU tensors, which take the same torch code as CUDA ones."""
    from types import SimpleNamespace
    from cmunext_edge.core.preprocess import get_preset
    from cmunext_edge.train.recipe import _device_batch, _host_batch, _to_device
    gen = np.random.default_rng(7)
    images = gen.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    masks = gen.integers(0, 2, (12, 2, 32, 32), dtype=np.uint8)
    spec = get_preset("official").with_size(32)
    run = SimpleNamespace(train=(images, masks), spec=spec, device=torch.device("cpu"),
                          device_train=_to_device(torch, spec, (images, masks), torch.device("cpu")))
    idx = np.arange(12)
    for seed in range(6):         # 72 samples: every rotation/flip combination is drawn
        xh, yh = _host_batch(run, np.random.default_rng(seed), idx)
        xd, yd = _device_batch(run, np.random.default_rng(seed), idx)
        assert xh.shape == xd.shape == (12, 3, 32, 32) and yh.shape == yd.shape == (12, 2, 32, 32)
        assert torch.equal(xh, xd) and torch.equal(yh, yd)
        assert not torch.equal(xh, torch.from_numpy(
            np.stack([get_preset("official").with_size(32).normalize(i) for i in images])
            .transpose(0, 3, 1, 2)))      # and the augmentation did change something


def test_a_checkpoint_beside_another_runs_split_is_not_read_with_it(busi, tmp_path, capsys):
    """split.json lists the checkpoints of its run: best.pth copied beside another run's split.json
    (trained at another size) is read at the official size, its split not used, and both are said."""
    from cmunext_edge.cli import info as info_cli
    from cmunext_edge.data.model_split import model_split
    from cmunext_edge.fileio import sha256_file
    from cmunext_edge.resources import SPLIT_CHECKPOINTS_KEY, run_split
    run = tmp_path / "run"
    train(_cfg(busi, run, 1), log=lambda *_: None)
    recorded = json.loads((run / "split.json").read_text())[SPLIT_CHECKPOINTS_KEY]
    assert recorded == {n: sha256_file(run / n) for n in ("best.pth", "best.safetensors", "last.pt")}
    assert load_checkpoint(run / "best.pth").spec.height == 64 and model_split(run / "best.pth", None) == run / "split.json"
    other = tmp_path / "other"
    other.mkdir()
    (other / "split.json").write_text((run / "split.json").read_text())
    changed = load_checkpoint(run / "best.pth").state_dict
    changed = {k: (v * 1.001 if v.is_floating_point() else v) for k, v in changed.items()}
    from cmunext_edge.checkpoints.weights import save_official_pth
    save_official_pth(changed, other / "best.pth")                       # another model, the run's split.json
    path, note = run_split(other / "best.pth")
    assert path is None and "belongs to another cmunext-train run" in note
    assert load_checkpoint(other / "best.pth").spec.height == 256 and model_split(other / "best.pth", None) is None
    assert info_cli.main([str(other / "best.pth")]) == 0
    err = capsys.readouterr().err
    assert "belongs to another cmunext-train run" in err and "the official 256x256 input is assumed" in err


def test_empty_ground_truth_is_warned_about(tmp_path):
    """All-empty masks: the run reported validation Dice 1.0000 and said nothing (a model predicting
    nothing scores 1.0 on empty masks)."""
    import cv2
    from cmunext_edge.resources import SAMPLES_DIR
    from cmunext_edge.train.recipe import empty_truth_warnings
    data = tmp_path / "empty"
    (data / "images").mkdir(parents=True)
    (data / "masks" / "0").mkdir(parents=True)
    for k, src in enumerate(sorted((SAMPLES_DIR / "images").glob("*.png"))[:8]):
        img = cv2.imread(str(src))
        cv2.imwrite(str(data / "images" / f"im{k}.png"), img)
        cv2.imwrite(str(data / "masks" / "0" / f"im{k}.png"), np.zeros(img.shape[:2], np.uint8))
    lines = []
    train(TrainConfig(data=str(data), out=str(tmp_path / "run"), variant="cmunext-s", epochs=1, batch_size=4,
                      img_size=64, val_fraction=0.25), log=lines.append)
    warned = [line for line in lines if line.startswith("warning: every")]
    assert any("training mask of the class is empty" in w for w in warned), lines
    assert any("validation mask of the class is empty" in w and "cannot select an epoch" in w for w in warned)
    masks = np.zeros((4, 3, 8, 8), np.uint8)
    masks[0, 1, 2, 2] = 1                                          # class 1 present, classes 0 and 2 not
    assert empty_truth_warnings(masks, masks[:, :2]) == [
        "every training mask of class(es) 0, 2 is empty: the model can only learn to predict nothing for it",
        "every validation mask of class(es) 0 is empty: its validation Dice is 1.0 for a model that predicts "
        "nothing, so it cannot select an epoch"]
    assert empty_truth_warnings(masks[:, 1:2], masks[:, 1:2]) == []
