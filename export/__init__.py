"""The export pipeline (installed as cmunext_edge.export):
`export(weights, ExportOptions(target=..., precision=..., ...))` or `export(weights, target=..., ...)`.

One module per target (onnx_export, openvino_export, ort_quant, tensorrt_export), driven by
the one table in targets.py; options.py holds the request, calibration.py, verify.py and
manifest.py are shared by all.
"""


def __getattr__(name):          # keep `import cmunext_edge.export` light; load on first use
    if name == "export":
        from cmunext_edge.export import pipeline
        return getattr(pipeline, name)
    if name in ("ExportOptions", "ExportResult"):
        from cmunext_edge.export import options
        return getattr(options, name)
    raise AttributeError(name)
