"""Issue 16 acceptance, multi-class: a 3-class model trains for one epoch on a tiny set derived from
the bundled samples, exports to ONNX and OpenVINO, verifies against PyTorch and the 3-class ground
truth, and predicts per-class masks, through the command-line entry points a user runs."""
from __future__ import annotations

import json

import pytest

from cmunext_edge.data.multiclass_sample import make_three_class_dataset

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained_three_class(tmp_path_factory, trained):
    from cmunext_edge.cli.train import main as train_main
    root = tmp_path_factory.mktemp("mc_e2e")
    data = make_three_class_dataset(root / "data", "labels")
    run = root / "run"
    rc = train_main([str(data), "--out", str(run), "--epochs", "1", "--batch-size", "4",
                     "--init", str(trained), "--threads", "2"])
    assert rc == 0
    return data, run


def test_train_one_epoch_three_classes(trained_three_class):
    from cmunext_edge.checkpoints.weights import inspect_checkpoint
    data, run = trained_three_class
    assert inspect_checkpoint(run / "best.safetensors").info.num_classes == 3
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"val_dice_class0", "val_dice_class1", "val_dice_class2"} <= set(header)


@pytest.mark.parametrize("target, extra", [("onnx", []), ("openvino", [])])
def test_export_verify_predict_three_classes(trained_three_class, tmp_path, target, extra, capsys):
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[target])
    from cmunext_edge.cli.export import main as export_main
    from cmunext_edge.cli.predict import main as predict_main
    data, run = trained_three_class
    out = tmp_path / "exports"
    rc = export_main(["--weights", str(run / "best.safetensors"), "--target", target, "--out", str(out),
                      "--verify-data", str(data), *extra])
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert rc == 0, printed
    assert "per class" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    (name, entry), = manifest["artifacts"].items()
    v = entry["verification"]
    assert v["passed"] and len(v["per_class_agreement"]) == 3
    assert len(v["per_class_dice_vs_ground_truth"]) == 3
    artifact = out / name
    pred = tmp_path / "pred"
    summary_json = tmp_path / "summary.json"
    rc = predict_main([str(data), "--weights", str(artifact), "--out", str(pred),
                       "--summary-json", str(summary_json)])
    assert rc == 0
    summary = json.loads(summary_json.read_text())
    assert summary["n_images"] == 16 and len(summary["per_class_dice"]) == 3
    for k in range(3):
        assert len(list((pred / "masks").glob(f"*_class{k}.png"))) == 16
