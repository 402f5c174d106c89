"""cmunext-predict's bounded heap (cmunext_edge/predict/heap.py): glibc's mmap threshold fixed, so
large buffers freed by the job go back to the OS instead of staying in a thread's heap."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cmunext_edge.predict.heap import DEFAULT_THRESHOLD, ENV, _glibc, threshold_from

ROOT = Path(__file__).resolve().parents[1]


def test_threshold_follows_the_environment_and_the_user_wins():
    assert threshold_from({}) == DEFAULT_THRESHOLD == 4 << 20
    assert threshold_from({ENV: " 1048576 "}) == 1048576
    assert threshold_from({ENV: "0"}) is None                      # glibc's dynamic default kept
    assert threshold_from({"MALLOC_MMAP_THRESHOLD_": "65536", ENV: "1048576"}) is None
    assert threshold_from({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) is None
    assert threshold_from({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == DEFAULT_THRESHOLD
    for bad in ("abc", "-1", "1.5", str(64 << 20)):
        with pytest.raises(ValueError, match=ENV):
            threshold_from({ENV: bad})


_PEAK = textwrap.dedent("""
    import resource, subprocess, sys
    subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
""")


@pytest.mark.skipif(_glibc() is None, reason="the bounded heap is a glibc setting; this C library keeps its own")
def test_peak_memory_of_a_large_image_job_is_what_it_holds(tmp_path):
    """16 images of 1500x1500 (two batches of 8): with glibc's dynamic threshold the freed probability
    maps and images stay in the threads' heaps (measured 915-990 MB); bounded, 621-635 MB."""
    cv2 = pytest.importorskip("cv2")
    src = tmp_path / "large"
    src.mkdir()
    samples = sorted((ROOT / "cmunext_edge" / "samples" / "busi" / "images").glob("*.png"))
    for k in range(16):
        img = cv2.imread(str(samples[k % len(samples)]))
        cv2.imwrite(str(src / f"img{k:02d}.png"), cv2.resize(img, (1500, 1500), interpolation=cv2.INTER_LINEAR))

    def peak_mb(threshold):
        cmd = [sys.executable, "-m", "cmunext_edge.cli.predict", str(src), "--out", str(tmp_path / f"out{threshold}"),
               "--batch-size", "8", "--workers", "1", "--quiet"]
        env = {k: v for k, v in os.environ.items() if k not in (ENV, "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
        r = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True, timeout=600,
                           env={**env, ENV: threshold})
        assert r.returncode == 0, r.stderr
        assert len(list((tmp_path / f"out{threshold}" / "masks").glob("*.png"))) == 16
        return int(r.stdout.strip())
    dynamic, bounded = peak_mb("0"), peak_mb(str(4 << 20))
    assert bounded <= 0.85 * dynamic, (bounded, dynamic)


def test_a_bad_threshold_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cmunext_edge.cli.predict", str(ROOT / "cmunext_edge" / "samples" / "busi"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, ENV: "lots"})
    assert r.returncode == 2 and ENV in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()
