"""The wheel carries the grammar (mapped in by the build backend, not copied into the package) and works
installed on its own, away from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheels = list(out.glob("autokd_dsl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_the_grammar_and_library(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "autokd_dsl/grammar/kd.lark" in names
        assert zf.read("autokd_dsl/grammar/kd.lark") == (ROOT / "grammar" / "kd.lark").read_bytes()
        for path in (ROOT / "library").glob("*.kd"):
            assert zf.read(f"autokd_dsl/library/{path.name}") == path.read_bytes()
        assert "autokd_dsl/lang/parse.py" in names and "autokd_dsl/cli/app.py" in names
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "autokd-dsl = autokd_dsl.cli:main" in zf.read(entry_points).decode()


def test_installed_wheel_checks_a_file_outside_the_repo(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120, check=False)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # the dependencies (lark, typer, …) come from this environment; the package itself only from the wheel
    where_libs = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(subprocess.check_output([str(python), "-c", where_libs], text=True).strip())
    (purelib / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "library" / "kd.kd", work / "kd.kd")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    probe = ("import autokd_dsl, importlib.resources as r; print(autokd_dsl.__file__); "
             "print(r.files('autokd_dsl').joinpath('grammar', 'kd.lark').is_file())")
    where = subprocess.run([str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert where.returncode == 0, where.stderr
    module_file, packaged_grammar = where.stdout.split()
    assert Path(module_file).is_relative_to(venv) and packaged_grammar == "True", where.stdout

    result = subprocess.run([str(venv / "bin" / "autokd-dsl"), "check", "kd.kd"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: 1 file, 1 distillers, 0 spaces"

    (work / "bad.kd").write_text("distiller kd:\n    stage3 -> kl -> 1\n")
    bad = subprocess.run([str(venv / "bin" / "autokd-dsl"), "check", "bad.kd"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("bad.kd:2:15: error:"), bad.stderr
