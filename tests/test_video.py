"""Video files and streams (issue 16 item 7): cmunext-predict on a clip accounts for every frame,
writes an overlay video and per-frame masks (or a mask video); EdgeSegmenter.stream yields every
frame in order, as segment() would segment it."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmunext_edge.cli.predict import main as predict_main
from cmunext_edge.predict.video import is_video_source

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "cmunext_edge" / "samples" / "busi" / "images").glob("*.png"))
N = 32


def make_clip(path: Path, n: int = N, size=(160, 128)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    assert w.isOpened()
    for i in range(n):
        w.write(cv2.resize(cv2.imread(str(IMAGES[i % len(IMAGES)])), size))
    w.release()
    return path


def count_frames(path: Path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("torch")
    return "cmunext-s-busi"


def test_video_sources_are_recognised(clip, tmp_path):
    assert is_video_source(clip) and is_video_source("0") and is_video_source("rtsp://cam/1")
    assert not is_video_source(IMAGES[0]) and not is_video_source(tmp_path / "missing.mp4")


def test_predict_segments_every_frame_of_a_clip(clip, weights, tmp_path):
    out = tmp_path / "out"
    assert predict_main([str(clip), "--weights", weights, "--out", str(out), "--batch-size", "4", "--quiet"]) == 0
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["frames_decoded"] == summary["frames_written"] == summary["declared_frames"] == N
    assert len(list((out / "masks").glob("*.png"))) == N and count_frames(out / "overlay.mp4") == N
    mask = cv2.imread(str(out / "masks" / "000000.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (128, 160) and set(np.unique(mask)) <= {0, 255} and summary["mean_foreground"] > 0


def test_folder_of_videos_mask_video_and_max_frames(clip, weights, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip.read_bytes())
    out = tmp_path / "out"
    assert predict_main([str(folder), "--weights", weights, "--out", str(out), "--mask-video",
                         "--max-frames", "10", "--quiet"]) == 0
    assert count_frames(out / "a" / "mask.mp4") == 10 and count_frames(out / "a" / "overlay.mp4") == 10
    assert not (out / "a" / "masks").exists()


def test_a_shorter_rerun_removes_the_earlier_runs_frame_masks_and_says_so(clip, weights, tmp_path, capsys):
    """Before: a run into an --out that held a longer earlier run left that run's extra frame masks
    in masks/, which the summary then pointed at as this run's. Files of other names stay."""
    out = tmp_path / "out"
    assert predict_main([str(clip), "--weights", weights, "--out", str(out), "--quiet"]) == 0
    (out / "masks" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert predict_main([str(clip), "--weights", weights, "--out", str(out), "--max-frames", "5"]) == 0
    assert f"{N - 5} frame mask(s) of an earlier run there removed" in capsys.readouterr().out
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["frames_written"] == 5 and summary["earlier_frames_removed"] == N - 5
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:06d}.png" for i in range(5)] + ["notes.txt"]


def test_a_video_opencv_cannot_encode_is_named_and_the_masks_are_still_written(weights, tmp_path, capsys):
    """Before: 1-pixel-wide frames (which mp4v cannot encode) stopped the run at its first frame,
    exit 2, no mask written. Now the overlay video is named as not written; every mask is."""
    clip = tmp_path / "thin.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (1, 64))
    for i in range(5):
        w.write(np.full((64, 1, 3), 60 * i, np.uint8))
    w.release()
    out = tmp_path / "out"
    assert predict_main([str(clip), "--weights", weights, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'overlay.mp4'}: not written: OpenCV cannot write an mp4v video of 1x64 frames" in err, err
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["frames_written"] == 5 and len(list((out / "masks").glob("*.png"))) == 5
    assert "overlay" not in summary["outputs"] and not (out / "overlay.mp4").exists() and not list(out.glob(".*"))


def test_unreadable_video_is_reported(weights, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    # nothing could be done: exit 2 (the contract), the reason on its own line
    assert predict_main([str(bad), "--weights", weights, "--out", str(tmp_path / "o")]) == 2
    assert "cannot open" in capsys.readouterr().err


def test_stream_yields_every_frame_in_order_like_segment(clip, weights):
    from cmunext_edge.runtime.segmenter import EdgeSegmenter
    seg = EdgeSegmenter(weights)
    got = list(seg.stream(str(clip), batch_size=4))
    assert [i for i, _, _ in got] == list(range(N))
    i, frame, res = got[5]
    assert np.array_equal(res.mask, seg.segment(frame).mask) and res.mask.shape == frame.shape[:2]
    assert len(list(seg.stream(str(clip), max_frames=3))) == 3


def _damage_frames(avi: Path, frames: range) -> Path:
    """Overwrite the JPEG data of `frames` of an MJPG AVI with noise, chunk sizes kept."""
    data = bytearray(avi.read_bytes())
    starts = [i + 8 for i in range(len(data)) if data[i:i + 4] == b"00dc" and data[i + 8:i + 10] == b"\xff\xd8"]
    rng = np.random.default_rng(0)
    for k in frames:
        size = int.from_bytes(data[starts[k] - 4:starts[k]], "little")
        data[starts[k]:starts[k] + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    avi.write_bytes(bytes(data))
    return avi


def test_damaged_middle_frames_are_stepped_over_named_and_the_rest_segmented(weights, tmp_path, capsys):
    """Frames that do not decode in the middle of a file: the frames after them are still segmented
    (was: the video ended at the first one, silently), their masks keep their source frame numbers,
    and one line and the summary name the frames that did not decode (exit 1)."""
    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 80))
    for i in range(10):
        w.write(cv2.resize(cv2.imread(str(IMAGES[i % len(IMAGES)])), (96, 80)))
    w.release()
    _damage_frames(clip, range(3, 5))
    out = tmp_path / "out"
    assert predict_main([str(clip), "--weights", weights, "--out", str(out), "--batch-size", "4", "--quiet"]) == 1
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["frames_decoded"] == summary["frames_written"] == 8 and summary["missing_frames"] == 2
    assert summary["undecodable"] == [[3, 4]] and summary["problems"]
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == [f"{i:06d}" for i in (0, 1, 2, 5, 6, 7, 8, 9)]
    assert count_frames(out / "overlay.mp4") == 8
    assert "frame(s) 3-4 did not decode" in capsys.readouterr().err


def test_summary_json_of_a_folder_of_videos_lists_what_was_not_read(clip, weights, tmp_path):
    """--summary-json names every file not processed, as the image job's does (was: only the videos
    read were listed; an unopenable video and a stray file were on stderr only)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip.read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "notes.txt").write_text("x")
    report = tmp_path / "summary.json"
    assert predict_main([str(folder), "--weights", weights, "--out", str(tmp_path / "out"), "--max-frames", "2",
                         "--summary-json", str(report), "--quiet"]) == 1
    summary = json.loads(report.read_text())
    assert [v["source"] for v in summary["videos"]] == [str(folder / "a.mp4")]
    assert sorted(Path(s["path"]).name for s in summary["skipped"]) == ["broken.mp4", "notes.txt"]
    assert all(s["error"].startswith(s["path"]) for s in summary["skipped"])


def test_videos_sharing_a_stem_get_their_own_sub_folders(clip, weights, tmp_path):
    """a.mp4 and a.avi in one folder: each its own sub-folder, named as the image job names shared
    names (was: both wrote into out/a, the second's outputs over the first's, while the summary
    listed both there)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "a.avi"):
        (folder / name).write_bytes(clip.read_bytes())
    out = tmp_path / "out"
    assert predict_main([str(folder), "--weights", weights, "--out", str(out), "--max-frames", "2", "--no-overlay",
                         "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.avi", "a.mp4"]
    for name in ("a.avi", "a.mp4"):
        summary = json.loads((out / name / "video_summary.json").read_text())
        assert summary["source"] == str(folder / name) and len(list((out / name / "masks").iterdir())) == 2
