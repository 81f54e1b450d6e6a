"""The default space (examples/space.kd) holds the library's single-term distillers, up to their weight.

For each library distiller named in CONTAINED, the test finds the candidate of the space that stands for it
(taps, transforms and distance as written there; `none` in the other transform slots), checks that the search
offers it on resnet110 → resnet20 at 3×16×16 (kind and shape pruning), and compiles both onto the two
networks: on several random batches, the library's distillation term divided by the candidate's must be the
same constant, the ratio of their weights (and of their reductions, where they differ). So a candidate that
only looks alike, or an option that drops out of the space, fails here.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import pytest
import torch

from autokd_dsl.compiler.build import attach, compile_distiller, load_distiller
from autokd_dsl.errors import KDError
from autokd_dsl.lang import ir
from autokd_dsl.lang.check import NONE, check_text
from autokd_dsl.lang.printer import print_block, print_step, print_tap_option
from autokd_dsl.models import create_model
from autokd_dsl.search.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "space.kd"
TEACHER, STUDENT, INPUT, CLASSES, BATCH = "resnet110", "resnet20", (3, 16, 16), 10, 16
# the distillers the issue names; the space must keep every one of them
REQUIRED = {"kd", "fitnet", "at", "sp", "pkt", "nst", "cwd"}
# library distiller → (its distillation term as a candidate of the space, library term ÷ candidate term)
CONTAINED = {
    "kd": ("logits -> kl(t = 4) -> 10", 0.9 * 4**2 / 10),  # softmax(4) -> kl is kl(t = 4) on logits
    "fitnet": ("stage2 -> regress -> mse -> 50", 100 / 50),
    "at": ("stage1, stage2, stage3 -> attention(2) -> mse -> 50", 1000 / 50),
    "sp": ("stage3 -> batch_gram -> mse -> 50", 3000 / 50),
    # PKT's kl(reduce = all) averages over the N² entries of the batch relation, the space's kl over N rows
    "pkt": ("embedding -> cond_prob -> kl -> 50", 30000 / 50 / BATCH),
    "nst": ("stage1, stage2, stage3 -> normalize(hw) -> mmd -> 50", 1.0),
    # align is the identity where the widths match (they do here); the softmax temperature is 1
    "cwd": ("stage3 -> softmax(hw) -> kl -> 5", 1.0),
}


@cache
def net(name: str, seed: int = 0) -> torch.nn.Module:
    """A random network whose BatchNorm statistics are calibrated on random inputs (so activations are of
    order one, as in a trained network, instead of growing with depth)."""
    torch.manual_seed(sum(map(ord, name)) + seed)
    model = create_model(name, num_classes=CLASSES, in_chans=INPUT[0])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(64, *INPUT))
    return model.eval()


def compiles(block: ir.Block) -> bool:
    try:
        compile_distiller(block, net(TEACHER), create_model(STUDENT, num_classes=CLASSES), INPUT)
    except KDError:
        return False
    return True


@lru_cache(maxsize=1)
def space() -> SearchSpace:
    block = check_text(SPACE.read_text(encoding="utf-8"), str(SPACE)).blocks[0]
    return SearchSpace(block, term_fits=compiles)


def candidate_text(term: str) -> str:
    return f"distiller autokd:\n    ce: logits ~ labels -> ce -> 1\n    kd: {term}\n"


def find_path(sp: SearchSpace, target: ir.Term) -> tuple[int, ...] | None:
    """The choices that spell ``target`` in the space's distillation term: the taps, then each transform
    slot takes the next of the target's transforms or `none`, then the distance and the weight."""
    slots = sp.slots[1]
    wanted = [print_step(s) for s in target.transforms]

    def walk(i: int, used: int, picks: list) -> list | None:
        if i == len(slots):
            return picks if used == len(wanted) else None
        slot, texts = slots[i], [_text(o) for o in slots[i].options]
        if slot.role == "tap":
            goal = [", ".join(_text(t) for t in target.taps)]
        elif slot.role == "transform":
            goal = ([wanted[used]] if used < len(wanted) else []) + [NONE]
        else:
            goal = [print_step(target.distance if slot.role == "distance" else target.weight)]
        for g in goal:
            if g in texts:
                found = walk(i + 1, used + (slot.role == "transform" and g != NONE), picks + [texts.index(g)])
                if found is not None:
                    return found
        return None

    picks = walk(0, 0, [])
    return None if picks is None else tuple(p for p, s in zip(picks, slots) if s.level is not None)


def _text(option) -> str:
    if isinstance(option, ir.TapGroup):
        return ", ".join(print_tap_option(t) for t in option.taps)
    return print_tap_option(option) if isinstance(option, ir.Tap) else print_step(option)


def test_the_default_space_keeps_the_named_distillers():
    assert REQUIRED <= set(CONTAINED), f"dropped from the default space: {sorted(REQUIRED - set(CONTAINED))}"


def test_the_space_file_cites_the_paper():
    header = SPACE.read_text(encoding="utf-8").split("space ")[0]
    assert "Lujun Li, Peijie Dong, Zimian Wei, Ya Yang" in header
    assert "Automated Knowledge\n# Distillation via Monte Carlo Tree Search" in header and "ICCV 2023" in header


@pytest.mark.parametrize("name", sorted(CONTAINED))
def test_the_space_offers_the_library_distiller(name: str, one_thread):
    term, ratio = CONTAINED[name]
    target = check_text(candidate_text(term)).blocks[0]
    sp = space()
    path = find_path(sp, target.terms[1])
    assert path is not None, f"`{term}` is not spelled by the options of examples/space.kd"
    for level, option in enumerate(path):  # the search offers each choice: kinds and shapes fit
        assert option in sp.options(path[:level]), f"{name}: `{sp.label(level, option)}` is pruned"
    assert print_block(sp.candidate(path)) == print_block(target)

    library = load_distiller(ROOT / "library" / f"{name}.kd")
    lib_term = next(t.label for t in library.terms if not any(tap.teacher_point.is_labels for tap in t.taps))
    values = [_term_values(library, sp.candidate(path), lib_term, seed) for seed in range(3)]
    for lib_value, cand_value in values:
        assert cand_value > 0 and torch.isclose(torch.tensor(lib_value / cand_value), torch.tensor(ratio),
                                                rtol=1e-4), (name, lib_value, cand_value, ratio)
    assert len({round(v[0], 6) for v in values}) == 3  # the batches differ, so the check sees the function


def _term_values(library: ir.Block, cand: ir.Block, lib_term: str, seed: int) -> tuple[float, float]:
    """The library's distillation term and the candidate's `kd` term on one random batch."""
    student = net(STUDENT, seed)
    out, first = [], None
    for block, term in ((library, lib_term), (cand, "kd")):
        loss = compile_distiller(block, net(TEACHER), student, INPUT)
        if first is None:
            first = loss
        else:  # the candidate's connector starts from the library's
            _copy_state(first, loss)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(BATCH, *INPUT, generator=gen)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        attached = attach(net(TEACHER), student, loss).eval()
        with torch.no_grad():
            _, losses = attached(x, labels=y, epoch=1)
        attached.detach_hooks()
        out.append(float(losses[term]))
    return out[0], out[1]


def _copy_state(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Parameters and buffers in module order (the names differ: `hint_stage2` against `adapt_stage2`)."""
    src, dst = list(source.state_dict().values()), target.state_dict()
    assert [v.shape for v in src] == [v.shape for v in dst.values()], "the connectors differ in structure"
    target.load_state_dict(dict(zip(dst, src)))
