"""The command-line tools in an install without the `torch` extra.

Each command runs in a fresh interpreter whose import system refuses `torch` and
`safetensors` (what `pip install cmunext-edge` without `[torch]` leaves out): every
`--help` and `cmunext-bench --list-devices` must work, checkpoint inspection
(`cmunext-info` on .safetensors and .pth) must work, and a command that does need torch must say which extra
to install instead of ending in a traceback.
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "cmunext-s-busi.safetensors"
EXTRA = 'pip install "cmunext-edge[torch]"'

# Installed before the CLI module is imported: any import of torch or safetensors fails
# exactly as it does where the package is not installed.
BLOCKER = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "safetensors"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
import importlib
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module] + argv
sys.exit(importlib.import_module("cmunext_edge.cli." + module).main(argv))
"""

COMMANDS = ("predict", "info", "export", "bench", "train", "bundle", "check", "compare", "keys")


def run_without_torch(command: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, command, *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_blocker_really_blocks_torch():
    probe = subprocess.run([sys.executable, "-c", BLOCKER.split("import importlib")[0] + "import torch"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_without_torch(command):
    done = run_without_torch(command, "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: cmunext-{command}" in done.stdout
    assert "Traceback" not in done.stderr


def test_list_devices_works_without_torch():
    done = run_without_torch("bench", "--list-devices")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "pytorch" in rows and "none" in rows["pytorch"]


def test_info_inspects_safetensors_without_torch():
    if not SHIPPED.is_file():
        pytest.skip("no shipped model")
    done = run_without_torch("info", SHIPPED, "--size", "128")
    assert done.returncode == 0, done.stderr
    assert "cmunext-s" in done.stdout and "0.418 M" in done.stdout


def _assert_names_extra(done):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)      # nothing done: exit 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cmunext-") and lines[0].endswith(EXTRA), done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_info_inspects_official_pth_without_torch(ckpt_s):
    done = run_without_torch("info", ckpt_s, "--json")
    assert done.returncode == 0, done.stderr
    assert '"variant": "cmunext-s"' in done.stdout and '"params_m": 0.418' in done.stdout


def test_commands_that_need_torch_name_the_extra(tmp_path):
    if not SHIPPED.is_file():
        pytest.skip("no shipped model")
    _assert_names_extra(run_without_torch("export", "--weights", SHIPPED, "--target", "onnx",
                                          "--out", tmp_path / "exports"))
    _assert_names_extra(run_without_torch("train", tmp_path, "--out", tmp_path / "run"))
    _assert_names_extra(run_without_torch("predict", ROOT / "cmunext_edge" / "samples" / "busi",
                                          "--out", tmp_path / "pred"))


def test_core_modules_import_without_torch_and_model_names_the_extra():
    probe = BLOCKER.split("import importlib")[0] + """
import cmunext_edge, cmunext_edge.checkpoints.weights, cmunext_edge.core.complexity, cmunext_edge.runtime.registry
from cmunext_edge.core.complexity import variant_complexity
assert round(variant_complexity("cmunext-l").mparams, 3) == 8.287
try:
    import cmunext_edge.core.model
except ImportError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert EXTRA in done.stdout
