"""The proxy's rewards (`--reward`): each is the formula it names, over validation parts computed as written here."""

import math

import pytest
import torch
from conftest import proxy_context

from autokd_dsl.lang.check import check_text
from autokd_dsl.search.evaluate import REWARDS, ProxySettings, _Runner, evaluate

SPACE = "space s:\n    ce: logits ~ labels -> ce -> 1\n    kd: logits -> softmax(4) -> kl -> (1 | 2)\n"
KD = "distiller d:\n    ce: logits ~ labels -> ce -> 1\n    kd: logits -> softmax(4) -> kl -> 1\n"

# each reward written out from its description, on (ce, gap, acc, tkl)
EXPECTED = {
    "ce+gap": lambda ce, gap, acc, tkl: -(0.5 * ce + 0.5 * gap),
    "ce": lambda ce, gap, acc, tkl: -ce,
    "ce+0.1gap": lambda ce, gap, acc, tkl: -(ce + 0.1 * gap),
    "kl": lambda ce, gap, acc, tkl: -tkl,
    "acc": lambda ce, gap, acc, tkl: acc,
    "acc-ce": lambda ce, gap, acc, tkl: acc - ce,
}


@pytest.fixture(scope="module")
def ctx():
    return proxy_context(SPACE, (3, 8, 8), 64)


def test_every_reward_has_a_written_formula():
    assert set(REWARDS) == set(EXPECTED)


def test_validation_parts_match_a_hand_computation(ctx, one_thread):
    from autokd_dsl.compiler.build import compile_distiller
    from autokd_dsl.models import create_model

    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_chans=3)
    loss = compile_distiller(check_text(KD).blocks[0], ctx.teacher, student, ctx.input_size)
    runner = _Runner(student, loss, ctx)
    assert runner.train() is not None
    parts = runner.score()
    with torch.no_grad():
        student.eval()
        s_logits = student(ctx.val_x).double()
        t_logits = ctx.teacher(ctx.val_x).double()
    log_ps, log_pt = s_logits.log_softmax(1), t_logits.log_softmax(1)
    ce = float(-log_ps[torch.arange(len(ctx.val_y)), ctx.val_y].mean())
    acc = float((s_logits.argmax(1) == ctx.val_y).double().mean())
    tkl = float((log_pt.exp() * (log_pt - log_ps)).sum(1).mean())
    assert parts["ce"] == pytest.approx(ce, rel=1e-4, abs=1e-6)
    assert parts["acc"] == pytest.approx(acc)
    assert parts["tkl"] == pytest.approx(tkl, rel=1e-3, abs=1e-6)
    assert parts["tkl"] > 0


def test_a_student_that_is_the_teacher_has_kl_zero(ctx):
    # the close regime: the student's predictions equal the teacher's, so KL(teacher ‖ student) is 0, not eps-sized
    import copy

    from autokd_dsl.compiler.build import compile_distiller

    student = copy.deepcopy(ctx.teacher)
    loss = compile_distiller(check_text(KD).blocks[0], ctx.teacher, student, ctx.input_size)
    parts = _Runner(student, loss, ctx).score()
    assert abs(parts["tkl"]) < 1e-6
    assert parts["gap"] < 1e-6


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_reward_is_its_formula(ctx, name, one_thread):
    out = evaluate(check_text(KD).blocks[0], ctx, ProxySettings(epochs=1, reward=name))
    assert out.status == "ok"
    assert out.reward == pytest.approx(EXPECTED[name](out.ce, out.gap, out.acc, out.tkl))
    assert math.isfinite(out.reward)


def test_an_unknown_reward_is_refused():
    with pytest.raises(ValueError, match="unknown reward `bogus`"):
        ProxySettings(reward="bogus")
