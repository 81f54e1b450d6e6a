"""Per-term loss rejection on the probe batches: a candidate whose distillation term cannot teach is rejected
before training, with a reason naming the term."""

import pytest
from conftest import proxy_context

from autokd_dsl.lang.check import check_text
from autokd_dsl.search.evaluate import ProxySettings, evaluate

SPACE = ("space s:\n    ce: logits ~ labels -> ce -> 1\n"
         "    kd: stage3 | logits -> (none | patches(4) | spatial_attention) -> (none | softmax(hw) | softmax(c)) "
         "-> (kl | mse) -> 1\n")


@pytest.fixture(scope="module")
def ctx():
    return proxy_context(SPACE, (3, 16, 16), 96)


def _outcome(ctx, kd_term, ce="logits ~ labels -> ce -> 1", settings=None):
    block = check_text(f"distiller d:\n    ce: {ce}\n    kd: {kd_term}\n").blocks[0]
    return evaluate(block, ctx, settings)


def test_a_constant_term_is_rejected_with_the_reason(ctx):
    # resnet8's stage3 is 4x4 at 16x16 inputs
    out = _outcome(ctx, "stage3 -> patches(4) -> softmax(hw) -> kl -> 1")
    assert out.status == "rejected" and out.reward is None
    assert out.reason == ("term `kd` is constant 0 on two different probe batches: patches(4) on a 4×4 map leaves "
                          "1×1 patches, and softmax over one position is 1")
    out = _outcome(ctx, "stage3 -> spatial_attention -> softmax(c) -> mse -> 1")
    assert out.status == "rejected"
    assert "term `kd` is constant" in out.reason and "spatial_attention leaves one channel" in out.reason


def test_a_term_that_teaches_passes(ctx):
    out = _outcome(ctx, "stage3 -> softmax(hw) -> kl -> 1")
    assert out.status == "ok" and out.reward is not None and set(out.losses) >= {"kd", "ce", "total"}


def test_a_term_without_student_gradient_is_rejected(ctx):
    # the student's side multiplied by 0: the term varies with the teacher's features but never reaches the student
    out = _outcome(ctx, "stage3 -> student.scale(0) -> mse -> 1")
    assert out.status == "rejected" and out.reason == "term `kd` gives the student no gradient"


def test_a_term_that_starts_at_weight_zero_passes(ctx):
    # DKD's terms ramp up (`warmup`): weight 0 at the first epoch, so the probe looks at later epochs too
    out = _outcome(ctx, "logits -> softmax(4) -> kl -> 2 * warmup(20)", settings=ProxySettings(epochs=3))
    assert out.status == "ok", out.reason
    # in a 1-epoch proxy run the ramp never leaves 0: the term cannot teach there
    out = _outcome(ctx, "logits -> softmax(4) -> kl -> 2 * warmup(20)", settings=ProxySettings(epochs=1))
    assert out.status == "rejected" and out.reason.startswith("term `kd` is constant 0")


def test_a_term_that_never_starts_within_the_proxy_is_rejected(ctx):
    # `after(50)` keeps the weight at 0 through the whole 3-epoch proxy run
    out = _outcome(ctx, "logits -> softmax(4) -> kl -> after(50)", settings=ProxySettings(epochs=3))
    assert out.status == "rejected" and out.reason.startswith("term `kd` is constant 0")


def test_the_library_dkd_passes_the_probe(ctx):
    from autokd_dsl.compiler.build import load_distiller
    from autokd_dsl.lang.library import library_dir

    out = evaluate(load_distiller(library_dir() / "dkd.kd"), ctx, ProxySettings(epochs=3))
    assert out.status == "ok", out.reason
