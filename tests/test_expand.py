"""Multi-layer expansion with training-free weights (`autokd-dsl expand`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_block
from autokd_dsl.models import create_model
from autokd_dsl.multilayer import expand_layers, term_losses

ROOT = Path(__file__).resolve().parent.parent
HINT = "distiller d:\n    ce: logits ~ labels -> ce -> 1\n    hint: stage3 -> mse -> 5\n"
LAYERS = ["stage1", "stage2", "stage3"]


@pytest.fixture()
def nets():
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=10, in_chans=1).eval()
    student = create_model("resnet8", num_classes=10, in_chans=1)
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    return teacher, student, x, y


def _stage_mse(teacher, student, x) -> dict[str, float]:
    """The paper's hint loss by hand: mean squared difference of each stage's output (student in eval mode)."""
    feats = {}
    for name, net in (("t", teacher), ("s", student)):
        hooks = [getattr(net, f"layer{i}").register_forward_hook(
            lambda m, inp, out, key=(name, i): feats.__setitem__(key, out.double())) for i in (1, 2, 3)]
        net.eval()
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
    return {f"stage{i}": float(((feats["s", i] - feats["t", i]) ** 2).mean()) for i in (1, 2, 3)}


def _factor(term) -> float:
    weight = term.steps[-1]
    assert weight.op == "*" and weight.left.value == 5  # the original weight, times the factor
    return float(weight.right.value)


def test_weights_balance_the_layers_losses_on_the_batch(nets):
    teacher, student, x, y = nets
    block = check_text(HINT).blocks[0]
    out, info = expand_layers(block, LAYERS, teacher, student, x, y)
    ref = _stage_mse(teacher, student, x)
    assert info["original"] == pytest.approx(ref["stage3"], rel=1e-5)
    for layer in LAYERS:
        assert info["layers"][layer] == pytest.approx(ref[layer], rel=1e-5)
    terms = {t.label: t for t in out.terms}
    assert list(terms) == ["ce", "hint_stage1", "hint_stage2", "hint_stage3"]
    for layer in LAYERS:  # weight_l = w * L / (n * L_l), to 4 significant digits
        assert _factor(terms[f"hint_{layer}"]) == pytest.approx(ref["stage3"] / (3 * ref[layer]), rel=1e-3)
    # the expanded file, compiled anew: weighted per-layer losses are equal and add up to the original's
    again = check_text(print_block(out)).blocks[0]
    weighted = [5 * _factor(t) * v for t, v in zip(again.terms[1:], term_losses(again, list(again.terms[1:]),
                                                                                 teacher, student, x, y))]
    assert weighted == pytest.approx([weighted[0]] * 3, rel=2e-3)
    assert sum(weighted) == pytest.approx(5 * ref["stage3"], rel=2e-3)
    assert "expanded over stage1, stage2, stage3" in print_block(out)


def test_the_losses_are_measured_with_the_student_in_eval_mode_and_leave_it_as_it_was(nets):
    teacher, student, x, y = nets
    student.train()
    expand_layers(check_text(HINT).blocks[0], LAYERS, teacher, student, x, y)
    assert student.training
    assert not student._forward_hooks and not student.layer3._forward_hooks  # the tap hooks are gone


def test_bad_expansions_are_located_errors(nets):
    teacher, student, x, y = nets
    kd = check_text("distiller kd:\n    soft: logits -> softmax(4) -> kl -> 1\n").blocks[0]
    with pytest.raises(KDError, match="no term tapped at one feature point"):
        expand_layers(kd, LAYERS, teacher, student, x, y)
    with pytest.raises(KDError, match="no term `nope`"):
        expand_layers(check_text(HINT).blocks[0], LAYERS, teacher, student, x, y, term="nope")
    spatial = check_text("distiller d:\n    at: stage3 -> spatial_attention -> mse -> 1\n").blocks[0]
    with pytest.raises(KDError, match="does not apply at every layer"):
        expand_layers(spatial, ["stage3", "logits"], teacher, student, x, y)
    with pytest.raises(KDError, match="distinct"):
        expand_layers(check_text(HINT).blocks[0], ["stage1", "stage1"], teacher, student, x, y)


@pytest.mark.slow
def test_cli_writes_a_checked_distiller(tmp_path):
    from rich.console import Console

    from autokd_dsl.data import DataConfig
    from autokd_dsl.training.teacher import Recipe, train_teacher

    ckpt = train_teacher("resnet8", DataConfig(name="digits", input_size=(1, 8, 8)), Recipe(epochs=1),
                         tmp_path / "t.pt", Console(quiet=True))
    src = tmp_path / "best.kd"
    src.write_text(HINT)
    cmd = [sys.executable, "-m", "autokd_dsl", "expand", str(src), "--layers", "stage1,stage2,stage3",
           "--teacher", "resnet8", "--student", "resnet8", "--teacher-weights", str(ckpt), "--input-size", "1x8x8"]
    proc = subprocess.run([*cmd, "-o", str(tmp_path / "multi.kd")], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "term `hint`" in proc.stderr
    check = subprocess.run([sys.executable, "-m", "autokd_dsl", "check", str(tmp_path / "multi.kd")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert (tmp_path / "multi.kd").read_text().count("hint_stage") == 3
    bad = subprocess.run([*cmd[:6], "stage1,nowhere", *cmd[7:]], capture_output=True, text=True, cwd=ROOT, check=False)
    assert bad.returncode == 2 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr
