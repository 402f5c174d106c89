"""The export pipeline (installed as cmunext_edge.export): `export(weights, target, precision, ...)`.

One module per target (onnx_export, openvino_export, ort_quant, tensorrt_export), driven by
the one table in targets.py; calibration.py, verify.py and manifest.py are shared by all.
"""


def __getattr__(name):          # keep `import cmunext_edge.export` light; load on first use
    if name in ("export", "ExportResult"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)
