"""cmunext-serve: serve an artifact over HTTP (Ray Serve): POST /segment, GET /health.

POST the image file's bytes to /segment: the answer is JSON with the mask as a base64 PNG,
its area, the timings and the precision that ran (?format=png: the PNG, JSON in the
X-Segmentation header). A DICOM body (Content-Type: application/dicom) is answered with a DICOM
Segmentation of all its frames (the [dicom] extra; docs/dicom.md). Requests are batched per
replica; bad input gets a 4xx with a JSON "error" message (a body over --max-bytes 413 as soon as
it passes the limit, one not all arrived within --body-timeout 408).
Needs the ray extra: pip install "cmunext-edge[ray]".
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from cmunext_edge.capabilities import MAX_SECONDS
from cmunext_edge.cli.common import (Terminated, batch_size, cli_main, device_name, fail, float_range, make_parser,
                                      nonnegative_float, port_number, size_limit, thread_count)
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS

EXAMPLE = """examples:
  (the dynamic-batch .onnx comes from: cmunext-export --weights cmunext-s-busi --target onnx --dynamic)
  cmunext-serve exports/cmunext-s-busi_fp32_dynamic.onnx --replicas 2 --port 8000
  curl --data-binary @scan.png http://127.0.0.1:8000/segment
  curl --data-binary @scan.png "http://127.0.0.1:8000/segment?format=png" -o mask.png
  curl -H "Content-Type: application/dicom" --data-binary @us.dcm http://127.0.0.1:8000/segment -o us.seg.dcm
  curl http://127.0.0.1:8000/health
  cmunext-serve model.onnx --address auto --host 0.0.0.0      (on a running Ray cluster's head)

before Ray starts, the artifact is verified (files and self-test) and the port checked: a
missing, modified or failing artifact, or a port in use, is one line and exit 2. --port 0 (a random
port) is refused: Ray Serve does not report the port it would pick.
exit codes: 0 stopped cleanly (Ctrl-C, SIGTERM); 2 nothing served; 130/143 interrupted during start-up
(Ray is shut down)."""


def serve_port(text: str) -> int:
    """An argparse type: a port from 1 to 65535 (0, "any free port", is refused with the reason)."""
    if text.strip().isdigit() and int(text) == 0:
        raise argparse.ArgumentTypeError("0 (a random port) is not supported: Ray Serve does not report the "
                                         "port it picks, so the address printed would be wrong; give a free "
                                         "port, e.g. --port 8000")
    return port_number(text)


body_seconds = float_range(0.0, MAX_SECONDS, low_open=True)


def build_parser():
    p = make_parser("cmunext-serve", __doc__, EXAMPLE)
    p.add_argument("artifact", help="exported artifact or checkpoint (or a shipped model name)")
    p.add_argument("--replicas", type=thread_count, default=1, help="model replicas (default 1)")
    p.add_argument("--port", type=serve_port, default=8000, help="HTTP port, 1-65535 (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1; 0.0.0.0 to expose)")
    p.add_argument("--address", help="join this Ray cluster (default: start a local Ray instance)")
    p.add_argument("--device", type=device_name, default="cpu", help="device each replica runs on (default cpu)")
    p.add_argument("--max-batch", type=batch_size, default=8, help="largest batch a replica forms (default 8)")
    p.add_argument("--batch-wait-ms", type=nonnegative_float, default=5.0,
                   help="how long a batch waits to fill (default 5)")
    p.add_argument("--max-bytes", type=size_limit, default=20 << 20, help="request body limit (default 20 MiB)")
    p.add_argument("--body-timeout", type=body_seconds, default=10.0, metavar="SECONDS",
                   help="the whole request body must arrive within this time, else 408 and its place is "
                        "freed (default 10; a 20 MiB body then needs 2 MB/s: raise it for slow links)")
    p.add_argument("--max-pixels", type=size_limit, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image accepted, in pixels, read from its header before decoding "
                        f"(default {DEFAULT_MAX_PIXELS:,}, as cmunext-predict); larger ones get 413")
    p.add_argument("--threads", type=thread_count, help="inference threads per replica (ONNX Runtime, OpenVINO)")
    p.add_argument("--trusted-key", action="append", metavar="PUB.pem", help="trust policy: serve the artifact "
                   "only if it is signed by this public key (checked before Ray starts and in every replica; "
                   "repeat for several; default $CMUNEXT_TRUSTED_KEYS); exit 2 otherwise")
    return p


@cli_main("cmunext-serve")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from cmunext_edge.cli.common import trust_preflight
    from cmunext_edge.cli.preflight import check_model, check_port
    try:                                                       # before Ray: exit 2, one line
        problem, note = trust_preflight(args.artifact, args.trusted_key)
    except (ValueError, OSError, ImportError) as exc:         # an unusable key, a missing extra
        problem = str(exc)
    if problem:
        return fail("cmunext-serve", problem)
    artifact = check_model(args.artifact, args.device)
    check_port(args.host, args.port)
    from cmunext_edge.scale import serve
    try:
        url = serve.start(artifact, host=args.host, port=args.port, address=args.address,
                          device=args.device, replicas=args.replicas, max_batch=args.max_batch,
                          batch_wait_ms=args.batch_wait_ms, max_bytes=args.max_bytes,
                          max_pixels=args.max_pixels, threads=args.threads, body_timeout_s=args.body_timeout,
                          trusted_keys=[str(Path(k).resolve()) for k in args.trusted_key or []] or None)
        print(f"serving {args.artifact} with {args.replicas} replica(s): POST {url}/segment, GET {url}/health "
              f"(Ctrl-C stops)\n{note}", flush=True)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())    # running: SIGTERM is a clean stop
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
    except SystemExit as exc:       # Ray's own SIGTERM handler (sys.exit(15)) while it starts
        if exc.code != signal.SIGTERM:
            raise
        raise Terminated("terminated (SIGTERM)") from None
    finally:                        # also on an error or SIGTERM during start-up: no Ray left behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        serve.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
