"""Several teachers end to end: the emitted module's attach, train with resume after SIGKILL, expand over
teachers, and the CLI's located errors. Small: resnet8 and
wrn_16_1 teachers trained for one epoch on digits at 1x8x8."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from two_teachers import TEACHERS, assert_located_errors, ckpts, cli, teacher_args  # noqa: F401 (fixtures)

from autokd_dsl.models import create_model

ROOT = Path(__file__).resolve().parents[1]
FEATURES = """distiller feat:
    ce: logits ~ labels -> ce -> 1
    kd: logits ~ teachers.logits -> softmax(4) -> kl -> 16 * confidence
    f: stage3 ~ teachers.stage3 -> adapt -> mse -> balance
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("source", ["library/ca_mkd.kd", "features"])
def test_emitted_module_attaches_both_teachers(cli, tmp_path, source):
    file = ROOT / source if source.endswith(".kd") else tmp_path / "feat.kd"
    if source == "features":
        file.write_text(FEATURES)
    out = tmp_path / "loss.py"
    code, text = cli("compile", file, "--teacher", "resnet56", "--teacher", "wrn_40_2", "--student", "resnet8",
                     "--input-size", "3x16x16", "--num-classes", "10", "-o", out)
    assert code == 0, text
    assert "import autokd_dsl" not in out.read_text() and "def attach(teachers, student" in out.read_text()
    spec = importlib.util.spec_from_file_location(f"emitted_{source[:4]}", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    teachers = [create_model(n, num_classes=10) for n in ("resnet56", "wrn_40_2")]
    student = create_model("resnet8", num_classes=10)
    model = module.attach(teachers, student)
    _, losses = model(torch.randn(4, 3, 16, 16), labels=torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in model.loss.parameters())
    assert (len(list(model.loss.parameters())) > 0) == (source == "features")  # one adapt per teacher
    assert all(p.grad is None for t in teachers for p in t.parameters())


def _epochs(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return ([json.loads(ln)["epoch"] for ln in path.read_text().splitlines() if ln.endswith("}")]
            if path.exists() else [])


def test_train_resumes_exactly_after_sigkill(ckpts, tmp_path):
    kd = tmp_path / "feat.kd"
    kd.write_text(FEATURES)
    env = dict(os.environ, AUTOKD_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

    def cmd(out):
        return [sys.executable, "-m", "autokd_dsl", "train", str(kd), *teacher_args(ckpts), "--student", "resnet8",
                "--data", "digits", "--input-size", "1x8x8", "--epochs", "5", "--train-subset", "200",
                "--offline-teacher", "--out", str(out)]

    proc = subprocess.Popen(cmd(tmp_path / "killed"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not _epochs(tmp_path / "killed") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= len(_epochs(tmp_path / "killed")) < 5, proc.stderr.read().decode()
    resumed = subprocess.run(cmd(tmp_path / "killed") + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, check=False)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr
    straight = subprocess.run(cmd(tmp_path / "straight"), cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False)
    assert straight.returncode == 0, straight.stderr
    assert "resnet8" in straight.stdout and "wrn_16_1" in straight.stdout
    a = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    for part in ("student", "connectors"):
        for name, value in b[part].items():
            assert torch.equal(a[part][name], value), name
    assert bool(b["connectors"]["balance_f.ready"])  # the balance weights were fixed on the first batch
    assert b["settings"]["teacher"] == list(TEACHERS) and len(b["settings"]["teacher_hash"]) == 2
    caches = [p for p in (tmp_path / "cache" / "teacher-outputs").iterdir() if p.is_dir()]
    assert len(caches) == 2  # one per teacher, each holding that teacher's taps


def test_expand_applies_a_term_to_each_teacher(ckpts, cli, tmp_path):
    found = tmp_path / "best.kd"
    found.write_text("distiller best:\n    ce: logits ~ labels -> ce -> 1\n    stage3 -> pool(2) -> mse -> 5\n")
    out = tmp_path / "multi.kd"
    code, text = cli("expand", found, "--teachers", ",".join(TEACHERS), "--layers", "stage2,stage3",
                     *(a for c in ckpts for a in ("--teacher-weights", str(c))), "--student", "resnet8",
                     "--input-size", "1x8x8", "-o", out)
    assert code == 0, text
    written = out.read_text()
    for label in ("stage3_mse_stage2_t1", "stage3_mse_stage2_t2", "stage3_mse_stage3_t1", "stage3_mse_stage3_t2"):
        assert f"{label}: " in written
    assert "stage2 ~ teacher2.stage2 -> pool(2) -> mse -> 5 * " in written


def test_cli_errors_are_located_and_exit_2(ckpts, cli, tmp_path):
    bad = tmp_path / "bad.kd"
    bad.write_text("distiller bad:\n    logits ~ teacher3.logits -> softmax(4) -> kl -> 1\n")
    digits = ["--student", "resnet8", "--data", "digits", "--input-size", "1x8x8", "--epochs", "1",
              "--out", tmp_path / "run"]
    cases = [
        (["train", bad, *teacher_args(ckpts), *digits], f"{bad}:2:14: error: `teacher3.logits` names teacher 3",
         "teacher1 = resnet8, teacher2 = wrn_16_1"),
        (["train", ROOT / "library" / "ca_mkd.kd", "--teacher", "resnet8", *digits],
         "ca_mkd.kd:9:18: error: `teachers.logits` distils from several teachers", "--teacher A --teacher B"),
        (["compile", ROOT / "library" / "aver.kd", "--teacher", "resnet8", "--teacher", "multiteacher_nets:ten_classes",
          "--student", "resnet8", "--num-classes", "100"], "aver.kd:7:20: error: teacher2", "same dataset"),
        (["train", ROOT / "library" / "aver.kd", *teacher_args(ckpts)[:4], "--teacher-weights", ckpts[0], *digits],
         "--teacher-weights is given 1 time(s) for 2 teacher(s)", "one checkpoint per --teacher"),
    ]
    assert_located_errors(cli, cases)

