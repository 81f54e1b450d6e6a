"""Several teachers: the language's teacher taps and weights, the compiled loss against references written from
the papers (AVER, CA-MKD), the training-free weights, and the located errors.

Run with ``-s`` to see the largest relative differences per library distiller.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_losses import MULTI_TEACHER, REFERENCES

from autokd_dsl.compiler.build import attach, compile_distiller, load_distiller
from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_program
from autokd_dsl.models import create_model
from autokd_dsl.standalone import teachers as tw

ROOT = Path(__file__).resolve().parent.parent
SIZE = (3, 16, 16)
TEACHERS = ("resnet14", "wrn_16_2")  # heterogeneous: 64 and 128 channels at stage3
BATCH = 8
DIFFS: dict[str, list[float]] = {}


@cache
def net(name: str, classes: int = 10):
    torch.manual_seed(sum(map(ord, name)))
    return create_model(name, num_classes=classes)


def nets():
    return [net(t) for t in TEACHERS], net("resnet8")


def compiled(text_or_path, teachers=None):
    block = load_distiller(text_or_path) if isinstance(text_or_path, Path) else check_text(text_or_path).blocks[0]
    t, s = nets()
    return compile_distiller(block, teachers if teachers is not None else t, s, SIZE, teacher_name=list(TEACHERS))


# ---- language -------------------------------------------------------------------------------------------------


def test_teacher_taps_print_back_and_single_teacher_files_keep_their_meaning():
    text = ("distiller d(t = 4):\n"
            "    a: logits ~ teachers.logits -> softmax(t) -> kl -> t^2 * confidence\n"
            "    b: stage3 ~ teacher2.stage3 -> adapt -> mse -> 2\n"
            "    c: stage2 ~ teachers.stage2 -> attention -> mse -> 100 * (equal + balance)\n")
    program = check_text(text)
    assert print_program(program) == text
    assert check_text(print_program(program)) == program
    kd = load_distiller(ROOT / "library" / "kd.kd")
    t, s = nets()
    one = compile_distiller(kd, t[0], s, SIZE)
    listed = compile_distiller(kd, [t[0]], s, SIZE)
    assert one.code == listed.code and one.teacher_taps == {"t_logits": "fc"}


@pytest.mark.parametrize("text, message, col", [
    ("    teachers.logits -> kl -> 1\n", "needs a student point to pair with", 5),
    ("    logits -> softmax(4) -> kl -> confidence\n", "`confidence` weighs the teachers", 35),
    ("    logits ~ teacher0.logits -> kl -> 1\n", "teachers count from 1", 14),
    ("    teacher2.logits ~ logits -> kl -> 1\n", "the left side of `~` is the student's point", 5),
    ("    logits ~ teachers.logits, stage3 ~ teacher2.stage3 -> mse -> 1\n", "either each teacher", 31),
])
def test_teacher_taps_are_checked_where_written(text, message, col):
    with pytest.raises(KDError) as info:
        check_text("distiller d:\n" + text)
    assert message in info.value.message and (info.value.line, info.value.col) == (2, col)


# ---- numeric tests of the library against the references --------------------------------------------------------


def logits_batch(seed: int, near: bool):
    """Seeded logits of the two teachers and the student; ``near``: the student is within 1e-3 of teacher 1."""
    gen = torch.Generator().manual_seed(seed)
    t1, t2 = (3.0 * torch.randn(BATCH, 10, generator=gen, dtype=torch.float64) for _ in range(2))
    s = t1 + 1e-3 * torch.randn(BATCH, 10, generator=gen, dtype=torch.float64) if near else \
        2.0 * torch.randn(BATCH, 10, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 10, (BATCH,), generator=gen)
    return {"s_logits": s.requires_grad_(True), "t1_logits": t1, "t2_logits": t2}, labels


@pytest.mark.parametrize("near", [False, True], ids=["apart", "near-teacher"])
@pytest.mark.parametrize("name", sorted(MULTI_TEACHER))
def test_library_matches_the_reference(name, near):
    loss = copy.deepcopy(compiled(ROOT / "library" / f"{name}.kd")).double().train()
    assert sorted(loss.teacher_taps) == ["t1_logits", "t2_logits"]
    acts, labels = logits_batch(len(name), near)
    terms = loss(**acts, labels=labels, epoch=1)
    ref = REFERENCES[name](acts, labels, 1, {}, {})
    total = terms["total"]
    assert torch.isfinite(total) and torch.allclose(total, ref, rtol=1e-9, atol=1e-12), (total.item(), ref.item())
    labelled = terms.get("ce", terms.get("hard"))
    assert torch.allclose(total - labelled, ref - labelled, rtol=1e-7, atol=1e-14)
    grad, = torch.autograd.grad(total, acts["s_logits"])
    ref_grad, = torch.autograd.grad(ref, acts["s_logits"])
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)
    diffs = DIFFS.setdefault(f"{name} ({'near' if near else 'apart'})", [0.0, 0.0])
    diffs[0] = max(diffs[0], float((total - ref).abs().detach() / ref.abs().detach()))
    diffs[1] = max(diffs[1], float((grad - ref_grad).abs().max() / ref_grad.abs().max()))


def test_aver_gives_the_gradient_of_the_averaged_soft_targets():
    loss = copy.deepcopy(compiled(ROOT / "library" / "aver.kd")).double()
    acts, labels = logits_batch(5, near=False)
    soft = loss(**acts, labels=labels)["soft"]
    mean_p = (F.softmax(acts["t1_logits"] / 4, 1) + F.softmax(acts["t2_logits"] / 4, 1)) / 2
    kl = F.kl_div(F.log_softmax(acts["s_logits"] / 4, 1), mean_p, reduction="batchmean") * 0.9 * 16
    g, = torch.autograd.grad(soft, acts["s_logits"])
    r, = torch.autograd.grad(kl, acts["s_logits"])
    assert torch.allclose(g, r, rtol=1e-9, atol=1e-12) and not torch.allclose(soft, kl)


@pytest.fixture(scope="module", autouse=True)
def _report_differences():
    yield
    if DIFFS:
        print("\nlargest relative difference, compiled vs reference (value, student gradient):")
        for name, (value, grad) in sorted(DIFFS.items()):
            print(f"  {name:18s} {value:.2e}  {grad:.2e}")


# ---- training-free weights -----------------------------------------------------------------------------------


def test_confidence_weights_favour_the_teacher_surer_of_the_label():
    labels = torch.tensor([0, 1])
    sure = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    unsure = torch.tensor([[0.5, 0.0], [0.0, 0.1]])
    wrong = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    w = tw.confidence(labels, [sure, unsure, wrong])
    assert w.shape == (3, 2) and torch.allclose(w.sum(0), torch.ones(2))
    assert (w[0] > w[1]).all() and (w[1] > w[2]).all()


def test_balance_and_agreement_are_fixed_on_the_first_training_batch_and_saved():
    balance = tw.TeacherWeights("balance", 2)
    first = balance(torch.tensor(1.0), torch.tensor(3.0))
    assert torch.allclose(first, torch.tensor([1.0, 1 / 3]))  # mean 2: 2/(2·1), 2/(2·3)
    assert torch.allclose(balance(torch.tensor(5.0), torch.tensor(1.0)), first)  # kept
    restored = tw.TeacherWeights("balance", 2)
    restored.load_state_dict(balance.state_dict())
    assert torch.allclose(restored(torch.tensor(9.0), torch.tensor(9.0)), first)
    agreement = tw.TeacherWeights("agreement", 2).eval()  # eval: computed, not kept
    s = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    w = agreement(s, s * 2 + 1, s, torch.randn(16, 8))
    assert w[0] > 0.7 and torch.allclose(w.sum(), torch.tensor(1.0)) and not bool(agreement.ready)


def test_linear_cka_is_one_for_a_scaled_copy_and_works_across_widths():
    x = torch.randn(32, 10, generator=torch.Generator().manual_seed(1))
    assert torch.isclose(tw.linear_cka(x, 3 * x + 2), torch.tensor(1.0, dtype=torch.float64))
    y = torch.randn(32, 40, generator=torch.Generator().manual_seed(2))
    assert 0 <= float(tw.linear_cka(x, y)) < 0.9


FEATURES = """distiller feat:
    ce: logits ~ labels -> ce -> 1
    f: stage3 ~ teachers.stage3 -> adapt -> mse -> 2 * agreement
    g: stage2 ~ teachers.stage2 -> attention -> mse -> 100 * balance
"""


def test_connectors_are_sized_per_teacher_and_no_teacher_gets_gradients():
    teachers, student = nets()
    loss = compile_distiller(check_text(FEATURES).blocks[0], teachers, student, SIZE)
    widths = sorted(m.args[1][0] for m in loss.children() if type(m).__name__ == "Connector")
    assert widths == [64, 128]
    model = attach(teachers, student, loss)
    x = torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(0))
    _, losses = model(x, labels=torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert all(p.grad is not None for p in loss.parameters())
    assert any(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for t in teachers for p in t.parameters())
    assert bool(loss.agreement_f.ready) and bool(loss.balance_g.ready)
    model.detach_hooks()
    student.zero_grad()


# ---- located errors ------------------------------------------------------------------------------------------


def test_a_tap_naming_a_teacher_not_given_is_located_with_the_teachers_listed():
    with pytest.raises(KDError) as info:
        compiled("distiller d:\n    logits ~ teacher3.logits -> softmax(4) -> kl -> 1\n")
    err = info.value
    assert (err.line, err.col) == (2, 14) and "names teacher 3" in err.message
    assert "teacher1 = resnet14, teacher2 = wrn_16_2" in err.hint


def test_a_multi_teacher_file_with_one_teacher_is_located():
    with pytest.raises(KDError) as info:
        compiled(ROOT / "library" / "ca_mkd.kd", teachers=[net("resnet14")])
    assert info.value.line == 9 and "several teachers" in info.value.message and "--teacher" in info.value.hint


def test_teachers_with_different_class_counts_are_located():
    with pytest.raises(KDError) as info:
        compiled(ROOT / "library" / "aver.kd", teachers=[net("resnet14"), net("wrn_16_2", 100)])
    assert info.value.line == 7 and "100 classes" in info.value.message
