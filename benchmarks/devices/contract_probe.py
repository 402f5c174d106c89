"""The self-test's contract probe (cmunext_edge.artifacts.meta.contract_probe) on this machine, as JSON.

Standalone (numpy, OpenCV and any installed cmunext_edge's PreprocessSpec), so it also runs in the
emulated arm64 root, whose venv holds an older wheel without the probe. On the host it first checks
that this copy equals the product's function. Compare two machines' outputs with --compare:

    .venv/bin/python benchmarks/devices/contract_probe.py > /tmp/probe_x86.json
    sudo chroot ~/.cache/cmunext-edge/arm64-bookworm /usr/bin/env -i QEMU_CPU=cortex-a72 \\
        /opt/cmunext-venv/bin/python /tmp/contract_probe.py > /tmp/probe_a72.json   # after copying it there
    .venv/bin/python benchmarks/devices/contract_probe.py --compare /tmp/probe_x86.json /tmp/probe_a72.json
"""
import json
import sys

import numpy as np

from cmunext_edge.core.preprocess import PreprocessSpec


def probe_image(spec):
    h, w = spec.height // 4 + 3, spec.width * 5 // 2 + 7
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(xx * 7 + yy * 29) % 256, ((xx // 3) * 37 + yy * 11) % 256, ((xx * yy) // 5 + 60) % 256]
    return np.stack(planes, axis=-1).astype(np.uint8)


def probe(spec):
    stats = []
    for plane in spec.preprocess(probe_image(spec)).astype(np.float64):
        var = max(float(plane.var()), 1e-30)
        stats += [float(plane.mean()) / var ** 0.5, float(np.mean(np.diff(plane, axis=1) ** 2)) / var,
                  float(np.mean(np.diff(plane, axis=0) ** 2)) / var]
    return stats


SPECS = {"linear": {}, "nearest": {"interpolation": "nearest"}, "area": {"interpolation": "area"},
         "cubic": {"interpolation": "cubic"}, "rgb": {"channel_order": "rgb"}, "320x160": {"height": 320, "width": 160}}


def main(argv):
    if argv[:1] == ["--compare"]:
        a, b = (json.load(open(p)) for p in argv[1:3])
        for name in a:
            print(f"{name:8s} max |difference| {max(abs(x - y) for x, y in zip(a[name], b[name])):.6f}")
        edits = [max(abs(x - y) for x, y in zip(a["linear"], a[k])) for k in ("nearest", "area", "cubic", "rgb")]
        print(f"smallest move by an edit (vs linear, first file): {min(edits):.4f}")
        return 0
    try:
        from cmunext_edge.artifacts.meta import contract_probe
    except ImportError:
        contract_probe = None
    specs = {name: PreprocessSpec(**kw) for name, kw in SPECS.items()}
    if contract_probe is not None:
        assert all(contract_probe(s) == probe(s) for s in specs.values()), "this copy differs from the product's"
    print(json.dumps({name: probe(s) for name, s in specs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
