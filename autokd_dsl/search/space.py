"""A checked `space` block as a tree of choices: one level per choice node, in source order.

Only kind-valid options are offered: an option is legal when the partial distiller stays kind-valid *and* at
least one completion of its term exists, so the search never proposes a candidate the checker would reject.

>>> from autokd_dsl.check import check_text
>>> prog = check_text("space s:\\n    logits -> (none | softmax(4) | normalize) -> (kl | mse) -> (1 | 10)\\n")
>>> space = SearchSpace(prog.blocks[0])
>>> space.num_levels(), space.size()
(3, 10)
>>> from autokd_dsl.printer import print_block
>>> print(print_block(space.candidate((1, 0, 1))), end="")
distiller s:
    logits -> softmax(4) -> kl -> 10
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from .. import ir
from ..check import NONE, apply_transform, distance_fits, tap_kinds
from ..errors import KDError
from ..kinds import Kind
from ..printer import print_expr, print_step, print_tap

Path = tuple[int, ...]


def expand(expr: ir.Expr) -> list[ir.Expr]:
    """Every concrete expression a (possibly nested) choice stands for, in source order.

    >>> from autokd_dsl.parse import parse
    >>> step = parse("distiller d:\\n  x -> kl(t = 1 | 4) -> 1\\n").blocks[0].terms[0].steps[0]
    >>> [print_expr(e) for e in expand(step)]
    ['kl(t = 1)', 'kl(t = 4)']
    """
    if isinstance(expr, ir.Choice):
        return [e for option in expr.options for e in expand(option)]
    if isinstance(expr, ir.BinOp):
        return [dataclasses.replace(expr, left=a, right=b) for a, b in itertools.product(expand(expr.left),
                                                                                          expand(expr.right))]
    if isinstance(expr, ir.Neg):
        return [dataclasses.replace(expr, operand=o) for o in expand(expr.operand)]
    if isinstance(expr, ir.Call):
        per_arg = [[dataclasses.replace(a, value=v) for v in expand(a.value)] for a in expr.args]
        return [dataclasses.replace(expr, args=tuple(args)) for args in itertools.product(*per_arg)]
    return [expr]


@dataclass(frozen=True)
class Slot:
    """One position of a term: the taps, a transform, the distance or the weight."""

    role: str  # "tap" | "transform" | "distance" | "weight" | "param"
    options: tuple  # the concrete alternatives (one for a fixed slot)
    term: int  # index of the term (-1 for header parameters)
    level: int | None  # the choice level, or None when fixed


class SearchSpace:
    """The levels of a space and its kind-valid candidates (implements the search's ``ChoiceSpace``)."""

    def __init__(self, block: ir.Block, tap_kind: Callable[[ir.Tap], tuple[Kind, Kind]] = tap_kinds):
        self.block, self.tap_kind = block, tap_kind
        self.slots: list[list[Slot]] = []
        self.levels: list[Slot] = []
        self.param_slots = [self._slot("param", expand(p.value), -1) for p in block.params]
        for t, term in enumerate(block.terms):
            slots = [self._slot("tap", list(s.options) if isinstance(s, ir.TapChoice) else [s], t) for s in term.taps]
            slots += [self._slot("transform", expand(s), t) for s in term.transforms]
            slots.append(self._slot("distance", expand(term.distance), t))
            slots.append(self._slot("weight", expand(term.weight), t))
            self.slots.append(slots)
        self._feasible = lru_cache(maxsize=None)(self._feasible_uncached)
        for t, slots in enumerate(self.slots):
            if not self._feasible(t, 0, ()):
                raise KDError(f"no combination of the alternatives of term {t + 1} of `{block.name}` is kind-valid",
                              span=block.terms[t].span, hint="check the transforms' kinds with `autokd-dsl ops`")

    def _slot(self, role: str, options: list, term: int) -> Slot:
        level = len(self.levels) if len(options) > 1 else None
        slot = Slot(role, tuple(options), term, level)
        if level is not None:
            self.levels.append(slot)
        return slot

    # ---- ChoiceSpace --------------------------------------------------------------------------------------
    def num_levels(self) -> int:
        return len(self.levels)

    def label(self, level: int, option: int) -> str:
        value = self.levels[level].options[option]
        if isinstance(value, ir.Tap):
            return print_tap(value)
        return print_step(value) if isinstance(value, ir.Expr.__args__) else str(value)

    def options(self, prefix: Path) -> list[int]:
        level = self.levels[len(prefix)]
        if level.role in ("param", "weight"):
            return list(range(len(level.options)))
        slots = self.slots[level.term]
        position = slots.index(level)
        state = self._replay(slots[:position], prefix)
        legal = []
        for i, option in enumerate(level.options):
            nxt = self._step(level, option, state)
            if nxt is not None and self._feasible(level.term, position + 1, nxt):
                legal.append(i)
        return legal

    def key(self, path: Path) -> str:
        return self.candidate(path).key

    # ---- kinds ---------------------------------------------------------------------------------------------
    def _replay(self, slots: list[Slot], prefix: Path):
        state: tuple = ()
        for slot in slots:
            option = slot.options[prefix[slot.level]] if slot.level is not None else slot.options[0]
            state = self._step(slot, option, state)
        return state

    def _step(self, slot: Slot, option, state):
        """Kinds after a slot: a tuple of (student, teacher) kinds per tap; None when invalid."""
        if state is None:
            return None
        if slot.role == "tap":
            return state + (self.tap_kind(option),)
        if slot.role == "transform":
            if isinstance(option, ir.Name) and option.id == NONE:
                return state
            after = tuple(apply_transform(option, kinds) for kinds in state)
            return None if any(k is None for k in after) else after
        if slot.role == "distance":
            return ("done",) if all(distance_fits(option, kinds) for kinds in state) else None
        return state

    def _feasible_uncached(self, term: int, position: int, state) -> bool:
        slots = self.slots[term]
        if position == len(slots):
            return True
        slot = slots[position]
        return any(
            (nxt := self._step(slot, option, state)) is not None and self._feasible(term, position + 1, nxt)
            for option in slot.options
        )

    # ---- candidates --------------------------------------------------------------------------------------
    def candidate(self, path: Path) -> ir.Block:
        """The distiller a complete path chooses (optional transforms left out)."""
        def pick(slot: Slot):
            return slot.options[path[slot.level]] if slot.level is not None else slot.options[0]

        params = tuple(dataclasses.replace(p, value=pick(s)) for p, s in zip(self.block.params, self.param_slots))
        terms = []
        for term, slots in zip(self.block.terms, self.slots):
            chosen = [pick(s) for s in slots]
            taps = tuple(c for c, s in zip(chosen, slots) if s.role == "tap")
            steps = tuple(c for c, s in zip(chosen, slots) if s.role != "tap"
                          and not (isinstance(c, ir.Name) and c.id == NONE))
            terms.append(dataclasses.replace(term, taps=taps, steps=steps))
        return dataclasses.replace(self.block, kind="distiller", params=params, terms=tuple(terms), comments=())

    def paths(self):
        """Every valid complete path, depth first (for small spaces and tests)."""
        def walk(prefix: Path):
            if len(prefix) == self.num_levels():
                yield prefix
                return
            for option in self.options(prefix):
                yield from walk(prefix + (option,))

        yield from walk(())

    def size(self) -> int:
        return sum(1 for _ in self.paths())
