"""Serve an artifact over HTTP with Ray Serve: `POST /segment`, `GET /health`.

`POST /segment` takes the image file's bytes as the request body (PNG, JPEG, BMP, TIFF; e.g.
`curl --data-binary @scan.png http://127.0.0.1:8000/segment`) and answers JSON: the mask as a
base64 PNG (0/255), its area in pixels and as a fraction, the timings (decode, preprocess,
infer, postprocess, total in the replica, and the batch it ran in) and the backend, device and
precision that ran. `?format=png` answers the PNG itself with that JSON in the
`X-Segmentation` header. Requests are batched per replica (`@serve.batch`). The body is read as a
stream: one over `max_bytes` gets 413 as soon as it passes the limit (chunked uploads too, never
read whole), one that does not arrive within `body_timeout_s` gets 408 and frees its place; an
empty or undecodable one 400 with a message; an image whose header gives more pixels than the
toolkit's one limit (image_limits.DEFAULT_MAX_PIXELS, or `max_pixels`) gets 413 before anything is
decoded. Every error, 404 and 405 included, is JSON `{"error": ...}`. `GET /health` reports the
artifact, where it runs and the self-test each replica ran at start (503 if it failed).
A DICOM body (`Content-Type: application/dicom`, any case, parameters allowed; single- or
multi-frame, the [dicom] extra) is answered
with a DICOM Segmentation of every frame (`application/dicom`, binary, one segment per class; see
docs/dicom.md); `?seg=fractional` for probabilities. Its header is checked before any decoding, and
one no SEG can reference (e.g. several frames under a single-frame SOP class) gets 422 before
inference. A query parameter that does not apply to the body (`format` with DICOM, `seg` with an
image) is 400, as is a DICOM file sent without its Content-Type.
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
from typing import NamedTuple

import cv2
import numpy as np

from cmunext_edge._deps import require
from cmunext_edge.fileio import require_file
from cmunext_edge.core.image_limits import DEFAULT_MAX_PIXELS, ImageSizeError, ImageTooLargeError, check_bytes
from cmunext_edge.predict.scores import mask_channels, mask_union
from cmunext_edge.core.preprocess import ImageReadError, decode_image_bytes, to_bgr_uint8

MAX_BYTES = 20 << 20          # request body limit
BODY_TIMEOUT_S = 10.0         # the whole body must arrive within this time of the request (else 408)
READING_SLOTS = 32            # requests a replica may hold reading their body, beyond its inference places
QUERY_CHOICES = {"format": ("json", "png"), "seg": ("binary", "fractional")}   # documented, for every body
QUERY_DEFAULTS = {"format": "json", "seg": "binary"}
QUERY_FOR_DICOM = {"format": False, "seg": True}      # which body each parameter shapes the answer of


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
    if body[128:132] == b"DICM":
        raise RequestError(400, "the body is a DICOM file: send it with Content-Type: application/dicom "
                                "(answered with a DICOM SEG)")
    try:
        check_bytes(body, max_pixels, what="header")
    except ImageTooLargeError as exc:
        raise RequestError(413, f"image refused before decoding: {exc}") from None
    except ImageSizeError as exc:
        raise RequestError(400, f"the {len(body)}-byte body is not a decodable image ({exc})") from None
    data = np.frombuffer(body, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:     # OpenCV cannot convert some sample formats to colour (a 1-channel float TIFF): which?
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype in (np.uint8, np.uint16):
            raise RequestError(400, f"the {len(body)}-byte body is not a decodable image "
                                    f"(PNG, JPEG, BMP, TIFF, WebP)")
    if img.dtype not in (np.uint8, np.uint16):     # e.g. a float TIFF: say so in terms of the file
        kind = {"f": "floating-point", "i": "signed integer"}.get(img.dtype.kind, img.dtype.kind)
        raise RequestError(400, f"the uploaded image's sample format ({img.dtype.itemsize * 8}-bit {kind}) is not "
                                f"supported: send an image with 8- or 16-bit unsigned integer samples "
                                f"(e.g. an 8- or 16-bit PNG or TIFF)")
    if img.dtype == np.uint16:    # decoded as the batch job decodes files: a 16-bit TIFF as cv2.imread rounds it
        img = decode_image_bytes(data)
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
              max_pixels: int | None = DEFAULT_MAX_PIXELS, trusted_keys=None,
              body_timeout_s: float = BODY_TIMEOUT_S):
    """The Ray Serve application (bind()-ed deployment) serving `artifact` (each replica loads it
    under the trust policy `trusted_keys`, default $CMUNEXT_TRUSTED_KEYS; bodies are admitted by
    `max_bytes`, `body_timeout_s` and, from their header, `max_pixels`).

    Ray Serve's proxy gives a request its replica place as soon as the headers arrive; the body
    follows. So a replica takes READING_SLOTS requests beyond its 4 x `max_batch` inference places,
    reads each body with a deadline, and only then lets it wait for an inference place: a client
    that stalls its upload holds a reading place for `body_timeout_s` at most (then 408)."""
    serve = require("ray.serve")
    fastapi = require("fastapi")
    # no /docs, /redoc, /openapi.json: every path but the two endpoints is 404 (docs/scale-out.md), and
    # so is /segment/ (no 307 redirect to /segment, which a client would follow with a GET or not at all)
    app = fastapi.FastAPI(title="cmunext-edge segmentation", docs_url=None, redoc_url=None, openapi_url=None,
                          redirect_slashes=False)
    _json_errors(app, fastapi)
    limits = Limits(max_bytes, max_pixels, body_timeout_s)

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=4 * max_batch + READING_SLOTS)
    @serve.ingress(app)
    class Segmenter:
        def __init__(self):
            import asyncio
            from cmunext_edge.runtime.segmenter import EdgeSegmenter
            options = {"threads": threads} if threads else {}
            self.segmenter = EdgeSegmenter.from_artifact(artifact, device=device, trusted_keys=trusted_keys,
                                                         max_pixels=max_pixels, **options)
            self.artifact, self.algorithm = artifact, None
            self.check = self.segmenter.self_test()
            info = self.segmenter.describe()
            self.where = {"backend": info["backend"], "device": info["device"], "precision": info["precision"]}
            self.places = asyncio.Semaphore(4 * max_batch)      # decoded images waiting for or in a batch

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_ms / 1e3)
        async def _segment(self, images: list) -> list:
            import asyncio
            return await asyncio.to_thread(self.segmenter.segment_batch, images, batch_size=len(images))

        @app.post("/segment")
        async def segment(self, request: fastapi.Request, format: str | None = None, seg: str | None = None):
            return await _answer(self, request, {"format": format, "seg": seg}, limits, fastapi)

        @app.get("/health")
        def health(self):
            body = {"status": "ok" if self.check.status != "fail" else "failing", "artifact": str(artifact),
                    **self.where, "selftest": self.check.as_dict()}
            return fastapi.responses.JSONResponse(body, status_code=503 if self.check.status == "fail" else 200)

    return Segmenter.bind()


class Limits(NamedTuple):
    max_bytes: int
    max_pixels: int | None
    body_timeout_s: float


ENDPOINTS = "POST /segment, GET /health"
APP = "cmunext"               # the Serve application's name


def _json_errors(app, fastapi) -> None:
    """404, 405 and request-validation errors as `{"error": ...}` like every other answer (FastAPI's
    default is `{"detail": ...}`)."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no such endpoint: {where} (endpoints: {ENDPOINTS})"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} is not allowed on {request.url.path} (allowed: {allowed}; " \
                      f"endpoints: {ENDPOINTS})"
        else:
            message = str(exc.detail)
        return fastapi.responses.JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(fastapi.exceptions.RequestValidationError)
    async def validation_error(request, exc):
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return fastapi.responses.JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)


def is_dicom(content_type: str | None) -> bool:
    """Whether a Content-Type names DICOM (media types are case-insensitive; parameters ignored)."""
    return (content_type or "").split(";")[0].strip().lower() == "application/dicom"


def check_query_names(pairs) -> None:
    """Every query parameter (name, value) must be a documented one, given once (400): a typo
    (`?fromat=png`) or a repeat (`?format=png&format=json`) would otherwise be ignored or resolved
    silently, and the answer would not be the one asked for."""
    names = [name for name, _ in pairs]
    for name in names:
        if name not in QUERY_CHOICES:
            raise RequestError(400, f"unknown query parameter {name[:40]!r} (known: {', '.join(QUERY_CHOICES)})")
        if names.count(name) > 1:
            raise RequestError(400, f"query parameter {name!r} is given {names.count(name)} times: give it once")


def check_query(params: dict, dicom: bool) -> dict:
    """The query parameters given (None: not given) -> every parameter with its value or default.
    Each must have one of its values, whatever the body, and shape the answer to this body (400)."""
    for name, allowed in QUERY_CHOICES.items():
        if params.get(name) is not None and params[name] not in allowed:
            raise RequestError(400, f"query parameter {name!r} must be {' or '.join(allowed)}, "
                                    f"not {params[name][:40]!r}")
    for name, for_dicom in QUERY_FOR_DICOM.items():
        if params.get(name) is not None and for_dicom != dicom:
            raise RequestError(400, f"query parameter {name!r} applies to "
                                    + ("a DICOM body (Content-Type: application/dicom), which is answered with a "
                                       "DICOM SEG" if for_dicom else
                                       "an image body; a DICOM body is answered with a DICOM SEG (?seg=binary or "
                                       "fractional)"))
    return {name: params.get(name) or default for name, default in QUERY_DEFAULTS.items()}


def _declared_length(headers) -> int | None:
    """The body size a request declares (None when it declares none); 400 when it is not a number."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise RequestError(400, f"Content-Length {value[:40]!r} is not a number of bytes")
    return int(value)


async def read_body(request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, read as a stream: 413 as soon as it passes `max_bytes` (a declared
    Content-Length over it before reading anything; a chunked body is never read whole), 408 when
    it has not all arrived within `timeout_s`."""
    import asyncio
    from starlette.requests import ClientDisconnect
    declared = _declared_length(request.headers)
    if declared is not None and declared > max_bytes:
        raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks, received = [], [0]

    async def read():
        async for chunk in request.stream():
            received[0] += len(chunk)
            if received[0] > max_bytes:
                raise RequestError(413, f"request body exceeds the limit of {max_bytes} bytes "
                                        f"(reading stopped at {received[0]} bytes)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        of = f" of {declared}" if declared is not None else ""
        raise RequestError(408, f"the request body did not arrive within {timeout_s:g} s ({received[0]}{of} "
                                f"bytes received; cmunext-serve --body-timeout)") from None
    except ClientDisconnect:
        raise RequestError(400, f"the client disconnected after {received[0]} bytes of the body") from None
    return b"".join(chunks)


def _error(responses, status: int, message: str):
    # 408/413: the rest of the body was not read, so the connection cannot carry another request
    headers = {"Connection": "close"} if status in (408, 413) else None
    return responses.JSONResponse({"error": message}, status_code=status, headers=headers)


async def _answer(replica, request, params: dict, limits: Limits, fastapi):
    """One /segment request: query and header checks, the body read (streamed, with a deadline),
    then an inference place, batched inference and the JSON, PNG or DICOM SEG answer; never a
    traceback."""
    from cmunext_edge._deps import MissingDependencyError
    responses = fastapi.responses
    try:
        dicom = is_dicom(request.headers.get("content-type"))
        check_query_names(request.query_params.multi_items())
        params = check_query(params, dicom)
        body = await read_body(request, limits.max_bytes, limits.body_timeout_s)
        async with replica.places:
            if dicom:
                return await _answer_dicom(replica, body, params["seg"], limits, responses)
            return await _answer_image(replica, body, params["format"], limits, responses)
    except RequestError as exc:
        return _error(responses, exc.status, str(exc))
    except MissingDependencyError as exc:
        return _error(responses, 501, str(exc))
    except Exception as exc:      # a server-side failure: a message, not a traceback
        return _error(responses, 500, f"segmentation failed: {type(exc).__name__}: {exc}")


async def _answer_image(replica, body: bytes, fmt: str, limits: Limits, responses):
    started = time.perf_counter()
    bgr = decode_body(body, limits.max_bytes, limits.max_pixels)
    decoded = time.perf_counter()
    seg = await replica._segment(bgr)
    info = describe_result(seg, replica.where, (decoded - started) * 1e3,
                           (time.perf_counter() - decoded) * 1e3 - seg.timings["total_ms"])
    png = mask_png(seg)
    if fmt == "png":
        return responses.Response(png, media_type="image/png", headers={"X-Segmentation": json.dumps(info)})
    per_class = [base64.b64encode(p).decode() for p in class_mask_pngs(seg)]
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


async def _answer_dicom(replica, body: bytes, kind: str, limits: Limits, responses):
    """One DICOM body: header checks (too many pixels: 413 before decoding), every frame batched,
    a SEG back."""
    import asyncio
    from cmunext_edge.core.dicom import DicomError, dataset_from_bytes, read_frames
    from cmunext_edge.predict.dicom_seg import SegSourceError, check_sources
    from cmunext_edge.runtime.algorithm import algorithm_of
    if not body:
        raise RequestError(400, "empty request body: send the DICOM file's bytes "
                                "(curl -H 'Content-Type: application/dicom' --data-binary @us.dcm)")
    try:
        ds = dataset_from_bytes(body, limits.max_pixels)
        check_sources([ds])                     # a SEG must be able to reference it: known before inference
        frames = read_frames(ds, limits.max_pixels)
    except ImageTooLargeError as exc:          # the one pixel limit (image_limits.check_pixels)
        raise RequestError(413, f"DICOM refused before decoding: {exc}") from None
    except SegSourceError as exc:
        raise RequestError(422, f"request body: no DICOM SEG can answer it: {exc}") from None
    except DicomError as exc:
        raise RequestError(400, str(exc)) from None
    segs = await asyncio.gather(*(replica._segment(f) for f in frames))
    if getattr(replica, "algorithm", None) is None:
        replica.algorithm = algorithm_of(replica.artifact, replica.where["precision"])
    data = dicom_seg_bytes(ds, segs, replica.algorithm, kind)
    return responses.Response(data, media_type="application/dicom", headers={"X-Frames": str(len(frames))})


def start(artifact, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          num_cpus: int | None = None, **app_options) -> str:
    """Start (or join) Ray, run the application, wait until it is healthy -> its base URL."""
    ray, serve = require("ray"), require("ray.serve")
    from cmunext_edge.resources import resolve_weights
    artifact = Path(resolve_weights(artifact)).resolve()
    require_file(artifact)
    if port == 0:       # Serve's proxy would pick a port it does not report back: refuse, do not guess
        raise ValueError("port 0 (a random port) is not supported: Ray Serve does not report the port "
                         "it picks; give a free port, e.g. 8000")
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        previous = signal.getsignal(signal.SIGTERM)
        ray.init(log_to_driver=False, configure_logging=False, **kwargs)
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)     # ray.init installs sys.exit(15): keep the caller's
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(artifact, **app_options), name=APP, route_prefix="/")
    return f"http://{host}:{port}"


def stop() -> None:
    """Tear down the Serve application and controller, then the Ray instance this process holds
    (also one interrupted half-way through `ray.init`: its node processes are killed too).

    The application is deleted first: its replicas then finish the requests they hold (Serve's
    graceful replica shutdown) while the proxy is still there to carry the answers back;
    `serve.shutdown()` alone kills the proxy at once, closing those connections unanswered."""
    ray, serve = require("ray"), require("ray.serve")
    if ray.is_initialized():
        try:
            serve.delete(APP)
        except Exception:       # stopped during start-up: no controller or application to drain
            pass
        serve.shutdown()
    ray.shutdown()
