"""The emitted loss file: golden code, same bytes every time, lean (only what the graph reaches), parametrised,
and standalone (imports only torch and the standard library).

Goldens live in tests/golden/compile/<case>.py, the whole emitted file, and are rewritten only with
AUTOKD_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import dataclasses
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
from autokd_dsl.lang import ir
from autokd_dsl.models import create_model

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
    check_golden(case, emitted(case))


def test_compiling_twice_gives_identical_bytes():
    # different weights, same distiller and shapes: the file must not depend on anything else
    assert emitted("fitnet", seed=0).encode() == emitted("fitnet", seed=1).encode()
    assert emitted("multi", seed=0).encode() == emitted("multi", seed=3).encode()


def test_cli_compile_writes_the_golden_file(tmp_path):
    out = tmp_path / "kd_loss.py"
    proc = subprocess.run(
        [sys.executable, "-m", "autokd_dsl", "compile", str(CASES["kd"][0]), "--teacher", "resnet14",
         "--student", "resnet8", "--input-size", "3x16x16", "--num-classes", str(CLASSES), "-o", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr and "terms soft, hard" in proc.stderr
    text = out.read_text(encoding="utf-8")
    assert text == emitted("kd")
    check_golden("kd", text)


def defined(text: str) -> list[str]:
    return re.findall(r"^(?:def|class) (\w+)|^(\w+) = ", text, re.MULTILINE)


def top_level_names(text: str) -> set[str]:
    return {a or b for a, b in defined(text)}


def test_emitted_file_holds_only_what_the_graph_reaches_copied_verbatim():
    from autokd_dsl.compiler.emit import definitions

    for case in ("fitnet", "multi", "kd"):
        text = emitted(case)
        names = top_level_names(text) & set(definitions())
        for name in names:  # every copied definition is the package's source, to the letter
            assert definitions()[name][1] in text, name
        imports = [ln for ln in text.splitlines() if re.match(r"^(import|from) ", ln)]
        assert all(re.match(r"^(import (functools|math|types|torch)\b|from torch\b)", ln) for ln in imports), imports
    kd = top_level_names(emitted("kd"))
    assert {"kl", "ce", "log_softmax", "Attached", "hook_taps"} <= kd
    assert not kd & {"mse", "attention", "Connector", "Part", "_over", "TapCapture", "warmup"}
    fitnet = top_level_names(emitted("fitnet"))
    assert {"Connector", "Part", "_resize", "mse"} <= fitnet and not fitnet & {"kl", "ReviewFusion", "Align"}


def test_kd_for_the_benchmark_pair_fits_in_150_lines(tmp_path):
    teacher, student = create_model("resnet110", num_classes=100), create_model("resnet20", num_classes=100)
    loss = compile_distiller(load_distiller(CASES["kd"][0]), teacher, student, (3, 32, 32))
    text = emit(loss, teacher="resnet110", student="resnet20", input_size=(3, 32, 32), num_classes=100)
    assert len(text.splitlines()) <= 150
    assert "    def __init__(self, t=4, alpha=0.9):" in text


# ---- the emitted file runs without autokd_dsl ------------------------------------------------------------


def run_standalone(script: str, tmp_path: Path) -> dict:
    """Run ``script`` (after the import blocker) with ``python -I`` in tmp_path; it prints one JSON line."""
    runner = tmp_path / "run_standalone.py"
    runner.write_text(BLOCKER + script, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", str(runner)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, check=False)
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
    for case, value in expected.items():
        assert got[case] == pytest.approx(value, rel=1e-6, abs=1e-7), case


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


# ---- every library distiller: the emitted module is the compiled one, and takes other parameter values --------

LIBRARY_DIR = ROOT / "library"


def _new_values(loss) -> dict:
    """Other values for every parameter that does not shape the loss (ints stay ints)."""
    use = loss.param_use
    return {n: (v + 1 if isinstance(v, int) else v * 1.5) for n, v in use.values.items() if n not in use.fixed}


def _recompiled(block, values: dict, teacher, student):
    params = tuple(dataclasses.replace(p, value=ir.Num(values[p.name])) if p.name in values else p
                   for p in block.params)
    return compile_distiller(dataclasses.replace(block, params=params), teacher, student, SIZE)


def _seeded_inputs(loss, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    acts = {name: torch.randn((4, *shape), generator=gen) for name, shape in loss.tap_shapes.items()}
    return {"acts": acts, "labels": torch.tensor([0, 1, 2, 3]), "index": torch.tensor([5, 1, 7, 3]), "epoch": 10}


def run_seeded(loss, inputs: dict) -> dict:
    """Terms and the student-side gradients of the total, random draws seeded (masks, CRD's negatives)."""
    acts = {k: v.clone().requires_grad_(k.startswith("s_")) for k, v in inputs["acts"].items()}
    extra = {"index": inputs["index"]} if getattr(loss, "needs_index", False) else {}
    torch.manual_seed(0)
    terms = loss(**acts, labels=inputs["labels"], epoch=inputs["epoch"], **extra)
    students = [k for k in sorted(acts) if k.startswith("s_")]
    grads = torch.autograd.grad(terms["total"], [acts[k] for k in students], allow_unused=True)
    return {"terms": {k: float(v.detach()) for k, v in terms.items()},
            "grads": {k: (g if g is not None else torch.zeros_like(acts[k])) for k, g in zip(students, grads)}}


LIBRARY_SCRIPT = BLOCKER + """
import importlib, sys, torch
sys.path.insert(0, ".")
torch.set_num_threads(1)
jobs = torch.load("jobs.pt")
exec(jobs.pop("__helpers__"))
out = {}
for name, job in jobs.items():
    mod = importlib.import_module(f"{name}_loss")
    for which, kwargs in (("default", {}), ("changed", job["values"])):
        loss = mod.DistillerLoss(**kwargs)
        loss.load_state_dict(job["state"])
        out[f"{name}:{which}"] = run_seeded(loss, job["inputs"])
    try:
        mod.DistillerLoss(**{n: v + 1 for n, v in job["fixed"].items()})
        out[f"{name}:fixed"] = "accepted" if job["fixed"] else "none"
    except ValueError as err:
        out[f"{name}:fixed"] = str(err)
acts = {k: torch.randn(4, *(v.shape[1:2] + tuple(2 * d for d in v.shape[2:])))
        for k, v in jobs["at"]["inputs"]["acts"].items()}  # a map twice the size: another input size
try:
    importlib.import_module("at_loss").DistillerLoss()(**acts, labels=jobs["at"]["inputs"]["labels"])
except ValueError as err:
    out["at:other size"] = str(err)
assert not any(m.startswith("autokd_dsl") for m in sys.modules)
torch.save(out, "results.pt")
"""


def test_every_library_file_emits_the_compiled_module_and_takes_other_parameters(tmp_path):
    torch.manual_seed(0)
    teacher = create_model("resnet14", num_classes=CLASSES, in_chans=SIZE[0])
    student = create_model("resnet8", num_classes=CLASSES, in_chans=SIZE[0])
    jobs, expected = {}, {}
    for path in sorted(LIBRARY_DIR.glob("*.kd")):
        block = load_distiller(path)
        if ir.teachers_used(block)[1]:  # several teachers: emitted and run in tests/test_multiteacher_cli.py
            continue
        loss = compile_distiller(block, teacher, student, SIZE)
        with torch.no_grad():  # connectors unlike fresh ones, so that loading their state matters
            for p in loss.parameters():
                p.add_(0.1 * torch.randn_like(p))
        text = emit(loss, teacher="resnet14", student="resnet8", input_size=SIZE, num_classes=CLASSES)
        (tmp_path / f"{path.stem}_loss.py").write_text(text, encoding="utf-8")
        values, inputs = _new_values(loss), _seeded_inputs(loss)
        state = {k: v.clone() for k, v in loss.state_dict().items()}  # before a run moves CRD's memory banks
        changed = _recompiled(block, values, teacher, student)
        changed.load_state_dict(state)
        expected[f"{path.stem}:default"] = run_seeded(loss, inputs)
        expected[f"{path.stem}:changed"] = run_seeded(changed, inputs)
        fixed = {n: v for n, v in loss.param_use.values.items() if n in loss.param_use.fixed}
        jobs[path.stem] = {"state": state, "inputs": inputs, "values": values, "fixed": fixed}
    jobs["__helpers__"] = inspect.getsource(run_seeded)
    torch.save(jobs, tmp_path / "jobs.pt")
    (tmp_path / "run.py").write_text(LIBRARY_SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", "run.py"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "results.pt")
    for key, want in expected.items():
        assert got[key]["terms"] == pytest.approx(want["terms"], rel=1e-6, abs=1e-8), key
        for tap, grad in want["grads"].items():
            assert torch.allclose(got[key]["grads"][tap], grad, rtol=1e-6, atol=1e-9), (key, tap)
    assert any(expected[f"{n}:changed"]["terms"]["total"] != expected[f"{n}:default"]["terms"]["total"]
               for n in ("kd", "dist", "dkd")), "the changed parameters must change the losses"
    assert got["crd:fixed"].startswith("`dim` shapes this loss (compiled for 128)")
    assert got["kd:fixed"] == "none"
    assert got["at:other size"] == ("tap `s_stage1`: expected (16, 16, 16) per sample, as compiled, received "
                                    "(16, 32, 32): compile the distiller again for this input size")
