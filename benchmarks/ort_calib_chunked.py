"""Would ONNX Runtime INT8 be faithful if it calibrated on all 64 default calibration images?

ORT's percentile calibration keeps every activation of every image (~0.18 GB an image), so the
export caps it at 16 (ort_quant.ORT_DEFAULTS["max_images"]). ORT can calibrate in passes instead
(quantize_static's extra option CalibStridedMinMax: collect_data per chunk, histograms merged), so
memory stays at one chunk. This experiment (not the product's path) patches the export to do that
on every drawn image and prints the export's own verification line on the 64 held-out images.

    .venv/bin/python benchmarks/ort_calib_chunked.py [--chunk 16]
    (under /usr/bin/time -f "%M KB %e s" for the peak memory)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cmunext_edge.export.ort_quant as ort_quant                     # noqa: E402
from cmunext_edge.export.pipeline import export                       # noqa: E402
from cmunext_edge.export.verify import VerificationError              # noqa: E402


class ChunkedReader(ort_quant.CalibrationReader):
    """The export's reader, with the two methods CalibStridedMinMax asks of it."""

    def _all(self):
        return list(self.calib.batches(1))[:self.max_images]

    def __len__(self):
        return len(self._all())

    def set_range(self, start_index, end_index):
        self._it = iter(self._all()[start_index:end_index])


def patched_require(chunk: int, require=ort_quant.require):
    """ort_quant.require, whose onnxruntime.quantization.quantize_static calibrates in chunks."""
    def wrapped(name):
        module = require(name)
        if name != "onnxruntime.quantization":
            return module
        proxy = type("Q", (), {k: getattr(module, k) for k in dir(module) if not k.startswith("__")})()

        def quantize_static(*args, extra_options=None, **kwargs):
            return module.quantize_static(*args, extra_options={**(extra_options or {}), "CalibStridedMinMax": chunk},
                                          **kwargs)
        proxy.quantize_static = quantize_static
        return proxy
    return wrapped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=16, help="images per calibration pass (default 16; 64 must divide by it)")
    args = ap.parse_args()
    ort_quant.CalibrationReader = ChunkedReader
    ort_quant.require = patched_require(args.chunk)
    ort_quant.ORT_DEFAULTS["max_images"] = None                        # no cap: every drawn image
    with tempfile.TemporaryDirectory() as out:
        try:
            export("cmunext-s-busi", target="onnxruntime", precision="int8", out=out,
                   log=lambda m: print(m) if m.startswith(("calibration set", "verification:")) else None)
            print("written (passed the gate)")
        except VerificationError as exc:
            print(f"refused: {exc}".split(" Try:")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
