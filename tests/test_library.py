"""The distiller library: every file checks clean, is canonical, compiles for the four benchmark pairs (or
gives a located error saying why the method does not apply), and matches a reference implementation written
from the paper's formula (tests/reference_losses.py) on seeded activations of the real models' shapes — the
loss values and the gradients with respect to the student's activations.

Run with ``-s`` to see the largest relative differences per method.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from reference_losses import MULTI_TEACHER, REFERENCES, ofd_margins
from torch import nn

from autokd_dsl.compiler.build import compile_distiller, load_distiller
from autokd_dsl.compiler.taps import probe
from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_program
from autokd_dsl.models import create_model

ROOT = Path(__file__).resolve().parent.parent
# distillers over several teachers are compiled and compared in tests/test_multiteacher.py
LIBRARY = sorted(p for p in (ROOT / "library").glob("*.kd") if p.stem not in MULTI_TEACHER)
NAMES = [p.stem for p in LIBRARY]
PAIRS = [("resnet110", "resnet20"), ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("vgg13", "mobilenetv2")]
NUMERIC_PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2")]
# (method, teacher, student) → why it does not apply; docs/library.md lists the same cases
NOT_APPLICABLE = {("fsp", "vgg13", "mobilenetv2"): "needs equal channel counts"}
BATCH, EPOCHS = 8, (10, 30)
DIFFS: dict[str, list[float]] = {}


@cache
def net(name: str) -> nn.Module:
    """A zoo model with random, non-trivial BatchNorm statistics (so OFD's margins differ per channel)."""
    torch.manual_seed(sum(map(ord, name)))
    model = create_model(name, num_classes=100)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 1.0)
                module.bias[:2] = 5.0 * module.weight[:2]  # P(x < 0) below 0.001: OFD's −3σ branch
    return model.eval()


@cache
def compiled(name: str, teacher: str, student: str):
    """The compiled loss, or the KDError that says why this pair does not fit."""
    try:
        return compile_distiller(load_distiller(ROOT / "library" / f"{name}.kd"), net(teacher), net(student))
    except KDError as err:
        return err


def test_the_library_holds_the_published_distillers():
    wanted = {"kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "fsp", "nst", "crd", "dkd", "dist",
              "cwd", "pkd", "mgd", "ickd", "ofd", "srrl", "reviewkd", "kd_ls"}
    assert len(NAMES) >= 22 and wanted <= set(NAMES)
    assert set(NAMES) <= set(REFERENCES), "every library distiller needs a reference implementation"


@pytest.mark.parametrize("path", LIBRARY, ids=NAMES)
def test_file_checks_is_canonical_and_cites_its_paper(path: Path):
    text = path.read_text(encoding="utf-8")
    program = check_text(text, str(path))
    assert print_program(program) == text
    assert [b.name for b in program.blocks] == [path.stem]
    assert text.startswith("# ") and any(str(year) in text.split("distiller")[0] for year in range(2014, 2026))


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
@pytest.mark.parametrize("name", NAMES)
def test_compiles_for_the_benchmark_pairs(name: str, pair):
    result = compiled(name, *pair)
    why = NOT_APPLICABLE.get((name, *pair))
    if why is None:
        assert not isinstance(result, KDError), result.render()
        assert all(f"'{term}'" in result.code for term in [*result.term_names, "total"])
    else:
        assert isinstance(result, KDError), f"{name} was expected not to apply to {pair}"
        assert why in result.message and result.span is not None  # located: points at the op in the file


# ---- numeric equality with the references -----------------------------------------------------------------


@cache
def tap_shapes(model: str, specs: tuple) -> dict:
    values = probe(net(model), dict(specs), torch.zeros(BATCH, 3, 32, 32), model)
    return {name: tuple(v.shape) for name, v in values.items()}


def activations(loss, teacher: str, student: str, seed: int) -> dict[str, torch.Tensor]:
    """Seeded activations of the real tap shapes: post-ReLU taps non-negative, pre-activations and logits not."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {**tap_shapes(student, tuple(loss.student_taps.items())),
              **tap_shapes(teacher, tuple(loss.teacher_taps.items()))}
    acts = {}
    for name, shape in sorted(shapes.items()):
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        if "logits" in name:
            x = 2.0 * x
        elif not name.endswith("_pre"):
            x = x.relu()
        acts[name] = x
    if "t_logits" in acts and "t_embedding" in acts:  # a real teacher's logits are its classifier on its feature
        fc = net(teacher).fc
        with torch.no_grad():
            acts["t_logits"] = torch.nn.functional.linear(acts["t_embedding"], fc.weight.double(), fc.bias.double())
    for name, value in acts.items():
        value.requires_grad_(name.startswith("s_"))
    return acts


def _perturb(loss: nn.Module) -> None:
    """Move the learnable parts off their initial values, so the test sees every weight take effect."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in loss.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.3)
            elif type(module).__name__ == "GaussianNLL":
                module.log_scale.add_(torch.randn(module.log_scale.shape, generator=gen))


def _child(loss, cls: str, index: int = 0):
    return [m for m in loss.children() if type(m).__name__ == cls][index]


def _conv_bn(connector):
    return {"conv": connector.conv.weight, "bn_w": connector.bn.weight, "bn_b": connector.bn.bias}


def _teacher_bns(teacher: str) -> list[nn.Module]:
    """The BatchNorms OFD's benchmark code reads the margins from (its `get_bn_before_relu`)."""
    model = net(teacher)
    if teacher.startswith("wrn"):
        return [model.block2.layer[0].bn1, model.block3.layer[0].bn1, model.bn1]
    return [model.layer1[-1].bn2, model.layer2[-1].bn2, model.layer3[-1].bn2]


def weights(name: str, loss, teacher: str) -> dict[str, torch.Tensor]:
    """The tensors a reference needs, taken from the compiled loss (learnable) or the teacher (its statistics)."""
    w: dict[str, torch.Tensor] = {}
    if name == "fitnet":
        w = _conv_bn(_child(loss, "Regressor"))
        w["conv_bias"] = torch.randn(w["conv"].shape[0], dtype=torch.float64)  # cancels in BatchNorm
    elif name in ("cc", "crd"):
        s, t = _child(loss, "Project", 0), _child(loss, "Project", 1)
        w = {"s_w": s.linear.weight, "s_b": s.linear.bias, "t_w": t.linear.weight, "t_b": t.linear.bias}
        if name == "crd":
            memory = _child(loss, "ContrastMemory")
            w.update(memory_s=memory.memory_s, memory_t=memory.memory_t)
    elif name == "vid":
        for k in (1, 2, 3):
            layers = _child(loss, "MLP", k - 1).layers
            w.update({f"mlp{k}_{i}": layers[2 * i].weight for i in range(3)})
            w[f"log_scale{k}"] = _child(loss, "GaussianNLL", k - 1).log_scale
    elif name == "mgd":
        layers = _child(loss, "Generator").layers
        w = {"g0": layers[0].weight, "g0_b": layers[0].bias, "g1": layers[2].weight, "g1_b": layers[2].bias}
    elif name == "ickd":
        w = _conv_bn(_child(loss, "Connector"))
    elif name == "ofd":
        for k, bn in zip((1, 2, 3), _teacher_bns(teacher)):
            c = _conv_bn(_child(loss, "Connector", k - 1))
            w.update({f"conv{k}": c["conv"], f"bn{k}_w": c["bn_w"], f"bn{k}_b": c["bn_b"]})
            w[f"margin{k}"] = ofd_margins(bn.weight.detach(), bn.bias.detach())
    elif name == "srrl":
        w = _conv_bn(_child(loss, "Regressor"))
        w.update(cls_w=net(teacher).fc.weight.double(), cls_b=net(teacher).fc.bias.double())
    elif name == "reviewkd":
        for i, abf in enumerate(_child(loss, "ReviewFusion").abfs):
            p = {"c1": abf.conv1[0].weight, "bn1_w": abf.conv1[1].weight, "bn1_b": abf.conv1[1].bias,
                 "c2": abf.conv2[0].weight, "bn2_w": abf.conv2[1].weight, "bn2_b": abf.conv2[1].bias}
            if abf.att is not None:
                p.update(att_w=abf.att[0].weight, att_b=abf.att[0].bias)
            w[f"abf{i}"] = {k: v.detach().clone() for k, v in p.items()}
    return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in w.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-5, atol=1e-6))


@pytest.mark.parametrize("pair", NUMERIC_PAIRS, ids=["-".join(p) for p in NUMERIC_PAIRS])
@pytest.mark.parametrize("name", NAMES)
def test_matches_the_reference_implementation(name: str, pair):
    teacher, student = pair
    loss = copy.deepcopy(compiled(name, teacher, student)).double().train()
    _perturb(loss)
    w, state = weights(name, loss, teacher), {}
    acts = activations(loss, teacher, student, seed=len(name))
    labels = torch.randint(0, 100, (BATCH,), generator=torch.Generator().manual_seed(3))
    index = torch.randperm(50000, generator=torch.Generator().manual_seed(4))[:BATCH]
    students = [v for k, v in sorted(acts.items()) if k.startswith("s_")]
    diffs = DIFFS.setdefault(name, [0.0, 0.0])
    for epoch in EPOCHS:  # CRD: the second call sees the memory banks the first one updated
        torch.manual_seed(epoch)  # the same random draws (MGD's masks, CRD's negatives) on both sides
        extra = {"index": index} if getattr(loss, "needs_index", False) else {}
        terms = loss(**acts, labels=labels, epoch=epoch, **extra)
        torch.manual_seed(epoch)
        ref = REFERENCES[name](acts, labels, epoch, w, state, **extra)
        total = terms["total"]
        assert torch.isfinite(total) and _close(total, ref), (epoch, total.item(), ref.item())
        # the distillation part alone too, so that a large cross-entropy cannot hide a small term's error
        labelled = sum(terms[t] for t in ("ce", "hard") if t in terms)
        assert _close(total - labelled, ref - labelled), (epoch, (total - labelled).item(), (ref - labelled).item())
        grads = torch.autograd.grad(total, students, allow_unused=True)
        ref_grads = torch.autograd.grad(ref, students, allow_unused=True)
        for g, r, s in zip(grads, ref_grads, students):
            g = torch.zeros_like(s) if g is None else g
            r = torch.zeros_like(s) if r is None else r
            assert _close(g, r), (epoch, _rel(g, r))
            diffs[1] = max(diffs[1], _rel(g, r) if r.abs().max() > 0 else 0.0)
        diffs[0] = max(diffs[0], _rel(total.detach(), ref.detach()))


@pytest.mark.parametrize("batch", [64, 128])
def test_dist_matches_the_paper_where_the_student_is_close_to_the_teacher(batch: int):
    """DIST's intra-class term correlates each class's probabilities over the batch. Where the student is close
    to the teacher (late in training) the centred norms are small, and dividing by ‖a‖‖b‖ + 1e-8 (the paper's
    code) differs from clamping each norm (cosine similarity's eps) by 1e-4 and more."""
    loss = copy.deepcopy(compiled("dist", "resnet32x4", "resnet8x4")).double()
    gen = torch.Generator().manual_seed(batch)
    t = 2.0 * torch.randn(batch, 100, generator=gen, dtype=torch.float64)
    s = (t + 0.01 * torch.randn(batch, 100, generator=gen, dtype=torch.float64)).requires_grad_()
    acts, labels = {"s_logits": s, "t_logits": t}, torch.randint(0, 100, (batch,), generator=gen)
    total, ref = loss(**acts, labels=labels)["total"], REFERENCES["dist"](acts, labels, 0, {}, {})
    assert _close(total, ref), (total.item(), ref.item())
    distilled = total - loss(**acts, labels=labels)["ce"]
    assert _close(distilled, ref - REFERENCES["dist"](acts, labels, 0, {}, {}, beta=0.0, gamma=0.0))
    grad, ref_grad = torch.autograd.grad(total, s)[0], torch.autograd.grad(ref, s)[0]
    assert _close(grad, ref_grad), _rel(grad, ref_grad)


@pytest.fixture(scope="module", autouse=True)
def _report_differences():
    # one thread: these are many small ops, and two threads on a busy 2-core machine run them ~10× slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if DIFFS:
        print("\nlargest relative difference, compiled vs reference (value, student gradients):")
        for name, (value, grad) in sorted(DIFFS.items()):
            print(f"  {name:10s} {value:.2e}  {grad:.2e}")


# ---- the emitted files, through `autokd-dsl compile` and their own `attach` ------------------------------
# One subprocess for all of them (CIFAR-size 32×32 inputs, a batch of 2).

EMITTED_SCRIPT = r"""
import importlib.util, json, sys, tempfile, pathlib
import torch
torch.set_num_threads(1)
from typer.testing import CliRunner
from autokd_dsl.cli import app
from autokd_dsl.models import create_model

results = {}
out = pathlib.Path(tempfile.mkdtemp())
for name, teacher, student in json.loads(sys.argv[1]):
    path = out / f"{name}_{teacher}_{student}.py"
    run = CliRunner().invoke(app, ["compile", f"library/{name}.kd", "--teacher", teacher, "--student", student,
                                   "-o", str(path)])
    key = f"{name}:{teacher}:{student}"
    if run.exit_code != 0:
        results[key] = {"error": run.output}
        continue
    text = path.read_text()
    imports = sorted({ln.split()[1] for ln in text.splitlines() if ln.startswith(("import ", "from "))})
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    t_net, s_net = create_model(teacher), create_model(student)
    model = module.attach(t_net, s_net)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 100, (2,))
    _, losses = model(x, labels=y, epoch=30, index=torch.arange(2))
    losses["total"].backward()
    grads = [p.grad for p in s_net.parameters() if p.grad is not None]
    results[key] = {"imports": imports, "total": float(losses["total"]), "terms": sorted(losses),
                    "grads": len(grads), "grads_finite": all(bool(torch.isfinite(g).all()) for g in grads),
                    "grad_norm": float(sum(g.abs().sum() for g in grads))}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def emitted() -> dict:
    jobs = [(name, t, s) for name in NAMES for t, s in NUMERIC_PAIRS]
    run = subprocess.run([sys.executable, "-c", EMITTED_SCRIPT, json.dumps(jobs)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("pair", NUMERIC_PAIRS, ids=["-".join(p) for p in NUMERIC_PAIRS])
@pytest.mark.parametrize("name", NAMES)
def test_emitted_file_attaches_and_trains(emitted: dict, name: str, pair):
    result = emitted[f"{name}:{pair[0]}:{pair[1]}"]
    assert "error" not in result, result.get("error")
    assert "torch" in result["imports"]  # and nothing but torch and the standard library
    assert {module.split(".")[0] for module in result["imports"]} <= {"functools", "math", "torch", "types"}
    assert "total" in result["terms"] and torch.isfinite(torch.tensor(result["total"]))
    assert result["grads"] > 0 and result["grads_finite"] and result["grad_norm"] > 0


# ---- the library's command, docs and constructs ----------------------------------------------------------


def test_cli_lists_and_prints_the_library():
    from typer.testing import CliRunner

    from autokd_dsl.cli import app

    listed = CliRunner().invoke(app, ["library"])
    assert listed.exit_code == 0 and all(f"│ {name} " in listed.output for name in NAMES)
    assert "Decoupled" in listed.output and "target_bin" in listed.output  # the paper, and what it matches
    shown = CliRunner().invoke(app, ["library", "dkd"])
    assert shown.exit_code == 0 and shown.output == (ROOT / "library" / "dkd.kd").read_text(encoding="utf-8")
    missing = CliRunner().invoke(app, ["library", "dkdd"])
    assert missing.exit_code == 2 and "did you mean `dkd`?" in missing.output


def test_docs_list_every_method_and_every_pair_that_does_not_fit():
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"| `{name}` |" in text, name
    for name, teacher, student in NOT_APPLICABLE:
        assert f"| `{name}` | {teacher} → {student} |" in text


def test_a_teacher_side_op_cannot_be_written_on_the_student():
    with pytest.raises(KDError, match="`margin` is a teacher-side op"):
        check_text("distiller d:\n    stage3_pre -> student.margin -> mse -> 1\n")


def test_an_op_across_pairs_of_taps_needs_two_taps():
    block = check_text("distiller d:\n    stage3 -> fsp -> mse -> 1\n").blocks[0]
    with pytest.raises(KDError, match="relates consecutive taps") as info:
        compile_distiller(block, net("resnet32x4"), net("resnet8x4"))
    assert info.value.span is not None and info.value.span.line == 2


def test_crd_asks_for_the_sample_index():
    loss = compiled("crd", "wrn_40_2", "wrn_16_2")
    assert loss.needs_index and "index = None" in loss.code
    assert not getattr(compiled("kd", "wrn_40_2", "wrn_16_2"), "needs_index", True)
    acts = activations(loss, "wrn_40_2", "wrn_16_2", seed=0)
    with pytest.raises(ValueError, match="index"):
        copy.deepcopy(loss).double()(**acts, labels=torch.zeros(BATCH, dtype=torch.long))


def test_teacher_values_are_read_again_when_attached():
    from autokd_dsl.compiler.build import attach

    loss = copy.deepcopy(compiled("ofd", "resnet32x4", "resnet8x4"))
    other = copy.deepcopy(net("resnet32x4"))
    with torch.no_grad():
        other.layer3[-1].bn2.bias.add_(0.5)
    attach(other, net("resnet8x4"), loss).detach_hooks()
    margin = [m for m in loss.children() if type(m).__name__ == "TeacherMargin"][-1].margin
    bn = other.layer3[-1].bn2
    assert torch.allclose(margin.double(), ofd_margins(bn.weight.detach(), bn.bias.detach()), rtol=1e-5)
