"""The emitted loss file: golden code, same bytes every time, and standalone (imports only torch).

Goldens live in tests/golden/compile/<case>.py and are rewritten only with AUTOKD_UPDATE_GOLDEN=1. The
kernels, connectors and hooks that every emitted file carries are copies of the package's modules; the goldens
hold a marker in their place (so a new kernel does not change every golden), and
`test_emitted_file_copies_the_package_sources` checks the copies themselves.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autokd_dsl.compiler.build import attach, compile_distiller, load_distiller
from autokd_dsl.compiler.emit import emit
from autokd_dsl.compiler.taps import probe
from autokd_dsl.models import create_model
from autokd_dsl.standalone import attach as attach_module
from autokd_dsl.standalone import connectors, kernels

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "compile"
GOLDEN = Path(__file__).parent / "golden" / "compile"
SIZE = (3, 16, 16)
CLASSES = 10

# case → (.kd file, teacher, student)
CASES = {
    "kd": (ROOT / "library" / "kd.kd", "resnet14", "resnet8"),
    "at": (ROOT / "library" / "at.kd", "resnet14", "resnet8"),
    "multi": (FIXTURES / "multi.kd", "resnet32", "resnet8"),
    "fitnet": (FIXTURES / "fitnet.kd", "wrn_40_2", "wrn_40_1"),
    "preact": (FIXTURES / "preact.kd", "resnet32", "resnet8"),
}

LIBRARY = re.compile(r"^# ---- kernels .*?(?=^# ---- the loss )", re.S | re.M)
LIBRARY_MARKER = "# ---- kernels, connectors, hooks: copied from autokd_dsl (see tests/test_emit.py) ----\n\n\n"

# Run in a fresh interpreter: autokd_dsl must not be importable, so the emitted file has to stand alone.
BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "autokd_dsl" or name.startswith("autokd_dsl."):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def compiled(case: str, seed: int = 0):
    path, t_name, s_name = CASES[case]
    torch.manual_seed(seed)
    teacher = create_model(t_name, num_classes=CLASSES, in_chans=SIZE[0])
    student = create_model(s_name, num_classes=CLASSES, in_chans=SIZE[0])
    loss = compile_distiller(load_distiller(path), teacher, student, SIZE, teacher_name=t_name, student_name=s_name)
    return teacher, student, loss


def emitted(case: str, seed: int = 0) -> str:
    _, t_name, s_name = CASES[case]
    _, _, loss = compiled(case, seed)
    return emit(loss, teacher=t_name, student=s_name, input_size=SIZE, num_classes=CLASSES)


def without_library(text: str) -> str:
    stripped, count = LIBRARY.subn(LIBRARY_MARKER, text)
    assert count == 1, "the emitted file lost its `# ---- kernels` / `# ---- the loss` section markers"
    return stripped


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / f"{name}.py"
    if os.environ.get("AUTOKD_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    if not golden.exists():
        pytest.fail(f"golden file {golden} is missing; create it with "
                    f"`AUTOKD_UPDATE_GOLDEN=1 pytest tests/test_emit.py -k golden` and review the diff")
    assert text == golden.read_text(encoding="utf-8"), (
        f"emitted code for `{name}` changed; if intended, rerun with AUTOKD_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("case", sorted(CASES))
def test_emitted_code_matches_golden(case):
    check_golden(case, without_library(emitted(case)))


def test_compiling_twice_gives_identical_bytes():
    # different weights, same distiller and shapes: the file must not depend on anything else
    assert emitted("fitnet", seed=0).encode() == emitted("fitnet", seed=1).encode()
    assert emitted("multi", seed=0).encode() == emitted("multi", seed=3).encode()


def test_cli_compile_writes_the_golden_file(tmp_path):
    out = tmp_path / "kd_loss.py"
    proc = subprocess.run(
        [sys.executable, "-m", "autokd_dsl", "compile", str(CASES["kd"][0]), "--teacher", "resnet14",
         "--student", "resnet8", "--input-size", "3x16x16", "--num-classes", str(CLASSES), "-o", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr and "terms soft, hard" in proc.stderr
    text = out.read_text(encoding="utf-8")
    assert text == emitted("kd")
    check_golden("kd", without_library(text))


def test_emitted_file_copies_the_package_sources():
    text = emitted("fitnet")
    for module in (kernels, connectors, attach_module):
        for name, obj in vars(module).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                assert inspect.getsource(obj) in text, f"{module.__name__}.{name} is not copied verbatim"
    imports = [ln for ln in text.splitlines() if re.match(r"^(import|from) ", ln)]
    assert all(re.match(r"^(import (math|types|torch)\b|from torch\b)", ln) for ln in imports), imports


# ---- the emitted file runs without autokd_dsl ------------------------------------------------------------


def run_standalone(script: str, tmp_path: Path) -> dict:
    """Run ``script`` (after the import blocker) with ``python -I`` in tmp_path; it prints one JSON line."""
    runner = tmp_path / "run_standalone.py"
    runner.write_text(BLOCKER + script, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", str(runner)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loss_values(losses: dict) -> dict:
    return {name: float(value.detach()) for name, value in losses.items()}


def test_emitted_loss_module_matches_in_process(tmp_path):
    """Zoo models: the emitted DistillerLoss, fed the same activations, gives the in-process losses."""
    expected, payload = {}, {}
    for case in ("multi", "fitnet", "preact"):
        teacher, student, loss = compiled(case)
        (tmp_path / f"{case}_loss.py").write_text(emitted(case), encoding="utf-8")
        with torch.no_grad():  # connectors unlike a fresh one, so that loading their state matters
            for p in loss.parameters():
                p.add_(0.1 * torch.randn_like(p))
        x, labels = torch.randn(4, *SIZE), torch.tensor([0, 1, 2, 3])
        acts = {**probe(student, loss.student_taps, x, "student"), **probe(teacher, loss.teacher_taps, x, "teacher")}
        payload[case] = {"state": loss.state_dict(), "acts": acts, "labels": labels}
        expected[case] = loss_values(loss(**acts, labels=labels))
    torch.save(payload, tmp_path / "inputs.pt")
    got = run_standalone("""
import importlib, json, sys, torch
sys.path.insert(0, ".")
payload, out = torch.load("inputs.pt"), {}
for case, p in payload.items():
    mod = importlib.import_module(f"{case}_loss")
    loss = mod.DistillerLoss()
    loss.load_state_dict(p["state"])
    out[case] = {k: float(v) for k, v in loss(**p["acts"], labels=p["labels"]).items()}
assert not any(m.startswith("autokd_dsl") for m in sys.modules)
print(json.dumps(out))
""", tmp_path)
    assert got.keys() == expected.keys()
    for case in expected:
        assert got[case] == pytest.approx(expected[case], rel=1e-6, abs=1e-7), case


def test_emitted_attach_matches_in_process(tmp_path, monkeypatch):
    """User models (plain torch): the emitted attach() hooks the same taps and gives the same losses."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    torch.manual_seed(0)
    teacher = create_model("inplace_nets:teacher", num_classes=CLASSES)
    student = create_model("inplace_nets:student", num_classes=CLASSES)
    loss = compile_distiller(load_distiller(FIXTURES / "user.kd"), teacher, student, SIZE)
    text = emit(loss, teacher="inplace_nets:teacher", student="inplace_nets:student", input_size=SIZE,
                num_classes=CLASSES)
    (tmp_path / "user_loss.py").write_text(text, encoding="utf-8")
    x, labels = torch.randn(4, *SIZE), torch.tensor([0, 1, 2, 3])
    torch.save({"teacher": teacher.state_dict(), "student": student.state_dict(), "loss": loss.state_dict(),
                "x": x, "labels": labels}, tmp_path / "inputs.pt")
    _, losses = attach(teacher, student, loss)(x, labels=labels)  # after saving: train mode moves BN stats
    losses["total"].backward()
    grad = sum(float(p.grad.abs().sum()) for p in loss.parameters())
    got = run_standalone(f"""
import json, sys, torch
sys.path[:0] = [".", {str(FIXTURES)!r}]
import inplace_nets, user_loss
p = torch.load("inputs.pt")
teacher, student, loss = inplace_nets.teacher(), inplace_nets.student(), user_loss.DistillerLoss()
for net, key in ((teacher, "teacher"), (student, "student"), (loss, "loss")):
    net.load_state_dict(p[key])
_, losses = user_loss.attach(teacher, student, loss)(p["x"], labels=p["labels"])
losses["total"].backward()
out = {{k: float(v) for k, v in losses.items()}}
out["grad"] = sum(float(q.grad.abs().sum()) for q in loss.parameters())
assert all(q.grad is None for q in teacher.parameters())
assert not any(m.startswith("autokd_dsl") for m in sys.modules)
print(json.dumps(out))
""", tmp_path)
    assert got.pop("grad") == pytest.approx(grad, rel=1e-5)
    assert got == pytest.approx(loss_values(losses), rel=1e-6, abs=1e-7)
    assert set(got) == {"pre", "feat", "kd", "ce", "total"}
