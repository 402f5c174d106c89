"""Ray Serve endpoint on a local Ray instance (num_cpus=2, localhost only): a good image, bad
input (4xx with a message), the size bound, /health with the self-test; everything torn down."""
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(onnx_trained):
    onnx = onnx_trained.artifact             # the session's verified dynamic-batch ONNX (conftest)
    url = serve.start(onnx, port=free_port(), num_cpus=2, replicas=1, max_batch=4, max_bytes=1 << 20)
    yield url, onnx
    serve.stop()
    assert not ray.is_initialized()


def call(url, data=None, timeout=60):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
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
    for data, code, words in [(b"this is not an image", 400, "not a decodable image"),
                              (b"", 400, "empty request body"),
                              (b"\x89PNG" + bytes(2 << 20), 413, "exceeds the limit")]:
        status, _, body = call(url + "/segment", data)
        assert status == code and words in json.loads(body)["error"], body
        assert b"Traceback" not in body
    status, _, body = call(url + "/segment?format=tiff", IMAGE.read_bytes())
    assert status == 400 and b"format must be" in body


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
    assert main([str(tmp_path / "none.onnx"), "--port", "1"]) == 1
    assert "no such artifact" in capsys.readouterr().err
    assert main([str(tmp_path / "none.onnx"), "--replicas", "0"]) == 2


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
    req = urllib.request.Request(url + "/segment", data=open(get_testdata_file("test-SR.dcm"), "rb").read(),
                                 method="POST", headers={"Content-Type": "application/dicom"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 400 and b"without pixel data" in err.value.read()
