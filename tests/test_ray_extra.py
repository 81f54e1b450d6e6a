"""Without Ray installed, `--executor ray` names the extra that installs it (runs whether or not Ray is here)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `import ray` fails in this child, as it would where the extra is not installed
NO_RAY = "import sys; sys.modules['ray'] = None; from autokd_dsl.cli import main; sys.argv[0] = 'autokd-dsl'; main()"


def _search(tmp_path, *extra):
    return subprocess.run([sys.executable, "-c", NO_RAY, "search", str(ROOT / "examples" / "space.kd"), "--teacher",
                           "resnet8", "--student", "resnet8", "--input-size", "1x8x8", "--out", str(tmp_path / "run"),
                           *extra], capture_output=True, text=True, cwd=ROOT)


def test_executor_ray_without_ray_names_the_extra(tmp_path):
    proc = _search(tmp_path, "--executor", "ray")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs Ray" in proc.stderr and 'pip install -e ".[ray]"' in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_ray_options_need_the_ray_executor(tmp_path):
    proc = _search(tmp_path, "--gpus-per-candidate", "0.25")
    assert proc.returncode == 2 and "need --executor ray" in proc.stderr and "Traceback" not in proc.stderr
    bad = _search(tmp_path, "--executor", "dask")
    assert bad.returncode == 2 and "unknown executor `dask`" in bad.stderr
    assert not (tmp_path / "run").exists()
