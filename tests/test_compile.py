"""Compiling distillers onto real models: gradients, shared work, taps, timm models, errors, torch.compile.

The emitted file itself (goldens, bytes, standalone use) is tested in test_emit.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from autokd_dsl.compiler.build import (
    attach,
    compile_distiller,
    load_distiller,
    pick_distiller,
)
from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.models import create_model
from autokd_dsl.standalone import kernels
from autokd_dsl.standalone.attach import TapCapture
from autokd_dsl.standalone.connectors import Connector

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "compile"
SIZE = (3, 16, 16)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(teacher: str, student: str, seed: int = 0, size=SIZE, classes: int = 10):
    torch.manual_seed(seed)
    return (create_model(teacher, num_classes=classes, in_chans=size[0]),
            create_model(student, num_classes=classes, in_chans=size[0]))


def compile_text(text: str, teacher, student, size=SIZE):
    return compile_distiller(pick_distiller(check_text(text), None, "<test>"), teacher, student, size)


def batch(size=SIZE, n: int = 4, classes: int = 10):
    generator = torch.Generator().manual_seed(1)
    return torch.randn((n, *size), generator=generator), torch.arange(n) % classes


def count_calls(loss, fn) -> int:
    return sum(1 for node in loss.graph.nodes if node.op == "call_function" and node.target is fn)


# ---- gradients and parameters ------------------------------------------------------------------------------


def test_gradients_reach_student_and_connectors_never_the_teacher():
    teacher, student = build("wrn_40_2", "wrn_40_1")
    loss = compile_distiller(load_distiller(FIXTURES / "fitnet.kd"), teacher, student, SIZE)
    model = attach(teacher, student, loss)
    x, labels = batch()
    _, losses = model(x, labels=labels)
    assert set(losses) == {"ce", "hint", "total"}
    losses["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in loss.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    connectors = [m for m in loss.modules() if isinstance(m, Connector)]
    assert len(connectors) == 1
    assert connectors[0].student_shape == (32, 8, 8) and connectors[0].teacher_shape == (64, 8, 8)
    ids = {id(p) for p in loss.parameters()}
    assert ids == {id(p) for c in connectors for p in c.parameters()}
    assert {id(p) for p in model.parameters()} == ids  # the trainer optimises these with the student's


def test_a_distiller_without_adapt_has_no_parameters():
    teacher, student = build("resnet14", "resnet8")
    loss = compile_distiller(load_distiller(ROOT / "library" / "kd.kd"), teacher, student, SIZE)
    assert list(loss.parameters()) == []
    assert loss.student_taps == {"s_logits": "fc"} and loss.teacher_taps == {"t_logits": "fc"}


# ---- shared subexpressions -------------------------------------------------------------------------------------


def test_shared_attention_is_computed_once_per_side():
    teacher, student = build("resnet32", "resnet8")
    loss = compile_distiller(load_distiller(FIXTURES / "multi.kd"), teacher, student, SIZE)
    assert count_calls(loss, kernels.attention) == 2  # one per side for the two terms reading it
    assert count_calls(loss, kernels.softmax) == 2
    x, labels = batch()
    _, losses = attach(teacher, student, loss)(x, labels=labels)
    assert set(losses) == {"at", "at_cos", "inter", "total"}
    assert torch.isclose(losses["total"], losses["at"] + losses["at_cos"] + losses["inter"])


def test_shared_softmax_and_fused_kl():
    teacher, student = build("resnet14", "resnet8")
    loss = compile_text("distiller d(t = 4):\n"
                        "    inter: logits -> softmax(t) -> pearson -> t^2\n"
                        "    intra: logits -> softmax(t) -> transpose -> pearson -> t^2\n"
                        "    kd: logits -> softmax(t) -> kl -> t^2\n", teacher, student)
    assert count_calls(loss, kernels.softmax) == 2  # shared by inter and intra; kl reads the logits
    assert count_calls(loss, kernels.transpose) == 0  # pearson over the softmax's columns instead
    inter, intra = [n for n in loss.graph.nodes if n.target is kernels.pearson]
    assert inter.args == intra.args and intra.kwargs == {"dim": 0}
    assert inter.kwargs == {"mean": 0.1}  # a softmax row's mean is 1/K: no reduction for it
    (kl,) = [n for n in loss.graph.nodes if n.target is kernels.kl]
    t = kl.kwargs["t"]  # the parameter, read from the loss (DistillerLoss(t=2) in a compiled file)
    assert kl.kwargs["mode"] == "logits" and t.op == "get_attr" and getattr(loss, t.target) == 4
    assert kl.args[0].name == "s_logits"  # the softmax's logits: one exact log-softmax inside kl


# ---- taps --------------------------------------------------------------------------------------------------------


@pytest.fixture
def user_nets(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    torch.manual_seed(0)
    return create_model("inplace_nets:teacher", num_classes=10), create_model("inplace_nets:student", num_classes=10)


def test_taps_before_an_inplace_relu_keep_the_pre_activation(user_nets):
    teacher, _ = user_nets
    teacher.eval()
    x, _ = batch()
    capture = TapCapture(teacher, {"bn1": "bn1", "pre": "relu:in@2", "act": "relu@1"})
    with torch.no_grad():
        teacher(x)
        stem, pre = teacher.stem(x), teacher.pre(x)
    capture.remove()
    assert (stem < 0).any() and (pre < 0).any()  # the in-place ReLU would have zeroed these
    torch.testing.assert_close(capture.values["bn1"], stem)
    torch.testing.assert_close(capture.values["pre"], pre)
    torch.testing.assert_close(capture.values["act"], stem.relu())


def test_attached_loss_sees_pre_activations(user_nets):
    teacher, student = user_nets
    loss = compile_text("distiller p:\n    feat: stage1 -> adapt -> mse -> 1\n"
                        "    pre: student.relu:in@2 ~ teacher.relu:in@2 -> adapt -> mse -> 1\n",
                        teacher, student)
    assert loss.student_taps == {"s_stage1": "bn1", "s_relu_in2": "relu:in@2"}
    teacher.eval(), student.eval(), loss.eval()
    x, _ = batch()
    _, losses = attach(teacher, student, loss)(x)
    with torch.no_grad():
        feat = torch.nn.functional.mse_loss(loss.adapt_stage1(student.stem(x)), teacher.stem(x))
        pre = torch.nn.functional.mse_loss(loss.adapt_relu_in2(student.pre(x)), teacher.pre(x))
    torch.testing.assert_close(losses["feat"].detach(), feat)
    torch.testing.assert_close(losses["pre"].detach(), pre)


def test_preactivation_pair_on_zoo_models():
    teacher, student = build("resnet32", "resnet8")
    loss = compile_distiller(load_distiller(FIXTURES / "preact.kd"), teacher, student, SIZE)
    assert loss.student_taps == {"s_layer1_0_relu_in2": "layer1.0.relu:in@2"}
    assert loss.teacher_taps == {"t_layer1_0_relu_in2": "layer1.0.relu:in@2"}
    teacher.eval(), student.eval()
    x, _ = batch()
    _, losses = attach(teacher, student, loss)(x)
    with torch.no_grad():  # the residual sum of layer1.0, before its ReLU
        def pre(net):
            h = net.relu(net.bn1(net.conv1(x)))
            block = net.layer1[0]
            return block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h))))) + h
        expected = torch.nn.functional.mse_loss(pre(student), pre(teacher))
    assert (pre(student) < 0).any()
    torch.testing.assert_close(losses["pre"].detach(), expected)


# ---- timm models -------------------------------------------------------------------------------------------------


def run_and_check(teacher, student, loss, size, classes):
    x, labels = batch(size, n=2, classes=classes)
    _, losses = attach(teacher, student, loss)(x, labels=labels)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    assert list(loss.parameters()) and all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    return losses


def test_timm_cnn_pair():
    size = (3, 64, 64)
    teacher, student = build("timm:resnet18", "timm:resnet10t", size=size)
    loss = compile_text("distiller f(t = 4):\n"
                        "    fit: student.stage3 ~ teacher.stage4 -> adapt -> mse -> 1\n"
                        "    kd: logits -> softmax(t) -> kl -> t^2\n"
                        "    ce: logits ~ labels -> ce -> 1\n", teacher, student, size)
    assert loss.student_taps == {"s_stage3": "layer3", "s_logits": "fc"}
    (connector,) = loss.children()
    assert connector.student_shape == (256, 4, 4) and connector.teacher_shape == (512, 2, 2)
    run_and_check(teacher, student, loss, size, 10)


def test_timm_vit_teacher_cnn_student():
    size = (3, 32, 32)
    teacher, student = build("timm:test_vit", "resnet8", size=size)  # timm's smallest ViT
    loss = compile_text("distiller f(t = 4):\n"
                        "    fit: stage3 -> adapt -> mse -> 1\n"
                        "    kd: logits -> softmax(t) -> kl -> t^2\n", teacher, student, size)
    (connector,) = loss.children()
    assert connector.student_shape == (64, 8, 8) and len(connector.teacher_shape) == 2  # a map onto tokens
    run_and_check(teacher, student, loss, size, 10)


# ---- the CLI: errors and `layers` (one batch of subprocesses, run side by side) ---------------------------------

BAD = {  # name → (.kd text, teacher, student, input size)
    "unknown_tap": ("distiller bad:\n    x: student.layer3.0.conv9 ~ teacher.layer3 -> mse -> 1\n",
                    "resnet14", "resnet8", "3x16x16"),
    "shape": ("distiller bad:\n    fit: stage3 -> mse -> 1\n", "wrn_40_2", "resnet8", "3x16x16"),
    "kl_tokens": ("distiller bad:\n    k: student.blocks.1 ~ teacher.blocks.2 -> kl -> 1\n",
                  "timm:test_vit", "timm:test_vit", "3x32x32"),
    "map_tokens": ("distiller bad:\n    fit: stage3 -> mse -> 1\n", "timm:test_vit", "resnet8", "3x32x32"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every CLI call of this section, started together; name → (CompletedProcess-like, .kd path)."""
    tmp = tmp_path_factory.mktemp("cli")
    commands = {"layers": ["layers", "resnet8", "--input-size", "3x16x16"],
                "layers_json": ["layers", "resnet8", "--input-size", "3x16x16", "--json"]}
    for name, (text, teacher, student, size) in BAD.items():
        (tmp / f"{name}.kd").write_text(text, encoding="utf-8")
        commands[name] = ["compile", str(tmp / f"{name}.kd"), "--teacher", teacher, "--student", student,
                          "--input-size", size, "-o", str(tmp / f"{name}_out.py")]
    env = {**ENV, "OMP_NUM_THREADS": "1"}  # tiny probes; threads would only fight each other
    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the import of torch dominates
        runs = {name: pool.submit(subprocess.run, [sys.executable, "-m", "autokd_dsl", *args], capture_output=True,
                                  text=True, cwd=ROOT, env=env, timeout=300) for name, args in commands.items()}
        return {name: run.result() for name, run in runs.items()}, tmp


def compile_error(cli_runs, name: str) -> tuple[str, str]:
    """The stderr of a failed compile, and the .kd path as the error shows it."""
    results, tmp = cli_runs
    proc = results[name]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp / f"{name}_out.py").exists()
    return proc.stderr, str(tmp / f"{name}.kd")


def test_cli_unknown_tap(cli_runs):
    err, path = compile_error(cli_runs, "unknown_tap")
    assert f"{path}:2:8: error: `layer3.0.conv9` is not a tap point of resnet8" in err
    assert "student.layer3.0.conv9 ~ teacher.layer3" in err and "^^^^" in err
    assert "did you mean `layer3.0.conv2`?" in err
    assert "autokd-dsl layers resnet8" in err


def test_cli_shape_mismatch_suggests_adapt(cli_runs):
    err, path = compile_error(cli_runs, "shape")
    assert f"{path}:2:20: error:" in err
    assert "64×4×4 from resnet8" in err and "128×4×4 from wrn_40_2" in err
    assert "-> adapt ->" in err


def test_cli_kl_on_vit_tokens(cli_runs):
    err, path = compile_error(cli_runs, "kl_tokens")
    assert f"{path}:2:47: error: `kl` does not take tokens (N,L,D)" in err
    assert "softmax(d)" in err


def test_cli_map_against_tokens_suggests_adapt(cli_runs):
    err, _ = compile_error(cli_runs, "map_tokens")
    assert "a feature map (N,C,H,W) (student resnet8)" in err and "tokens (N,L,D) (teacher timm:test_vit)" in err
    assert "adapt" in err


def test_layers_table(cli_runs):
    table = cli_runs[0]["layers"]
    assert table.returncode == 0, table.stderr
    assert "layer1.0.relu" in table.stdout and "stage1_pre" in table.stdout
    aliases = table.stdout.split("aliases: ")[-1]
    assert "stem = relu" in aliases and "stage1 = layer1" in aliases and "logits = fc" in aliases


def test_layers_json(cli_runs):
    proc = cli_runs[0]["layers_json"]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"] == "resnet8" and data["input_size"] == [3, 16, 16]
    assert data["aliases"]["stage3"] == "layer3" and data["aliases"]["logits"] == "fc"
    assert data["aliases"]["stage1_pre"] == "layer1.0.relu:in@2"
    rows = {row["name"]: row for row in data["layers"]}
    assert rows["layer3"]["shape"] == [64, 4, 4] and rows["layer3"]["aliases"] == ["stage3"]
    assert rows["layer1.0.relu"]["calls"] == 2 and rows["fc"]["shape"] == [100]
    assert rows["fc"]["type"] == "Linear" and "logits" in rows["fc"]["aliases"]


# ---- torch.compile -------------------------------------------------------------------------------------------


def test_torch_compile_of_the_attached_model_gives_the_same_losses():
    teacher, student = build("resnet8", "resnet8", size=(3, 8, 8))
    loss = compile_text("distiller f(t = 4):\n"
                        "    fit: student.stage2 ~ teacher.stage3 -> adapt -> mse -> 10\n"
                        "    pre: stage3_pre -> attention(2) -> mse -> 100\n"
                        "    kd: logits -> softmax(t) -> kl -> t^2\n"
                        "    ce: logits ~ labels -> ce -> 1\n", teacher, student, (3, 8, 8))
    student.eval(), loss.eval()  # no BatchNorm statistics updates between the two runs
    model = attach(teacher, student, loss)
    x, labels = batch((3, 8, 8))
    _, expected = model(x, labels=labels)
    torch._dynamo.reset()
    # "aot_eager" traces the forward and the backward like inductor does, without a C++ toolchain
    _, got = torch.compile(model, backend="aot_eager")(x, labels=labels)
    got["total"].backward()
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])
    assert all(p.grad is not None for p in loss.parameters())
    assert all(p.grad is None for p in teacher.parameters())


# ---- the op registry's bindings -------------------------------------------------------------------------------


def test_every_op_resolves_to_an_implementation_that_takes_its_parameters():
    from autokd_dsl.compiler.bindings import binding, signature_problems
    from autokd_dsl.lang.ops import OPS

    problems = {name: signature_problems(binding(name)) for name in OPS}
    assert {name: p for name, p in problems.items() if p} == {}
    assert binding("review").fn.__module__ == "autokd_dsl.compiler.modules"
    assert binding("kl").keywords == {"t", "reduce", "mode", "dims"}
    assert not hasattr(kernels, "fdiv")


def test_a_kernel_that_does_not_take_the_ops_parameters_is_reported(monkeypatch):
    from autokd_dsl.compiler.bindings import binding, signature_problems

    def softmax(x, eps, temp=1.0, dims=(1,)):  # a misspelt keyword, and one the op never gives
        return x

    monkeypatch.setattr(kernels, "softmax", softmax)
    binding.cache_clear()
    try:
        assert signature_problems(binding("softmax")) == ["softmax has no parameter `t`",
                                                          "softmax requires `eps`, which the op does not give"]
    finally:
        binding.cache_clear()


def test_an_elementwise_op_is_one_entry_and_one_function(monkeypatch):
    from autokd_dsl.compiler.bindings import binding
    from autokd_dsl.lang.ops import ELEMENTWISE, OPS, Op, P

    monkeypatch.setitem(OPS, "softsign", Op("softsign", "transform", "x / (1 + |x|)", (P("k", "number", 1),),
                                            ELEMENTWISE))
    binding.cache_clear()
    try:
        with pytest.raises(LookupError, match="op `softsign` names kernel `softsign`"):
            binding("softsign")
        monkeypatch.setattr(kernels, "softsign", lambda x, k: x / (k + x.abs()), raising=False)
        binding.cache_clear()
        teacher, student = build("resnet14", "resnet8")
        loss = compile_text("distiller d:\n    logits -> softsign(2) -> mse -> 1\n", teacher, student)
        s, t = torch.randn(3, 10), torch.randn(3, 10)
        expected = ((s / (2 + s.abs()) - t / (2 + t.abs())) ** 2).mean()
        assert torch.allclose(loss(s_logits=s, t_logits=t)["total"], expected)
    finally:
        binding.cache_clear()


def test_a_batch_of_another_input_size_names_the_tap_and_both_shapes():
    teacher, student = build("resnet14", "resnet8")
    loss = compile_distiller(load_distiller(ROOT / "library" / "at.kd"), teacher, student, SIZE)
    model = attach(teacher, student, loss)
    x, labels = batch(size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"tap `s_stage1`: expected \(16, 16, 16\) per sample, as compiled, "
                                         r"received \(16, 32, 32\)"):
        model(x, labels=labels)
    _, losses = model(*batch(n=3))  # another batch size is fine
    assert torch.isfinite(losses["total"])


def test_a_batch_relation_gets_no_connector_sized_by_the_batch():
    teacher, student = build("resnet14", "resnet8")
    with pytest.raises(KDError, match="would be sized from a batch relation") as info:
        compile_text("distiller d:\n    stage3 -> batch_gram -> adapt -> mse -> 1\n", teacher, student)
    assert info.value.span is not None and info.value.span.line == 2 and "before the relation" in info.value.hint
    with pytest.raises(KDError, match="would be sized from a batch relation"):
        compile_text("distiller d:\n    logits -> softmax -> transpose -> adapt -> mse -> 1\n", teacher, student)
    compile_text("distiller d:\n    stage3 -> adapt -> batch_gram -> mse -> 1\n", teacher, student)


def test_a_map_onto_vit_tokens_matches_each_patch_with_its_place_on_the_map():
    """A CNN's 56×56 map onto a ViT's 197 tokens (a class token, then 14×14 patches in raster order)."""
    connector = Connector((2, 56, 56), (197, 2))
    with torch.no_grad():
        connector.linear.weight.copy_(torch.eye(2))
        connector.linear.bias.zero_()
    rows, cols = torch.meshgrid(torch.arange(56.0), torch.arange(56.0), indexing="ij")
    tokens = connector(torch.stack([rows, cols])[None])[0]  # channel 0 holds the row, channel 1 the column
    centres = 4 * torch.arange(14.0) + 1.5  # each patch averages a 4×4 block of the map
    assert torch.allclose(tokens[1:].view(14, 14, 2), torch.stack(torch.meshgrid(centres, centres, indexing="ij"), 2))
    assert tokens[1 + 13].tolist() == pytest.approx([1.5, 53.5])  # teacher patch (0, 13): the map's top right
    assert tokens[0].tolist() == pytest.approx([27.5, 27.5])  # the class token: the map's average
    small = Connector((2, 7, 7), (198, 2))(torch.randn(3, 2, 7, 7))  # two leading tokens (DeiT), upsampled
    assert small.shape == (3, 198, 2)


def _vit_tokens(side: int, leading: list[list[float]]) -> torch.Tensor:
    """Tokens of one sample: ``leading`` first, then a side × side grid whose tokens hold (row, column)."""
    rows, cols = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")
    grid = torch.stack([rows.flatten(), cols.flatten()], 1)
    return torch.cat([torch.tensor(leading).view(-1, 2), grid])[None]


def _identity(connector: Connector) -> Connector:
    with torch.no_grad():
        connector.linear.weight.copy_(torch.eye(2))
        connector.linear.bias.zero_()
    return connector


def test_vit_tokens_onto_another_token_count_resize_the_grid_and_keep_the_class_token_apart():
    """197 tokens (class + 14×14) onto 50 (class + 7×7) and back: the class token passes through, untouched by
    the patches, and each patch lands where its place on the grid says."""
    down = _identity(Connector((197, 2), (50, 2)))(_vit_tokens(14, [[-100.0, 100.0]]))[0]
    assert down[0].tolist() == [-100.0, 100.0]
    centres = 2 * torch.arange(7.0) + 0.5  # each 7×7 patch averages a 2×2 block of the 14×14 grid
    assert torch.allclose(down[1:].view(7, 7, 2), torch.stack(torch.meshgrid(centres, centres, indexing="ij"), 2))
    assert down[1 + 6].tolist() == pytest.approx([0.5, 12.5])  # patch (0, 6): the top right
    up = _identity(Connector((50, 2), (197, 2)))(_vit_tokens(7, [[-100.0, 100.0]]))[0]
    assert up[0].tolist() == [-100.0, 100.0]
    # bilinear (half-pixel centres): output i samples the 7-grid at i/2 - 1/4, clamped to the grid
    where = (torch.arange(14.0) / 2 - 0.25).clamp(0, 6)
    assert torch.allclose(up[1:].view(14, 14, 2), torch.stack(torch.meshgrid(where, where, indexing="ij"), 2))


def test_leading_tokens_are_averaged_when_the_counts_differ():
    """DeiT's class and distillation tokens onto one class token: their average; no leading tokens at all on
    the student: the grid's average, as from a CNN map."""
    deit = _identity(Connector((198, 2), (50, 2)))(_vit_tokens(14, [[-100.0, 0.0], [100.0, 40.0]]))[0]
    assert deit[0].tolist() == [0.0, 20.0]
    assert deit[1:].view(7, 7, 2)[3, 5].tolist() == pytest.approx([6.5, 10.5])
    plain = _identity(Connector((196, 2), (50, 2)))(_vit_tokens(14, []))[0]
    assert plain[0].tolist() == pytest.approx([6.5, 6.5])
    assert torch.allclose(plain[1:], deit[1:])


def test_gram_kernels_have_the_gradients_of_the_plain_products():
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.batch_gram, (x,)) and torch.autograd.gradcheck(kernels.channel_gram, (x,))
    f = x.detach().flatten(1).requires_grad_()
    (plain,) = torch.autograd.grad((torch.nn.functional.normalize(f @ f.t(), dim=1) ** 3).sum(), f)
    (ours,) = torch.autograd.grad((kernels.batch_gram(f) ** 3).sum(), f)
    assert torch.allclose(ours, plain)
