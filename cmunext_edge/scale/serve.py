"""Serve an artifact over HTTP with Ray Serve: `POST /segment`, `GET /health`.

`POST /segment` takes the image file's bytes as the request body (PNG, JPEG, BMP, TIFF; e.g.
`curl --data-binary @scan.png http://127.0.0.1:8000/segment`) and answers JSON: the mask as a
base64 PNG (0/255), its area in pixels and as a fraction, the timings (decode, preprocess,
infer, postprocess, total in the replica, and the batch it ran in) and the backend, device and
precision that ran. `?format=png` answers the PNG itself with that JSON in the
`X-Segmentation` header. Requests are batched per replica (`@serve.batch`); a body over
`max_bytes` gets 413, an empty or undecodable one 400 with a message; an image whose header
gives more pixels than the toolkit's one limit (image_limits.DEFAULT_MAX_PIXELS, or `max_pixels`)
gets 413 before anything is decoded. `GET /health` reports the
artifact, where it runs and the self-test each replica ran at start (503 if it failed).
A DICOM body (`Content-Type: application/dicom`; single- or multi-frame, the [dicom] extra) is answered
with a DICOM Segmentation of every frame (`application/dicom`, binary, one segment per class; see
docs/dicom.md); `?seg=fractional` for probabilities. Its header is checked before any decoding.
A multi-class model: `mask_png` is the union of its classes, and the JSON adds `classes` (per class:
area in pixels and fraction) and `class_masks_png` (one base64 0/255 PNG per class, class order).
"""
# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time

import base64
import json
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS, ImageSizeError, ImageTooLargeError, check_bytes
from cmunext_edge.predict.scores import mask_channels, mask_union
from cmunext_edge.core.preprocess import ImageReadError, to_bgr_uint8

MAX_BYTES = 20 << 20          # request body limit


class RequestError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_body(body: bytes, max_bytes: int = MAX_BYTES, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Request body -> HxWx3 uint8 BGR, or RequestError with the HTTP status to answer.

    The image is admitted from its header first (image_limits.check_bytes): too many pixels is
    413, a header without a readable size 400; only then is it decoded."""
    if not body:
        raise RequestError(400, "empty request body: send the image file's bytes (curl --data-binary @scan.png)")
    if len(body) > max_bytes:
        raise RequestError(413, f"request body of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        check_bytes(body, max_pixels, what="header")
    except ImageTooLargeError as exc:
        raise RequestError(413, f"image refused before decoding: {exc}") from None
    except ImageSizeError as exc:
        raise RequestError(400, f"the {len(body)}-byte body is not a decodable image ({exc})") from None
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise RequestError(400, f"the {len(body)}-byte body is not a decodable image (PNG, JPEG, BMP, TIFF, WebP)")
    try:
        return to_bgr_uint8(img)
    except ImageReadError as exc:
        raise RequestError(400, str(exc)) from None


def describe_result(seg, where: dict, decode_ms: float, wait_ms: float) -> dict:
    """The JSON part of a /segment answer (without the mask PNG)."""
    mask = mask_union(seg.mask)
    t = seg.timings
    info = {"height": int(mask.shape[0]), "width": int(mask.shape[1]),
            "mask_area_px": int(mask.sum()), "mask_fraction": round(float(mask.mean()), 6),
            "timings_ms": {"decode": round(decode_ms, 3), "queue_and_batch": round(wait_ms, 3),
                           **{k[:-3]: round(v, 3) for k, v in t.items() if k.endswith("_ms")}},
            "batch_size": t.get("batch_size", 1), **where}
    if seg.mask.ndim == 3:
        info["classes"] = [{"class": k, "area_px": int(m.sum()), "fraction": round(float(m.mean()), 6)}
                           for k, m in enumerate(mask_channels(seg.mask))]
    return info


def _png(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError("could not encode the mask as PNG")
    return buf.tobytes()


def mask_png(seg) -> bytes:
    """The mask as a 0/255 PNG (for several classes, their union)."""
    return _png(mask_union(seg.mask))


def class_mask_pngs(seg) -> list[bytes]:
    """One 0/255 PNG per class, in class order ([] for a one-class model)."""
    return [] if seg.mask.ndim == 2 else [_png(m) for m in mask_channels(seg.mask)]


def build_app(artifact, *, device: str = "cpu", replicas: int = 1, max_batch: int = 8,
              batch_wait_ms: float = 5.0, max_bytes: int = MAX_BYTES, threads: int | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, trusted_keys=None):
    """The Ray Serve application (bind()-ed deployment) serving `artifact` (each replica loads it
    under the trust policy `trusted_keys`, default $CMUNEXT_TRUSTED_KEYS; bodies are admitted by
    `max_bytes` and, from their header, `max_pixels`)."""
    serve = require("ray.serve")
    fastapi = require("fastapi")
    app = fastapi.FastAPI(title="cmunext-edge segmentation")

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=4 * max_batch)
    @serve.ingress(app)
    class Segmenter:
        def __init__(self):
            from cmunext_edge.runtime.segmenter import EdgeSegmenter
            options = {"threads": threads} if threads else {}
            self.segmenter = EdgeSegmenter.from_artifact(artifact, device=device, trusted_keys=trusted_keys,
                                                         **options)
            self.artifact, self.algorithm = artifact, None
            self.check = self.segmenter.self_test()
            info = self.segmenter.describe()
            self.where = {"backend": info["backend"], "device": info["device"], "precision": info["precision"]}

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_ms / 1e3)
        async def _segment(self, images: list) -> list:
            import asyncio
            return await asyncio.to_thread(self.segmenter.segment_batch, images, batch_size=len(images))

        @app.post("/segment")
        async def segment(self, request: fastapi.Request, format: str = "json", seg: str = "binary"):
            if request.headers.get("content-type", "").split(";")[0].strip() == "application/dicom":
                return await _answer_dicom(self, request, seg, (max_bytes, max_pixels), fastapi)
            return await _answer(self, request, format, (max_bytes, max_pixels), fastapi)

        @app.get("/health")
        def health(self):
            body = {"status": "ok" if self.check.status != "fail" else "failing", "artifact": str(artifact),
                    **self.where, "selftest": self.check.as_dict()}
            return fastapi.responses.JSONResponse(body, status_code=503 if self.check.status == "fail" else 200)

    return Segmenter.bind()


def _declared_length(headers) -> int:
    """The body size a request declares (0 when it declares none); 400 when it is not a number."""
    value = headers.get("content-length") or "0"
    if not value.strip().isdigit():
        raise RequestError(400, f"Content-Length {value[:40]!r} is not a number of bytes")
    return int(value)


def _check_request(request, name: str, value: str, allowed: tuple, max_bytes: int) -> None:
    """A query choice and the declared body size, before the body is read (400 / 413)."""
    if value not in allowed:
        raise RequestError(400, f"{name} must be {' or '.join(allowed)}, not {value!r}")
    if _declared_length(request.headers) > max_bytes:
        raise RequestError(413, f"request body exceeds the limit of {max_bytes} bytes")


async def _answer(replica, request, fmt: str, limits: tuple, fastapi):
    """One /segment request: checks, batched inference, the JSON or PNG answer; never a traceback."""
    responses = fastapi.responses
    started = time.perf_counter()
    max_bytes, max_pixels = limits
    try:
        _check_request(request, "format", fmt, ("json", "png"), max_bytes)
        bgr = decode_body(await request.body(), max_bytes, max_pixels)
        decoded = time.perf_counter()
        seg = await replica._segment(bgr)
        info = describe_result(seg, replica.where, (decoded - started) * 1e3,
                               (time.perf_counter() - decoded) * 1e3 - seg.timings["total_ms"])
        png = mask_png(seg)
        per_class = [base64.b64encode(p).decode() for p in class_mask_pngs(seg)]
    except RequestError as exc:
        return responses.JSONResponse({"error": str(exc)}, status_code=exc.status)
    except Exception as exc:      # a server-side failure: a message, not a traceback
        return responses.JSONResponse({"error": f"segmentation failed: {type(exc).__name__}: {exc}"},
                                      status_code=500)
    if fmt == "png":
        return responses.Response(png, media_type="image/png", headers={"X-Segmentation": json.dumps(info)})
    extra = {"class_masks_png": per_class} if per_class else {}
    return responses.JSONResponse({**info, "mask_png": base64.b64encode(png).decode(), **extra})


def dicom_seg_bytes(ds, segmentations, algorithm, kind: str = "binary") -> bytes:
    """The DICOM SEG (bytes) of the per-frame Segmentations of Dataset `ds`."""
    from io import BytesIO
    from cmunext_edge.predict.dicom_seg import SegOptions, build_seg
    planes = [(s.probability if kind == "fractional" else s.mask) for s in segmentations]
    masks = np.stack([p if p.ndim == 3 else p[..., None] for p in planes])
    buf = BytesIO()
    build_seg([ds], masks, SegOptions(kind=kind), algorithm).save_as(buf)
    return buf.getvalue()


async def _answer_dicom(replica, request, kind: str, limits: tuple, fastapi):
    """One DICOM /segment request: header checks (too many pixels: 413 before decoding), every
    frame batched, a SEG back."""
    import asyncio
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.core.dicom import DicomError, dataset_from_bytes, read_frames
    from cmunext_edge.runtime.algorithm import algorithm_of
    responses = fastapi.responses
    max_bytes, max_pixels = limits
    try:
        _check_request(request, "seg", kind, ("binary", "fractional"), max_bytes)
        body = await request.body()
        if not body or len(body) > max_bytes:
            raise RequestError(413 if body else 400, f"DICOM body of {len(body)} bytes (limit {max_bytes})")
        try:
            ds = dataset_from_bytes(body, max_pixels)
            frames = read_frames(ds, max_pixels)
        except ImageTooLargeError as exc:          # the one pixel limit (image_limits.check_pixels)
            raise RequestError(413, f"DICOM refused before decoding: {exc}") from None
        except DicomError as exc:
            raise RequestError(400, str(exc)) from None
        segs = await asyncio.gather(*(replica._segment(f) for f in frames))
        if getattr(replica, "algorithm", None) is None:
            replica.algorithm = algorithm_of(replica.artifact, replica.where["precision"])
        data = dicom_seg_bytes(ds, segs, replica.algorithm, kind)
    except RequestError as exc:
        return responses.JSONResponse({"error": str(exc)}, status_code=exc.status)
    except MissingDependencyError as exc:
        return responses.JSONResponse({"error": str(exc)}, status_code=501)
    except Exception as exc:
        return responses.JSONResponse({"error": f"segmentation failed: {type(exc).__name__}: {exc}"},
                                      status_code=500)
    return responses.Response(data, media_type="application/dicom",
                              headers={"X-Frames": str(len(frames))})


def start(artifact, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          num_cpus: int | None = None, **app_options) -> str:
    """Start (or join) Ray, run the application, wait until it is healthy -> its base URL."""
    ray, serve = require("ray"), require("ray.serve")
    from cmunext_edge.resources import resolve_weights
    artifact = Path(resolve_weights(artifact)).resolve()
    if not artifact.is_file():
        raise FileNotFoundError(f"{artifact}: no such artifact")
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        previous = signal.getsignal(signal.SIGTERM)
        ray.init(log_to_driver=False, configure_logging=False, **kwargs)
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)     # ray.init installs sys.exit(15): keep the caller's
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(artifact, **app_options), name="cmunext", route_prefix="/")
    return f"http://{host}:{port}"


def stop() -> None:
    """Tear down the Serve application and controller, then the Ray instance this process holds
    (also one interrupted half-way through `ray.init`: its node processes are killed too)."""
    ray, serve = require("ray"), require("ray.serve")
    if ray.is_initialized():
        serve.shutdown()
    ray.shutdown()
