"""Ray Serve endpoint on a local Ray instance (num_cpus=2, localhost only): a good image, bad
input (4xx with a JSON message, 404/405 included), the size bound (chunked bodies too), stalled
uploads (408, the server keeps answering), /health with the self-test; everything torn down."""
import base64
import json
import socket
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from cmunext_edge.runtime.segmenter import EdgeSegmenter

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
from cmunext_edge.scale import serve  # noqa: E402

from conftest import SAMPLES  # noqa: E402

IMAGE = sorted((SAMPLES / "images").iterdir())[0]
BODY_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(onnx_trained):
    onnx = onnx_trained.artifact             # the session's verified dynamic-batch ONNX (conftest)
    url = serve.start(onnx, port=free_port(), num_cpus=2, replicas=1, max_batch=4, max_bytes=1 << 20,
                      body_timeout_s=BODY_TIMEOUT_S)
    yield url, onnx
    serve.stop()
    assert not ray.is_initialized()


def call(url, data=None, timeout=60, headers=None, method=None):
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_good_image_gives_the_mask_of_the_segmenter(server):
    url, onnx = server
    status, _, body = call(url + "/segment", IMAGE.read_bytes())
    assert status == 200, body
    answer = json.loads(body)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(answer["mask_png"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    expected = EdgeSegmenter.from_artifact(onnx).segment(IMAGE).mask
    assert np.array_equal(mask > 0, expected) and answer["mask_area_px"] == int(expected.sum())
    assert answer["precision"] == "fp32" and answer["backend"] == "onnxruntime"
    assert answer["timings_ms"]["infer"] > 0 and answer["batch_size"] >= 1
    status, headers, png = call(url + "/segment?format=png", IMAGE.read_bytes())
    assert status == 200 and headers["content-type"] == "image/png" and png[:4] == b"\x89PNG"
    assert json.loads(headers["x-segmentation"])["mask_area_px"] == answer["mask_area_px"]


def test_bad_input_gets_4xx_with_a_message(server):
    url, _ = server
    from test_reliability import _png_bomb          # a real 20000x20000 PNG of ~400 KB
    for data, code, words in [(b"this is not an image", 400, "not a decodable image"),
                              (b"", 400, "empty request body"),
                              (b"\x89PNG" + bytes(2 << 20), 413, "exceeds the limit"),
                              (_png_bomb(20000), 413, "refused before decoding")]:
        status, _, body = call(url + "/segment", data)
        assert status == code and words in json.loads(body)["error"], body
        assert b"Traceback" not in body
    for shape in [(32, 32), (32, 32, 3)]:       # said in terms of the upload, not of Python arrays
        float_tiff = cv2.imencode(".tiff", np.full(shape, 0.5, np.float32))[1].tobytes()
        status, _, body = call(url + "/segment", float_tiff)
        assert status == 400 and "sample format (32-bit floating-point) is not supported" in json.loads(body)["error"]
    # documented query parameters: an unknown value is 400 naming it and its values, whatever the body
    for query, content_type, words in [("format=tiff", None, "'format' must be json or png"),
                                       ("seg=bogus", None, "'seg' must be binary or fractional"),
                                       ("format=bogus", "application/dicom", "'format' must be json or png"),
                                       ("seg=bogus", "Application/DICOM", "'seg' must be binary or fractional")]:
        headers = {"Content-Type": content_type} if content_type else {}
        status, _, body = call(f"{url}/segment?{query}", IMAGE.read_bytes(), headers=headers)
        assert status == 400 and words in json.loads(body)["error"], (query, body)
    # 404 and 405 answer {"error": ...} like every other error (not FastAPI's {"detail": ...})
    for path, method, code, words in [("/nothing", "GET", 404, "no such endpoint: GET /nothing"),
                                      ("/segment", "GET", 405, "method GET is not allowed on /segment")]:
        status, _, body = call(url + path, method=method)
        assert status == code and list(json.loads(body)) == ["error"] and words in json.loads(body)["error"], body


def test_unknown_or_repeated_query_parameters_and_undocumented_paths_are_refused(server):
    """A typo in a parameter name (`fromat`) or a repeated one was answered 200 with the default or
    the last value; FastAPI's /docs, /redoc and /openapi.json answered 200 although every other path
    is documented as 404."""
    url, _ = server
    for query, words in [("fromat=png", "unknown query parameter 'fromat' (known: format, seg)"),
                         ("format=png&format=json", "query parameter 'format' is given 2 times")]:
        status, _, body = call(f"{url}/segment?{query}", IMAGE.read_bytes())
        assert status == 400 and words in json.loads(body)["error"], (query, body)
    for path in ("/docs", "/redoc", "/openapi.json"):
        status, _, body = call(url + path)
        assert status == 404 and "no such endpoint: GET " + path in json.loads(body)["error"], (path, body)


def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(server):
    """/segment/ was answered 307 (Starlette's redirect to /segment: urllib and many clients do not
    follow it with a POST, and a GET to /health/ was redirected silently); now it is 404 with the
    JSON body of every other unknown path."""
    url, _ = server
    for path, method, data in (("/segment/", "POST", IMAGE.read_bytes()), ("/health/", "GET", None)):
        status, headers, body = call(url + path, data, method=method)
        assert status == 404 and "location" not in headers, (path, status, body)
        assert json.loads(body) == {"error": f"no such endpoint: {method} {path} (endpoints: {serve.ENDPOINTS})"}


def test_query_names_are_checked_before_their_values():
    serve.check_query_names([("format", "png"), ("seg", "binary")])
    for pairs, words in [([("Format", "png")], "unknown query parameter 'Format'"),
                         ([("seg", "binary"), ("seg", "binary")], "'seg' is given 2 times")]:
        with pytest.raises(serve.RequestError) as err:
            serve.check_query_names(pairs)
        assert err.value.status == 400 and words in str(err.value)


def _raw_post(url, head: dict, body_part: bytes) -> socket.socket:
    """A socket that has sent a POST /segment's headers and the start of its body, and stops there."""
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    lines = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **head}.items())
    sock.sendall(f"POST /segment HTTP/1.1\r\n{lines}\r\n".encode() + body_part)
    return sock


def _status_and_body(sock) -> tuple[int | None, bytes]:
    """The answer read until the server closes (None: closed without an answer)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and b'"}' in data.split(b"\r\n\r\n", 1)[1]:
                break
    except ConnectionResetError:
        pass
    sock.close()
    return (int(data.split()[1]) if data.startswith(b"HTTP/") else None), data


def test_a_chunked_body_is_stopped_at_the_limit_not_read_whole(server):
    """No Content-Length: the body is read as a stream and refused once it passes --max-bytes,
    without waiting for its end (this one never ends: reading it whole would wait for 408)."""
    url, _ = server
    chunk = b"%x\r\n" % (64 << 10) + bytes(64 << 10) + b"\r\n"
    sock = _raw_post(url, {"Transfer-Encoding": "chunked"}, chunk * 17)      # 1.06 MiB, limit 1 MiB
    status, data = _status_and_body(sock)
    assert status == 413 and b"exceeds the limit of 1048576 bytes" in data, data


def test_stalled_uploads_get_408_and_do_not_block_other_requests(server):
    """20 clients (more than the replica's 4 x max_batch places) send headers and 3 bytes of a
    100000-byte body, then stall: each gets 408 (or its connection closed) after the body
    timeout, and a normal request sent meanwhile is answered."""
    url, _ = server
    stalled = [_raw_post(url, {"Content-Length": "100000"}, b"abc") for _ in range(20)]
    status, _, body = call(url + "/segment", IMAGE.read_bytes())
    assert status == 200, body
    answers = [_status_and_body(sock) for sock in stalled]
    assert all(status in (408, None) for status, _ in answers), answers
    assert any(b"did not arrive within 5 s (3 of 100000 bytes received" in data for _, data in answers), answers


def test_concurrent_requests_are_batched_and_all_answered(server):
    from concurrent.futures import ThreadPoolExecutor
    url, _ = server
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(url + "/segment", IMAGE.read_bytes()), range(16)))
    assert all(status == 200 for status, _, _ in answers)
    assert max(json.loads(body)["batch_size"] for _, _, body in answers) > 1


def test_health_reports_the_self_test(server):
    url, onnx = server
    status, _, body = call(url + "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["selftest"]["passed"]
    assert health["artifact"] == str(onnx.resolve()) and health["device"] == "cpu"


def test_cli_refuses_a_missing_artifact_without_starting_ray(tmp_path, capsys):
    from cmunext_edge.cli.serve import main
    assert main([str(tmp_path / "none.onnx"), "--port", "1"]) == 2       # nothing done: exit 2
    assert "no such artifact" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:       # a random port: Serve would not say which, so refused
        main([str(tmp_path / "none.onnx"), "--port", "0"])
    assert exc.value.code == 2 and "0 (a random port) is not supported" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:                                  # argparse: a usage error
        main([str(tmp_path / "none.onnx"), "--replicas", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("cmunext-serve: error: argument --replicas: 0 is out of range"), err


def test_dicom_body_is_answered_with_a_seg_of_every_frame(server, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    from pydicom.data import get_testdata_file
    from cmunext_edge.data.dicom_sample import write_ultrasound_dicoms
    from cmunext_edge.predict.dicom_seg import read_back
    url, onnx = server
    write_ultrasound_dicoms(tmp_path)
    cine = tmp_path / "us_cine.dcm"
    req = urllib.request.Request(url + "/segment", data=cine.read_bytes(), method="POST",
                                 headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.status == 200 and resp.headers["content-type"] == "application/dicom"
        (tmp_path / "answer.seg.dcm").write_bytes(resp.read())
    source = pydicom.dcmread(cine, stop_before_pixels=True)
    back = read_back(tmp_path / "answer.seg.dcm", [source])[..., 0].astype(bool)
    expected = np.stack([s.mask for s in EdgeSegmenter.from_artifact(onnx).segment_frames(cine)])
    assert back.shape == (3, 448, 576) and np.array_equal(back, expected)
    # media types are case-insensitive and may carry parameters: still DICOM (an image body would be
    # "not a decodable image")
    req = urllib.request.Request(url + "/segment", data=open(get_testdata_file("test-SR.dcm"), "rb").read(),
                                 method="POST", headers={"Content-Type": "Application/DICOM; charset=binary"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 400 and b"without pixel data" in err.value.read()


def test_dicom_media_type_is_recognised_in_any_case():
    assert serve.is_dicom("application/dicom") and serve.is_dicom("Application/DICOM; charset=binary")
    assert serve.is_dicom(" APPLICATION/DICOM ") and not serve.is_dicom("image/png")
    assert not serve.is_dicom(None) and not serve.is_dicom("application/dicom+json")


def test_stop_answers_the_requests_in_flight_first(server):
    """Stopping (what SIGTERM and Ctrl-C do) while a request is in flight: it is answered, not
    closed unanswered (serve.shutdown() alone killed the proxy at once: the client saw the
    connection closed without a response). The request is held in flight by its upload: all but
    its last bytes are sent, the stop begins, then the rest follows. Last in this file: it stops
    the module's server."""
    import threading
    import time
    url, _ = server
    data = IMAGE.read_bytes()
    sock = _raw_post(url, {"Content-Length": str(len(data))}, data[:-100])
    time.sleep(0.5)                         # the proxy hands the request to the replica on its headers
    stopping = threading.Thread(target=serve.stop)
    stopping.start()
    time.sleep(1.0)                         # the stop is under way (it waits for the replica's requests)
    sock.sendall(data[-100:])
    status, answer = _status_and_body(sock)
    stopping.join()
    assert status == 200 and b'"mask_area_px"' in answer, answer
