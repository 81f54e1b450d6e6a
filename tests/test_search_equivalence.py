"""One candidate, one meaning: a space never offers two candidates that compute the same loss."""

import random
from pathlib import Path

import pytest
import torch

from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_block
from autokd_dsl.search.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "space.kd"


def test_kl_temperature_on_distributions_is_a_located_error():
    with pytest.raises(KDError) as info:
        check_text("distiller d:\n    logits -> softmax(4) -> kl(t = 8) -> 1\n", "d.kd")
    text = str(info.value)
    assert "d.kd:2:32" in text and "has no effect" in text and "softmax(4)" in text
    # on logits the temperature applies: t = 1 and t = 8 are two different losses
    check_text("distiller d:\n    logits -> kl(t = 8) -> 1\n")


def test_kl_temperature_on_logits_changes_the_value():
    from autokd_dsl.compiler.build import compile_distiller
    from autokd_dsl.models import create_model

    torch.manual_seed(0)
    net = create_model("resnet8", num_classes=10, in_chans=1)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    values = []
    for temp in (1, 8):
        block = check_text(f"distiller d:\n    logits -> kl(t = {temp}) -> 1\n").blocks[0]
        loss = compile_distiller(block, net, net, (1, 8, 8))
        (s_name,), (t_name,) = list(loss.student_taps), list(loss.teacher_taps)
        values.append(float(loss(**{s_name: s, t_name: t})["total"]))
        pt, log_ps = torch.softmax(t / temp, 1), torch.log_softmax(s / temp, 1)  # Hinton's soft targets
        assert values[-1] == pytest.approx(float((pt * (pt.log() - log_ps)).sum(1).mean()), rel=1e-5)
    assert abs(values[0] - values[1]) > 1e-3


def test_space_offers_one_kl_on_distributions():
    space = SearchSpace(check_text("space s:\n    logits -> (none | softmax(c)) -> kl(t = 1 | 4 | 8) -> 1\n").blocks[0])
    texts = sorted(print_block(space.candidate(p)).splitlines()[1].strip() for p in space.paths())
    assert texts == ["logits -> kl(t = 1) -> 1", "logits -> kl(t = 4) -> 1", "logits -> kl(t = 8) -> 1",
                     "logits -> softmax(c) -> kl -> 1"]
    for p in space.paths():
        check_text(print_block(space.candidate(p)))  # every candidate is a valid distiller


@pytest.fixture(scope="module")
def shaped_space():
    """examples/space.kd pruned by shapes for resnet110 -> resnet20 at 3x16x16, keyed by function."""
    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.models import create_model
    from autokd_dsl.search.equivalence import CompilesOn

    bundle = load_data(DataConfig(name="digits", input_size=(3, 16, 16), train_subset=64))
    torch.manual_seed(0)
    teacher = create_model("resnet110", num_classes=10, in_chans=3).eval()
    probe = CompilesOn(teacher, "resnet110", "resnet20", bundle)
    block = check_text(SPACE.read_text(), str(SPACE)).blocks[0]
    return SearchSpace(block, term_fits=probe, term_values=probe.values), probe


def _values_elsewhere(probe, block, seed=7, n=6):
    """The candidate's total loss on random activations unlike the key's (Gaussian, another seed, float64)."""
    from autokd_dsl.compiler.build import compile_distiller
    from autokd_dsl.standalone.attach import TapCapture

    torch.manual_seed(seed)
    loss = compile_distiller(block, probe.teacher, probe.student, probe.input_size).double().train()
    g = torch.Generator().manual_seed(seed)
    kwargs = {}
    for net, taps in ((probe.student, dict(loss.student_taps)), (probe.teacher, dict(loss.teacher_taps))):
        cap = TapCapture(net, taps, detach=True)
        with torch.no_grad():
            net.eval()(torch.zeros(1, *probe.input_size))
        cap.remove()
        for name, value in cap.values.items():
            kwargs[name] = torch.randn((n, *value.shape[1:]), generator=g, dtype=torch.float64) * 2 + 0.5
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        return float(loss(**kwargs, labels=torch.randint(0, 10, (n,), generator=g), epoch=1)["total"])


def test_distinct_keys_compute_distinct_losses(shaped_space):
    space, probe = shaped_space
    rng = random.Random(0)
    by_key: dict[str, tuple[float, str]] = {}
    for _ in range(300):
        path = ()
        while len(path) < space.num_levels():
            path += (rng.choice(space.options(path)),)
        key = space.key(path)
        if key in by_key:
            continue
        block = space.candidate(path)
        by_key[key] = (_values_elsewhere(probe, block), print_block(block).splitlines()[2].strip())
    assert len(by_key) > 150
    ordered = sorted(by_key.values())
    for (a, ta), (b, tb) in zip(ordered, ordered[1:]):
        assert abs(a - b) > 1e-9 * max(1.0, abs(a)), f"one loss, two keys: `{ta}` and `{tb}` ({a})"


def test_equivalent_spellings_share_a_key(shaped_space):
    space, probe = shaped_space
    from autokd_dsl.search.space import function_key

    def key(kd_term):
        block = check_text(f"distiller autokd:\n    ce: logits ~ labels -> ce -> 1\n    kd: {kd_term}\n").blocks[0]
        return function_key(block, probe.values)

    # resnet20's and resnet110's stage3 are 4x4 at 16x16 inputs: pool(4) is the identity
    assert key("stage3 -> pool(4) -> mse -> 5") == key("stage3 -> mse -> 5")
    assert key("stage3 -> pool(2) -> mse -> 5") != key("stage3 -> mse -> 5")
    # Pearson correlation ignores a per-sample affine map; the weight counts
    assert key("logits -> minmax -> pearson -> 1") == key("logits -> pearson -> 1")
    assert key("logits -> pearson -> 1") != key("logits -> pearson -> 10")


def test_parameters_of_a_space_show_in_every_candidate():
    from autokd_dsl.search.report import candidate_text

    block = check_text("space mine(t = 2 | 4):\n    ce: logits ~ labels -> ce -> 1\n"
                       "    kd: logits -> softmax(t) -> kl -> (1 | 4) * t^2\n").blocks[0]
    space = SearchSpace(block)
    texts = sorted(candidate_text(print_block(space.candidate(p))) for p in space.paths())
    assert texts == [f"mine(t = {t}): ce: logits ~ labels -> ce -> 1 ; kd: logits -> softmax(t) -> kl -> {w} * t^2"
                     for t in (2, 4) for w in (1, 4)]
    assert len({space.key(p) for p in space.paths()}) == 4
