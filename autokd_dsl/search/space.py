"""A checked `space` block as a tree of choices: one level per choice node, in source order.

Only kind-valid options are offered: an option is legal when the partial distiller stays kind-valid *and* at
least one completion of its term exists, so the search never proposes a candidate the checker would reject.
Given a shape check (``term_fits``, e.g. :class:`autokd_dsl.search.run.CompilesOn`), options whose every
completion fails to compile on the teacher and student (``patches(4)`` on a 2x2 map) are left out too.

>>> from autokd_dsl.lang.check import check_text
>>> prog = check_text("space s:\\n    logits -> (none | softmax(4) | normalize) -> (kl | mse) -> (1 | 10)\\n")
>>> space = SearchSpace(prog.blocks[0])
>>> space.num_levels(), space.size()
(3, 12)
>>> from autokd_dsl.lang.printer import print_block
>>> print(print_block(space.candidate((1, 0, 1))), end="")
distiller s:
    logits -> softmax(4) -> kl -> 10
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from ..errors import KDError
from ..lang import ir
from ..lang.check import (
    NONE,
    apply_transform,
    constant_value,
    distance_fits,
    drop_idle_temperature,
    idle_temperature,
    tap_kinds,
)
from ..lang.kinds import Kind
from ..lang.printer import print_block, print_expr, print_step, print_tap_option

Path = tuple[int, ...]


def expand(expr: ir.Expr) -> list[ir.Expr]:
    """Every concrete expression a (possibly nested) choice stands for, in source order.

    >>> from autokd_dsl.lang.parse import parse
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
    """The levels of a space and its valid candidates (implements the search's ``ChoiceSpace``).

    Options are always pruned by kinds. With ``term_fits`` (a function of a one-term distiller, e.g. "does it
    compile on this teacher and student", see :func:`compiles_on`), they are also pruned by shapes: when a
    term's taps, transforms and distance are chosen, the term alone is checked once (the weight does not
    change shapes), and an option is offered only if some completion of its term passes. The checks run
    lazily, as the search asks for options, and each distinct term pipeline is checked at most once.
    """

    def __init__(self, block: ir.Block, tap_kind: Callable[[ir.Tap], tuple[Kind, Kind]] = tap_kinds,
                 term_fits: Callable[[ir.Block], bool] | None = None,
                 term_values: Callable[[ir.Block], tuple[float, ...] | None] | None = None):
        self.block, self.tap_kind, self.term_fits, self.term_values = block, tap_kind, term_fits, term_values
        self._keys: dict[Path, str] = {}
        self._fits: dict[tuple, bool] = {}
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
        for t in range(len(self.slots)):
            if not self._feasible(t, 0, ((), ())):
                what = "kind-valid" if term_fits is None else "kind-valid and shape-valid on these networks"
                raise KDError(f"no combination of the alternatives of term {t + 1} of `{block.name}` is {what}",
                              span=block.terms[t].span, hint="check the transforms' kinds with `autokd-dsl ops`"
                              + ("" if term_fits is None else " and the tap shapes with `autokd-dsl layers`"))

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
        if isinstance(value, (ir.Tap, ir.TapGroup)):
            return print_tap_option(value)
        return print_step(value) if isinstance(value, ir.Expr.__args__) else str(value)

    def option_label(self, prefix: Path, option: int) -> str:
        """The text of ``option`` after ``prefix`` as the candidate shows it: :meth:`label`, except that a `kl` or
        `js` whose `t` changes nothing on the kinds ``prefix`` leads to (distributions) reads without it."""
        level = self.levels[len(prefix)]
        value = level.options[option]
        if level.role == "distance" and isinstance(value, ir.Call):
            slots = self.slots[level.term]
            state = self._replay(slots[: slots.index(level)], tuple(prefix))
            kinds = state[0] if state is not None else None
            if kinds and all(idle_temperature(value, k) for k in kinds):
                return print_step(drop_idle_temperature(value))
        return self.label(len(prefix), option)

    def options(self, prefix: Path) -> list[int]:
        level = self.levels[len(prefix)]
        if level.role in ("param", "weight"):
            return list(range(len(level.options)))
        slots = self.slots[level.term]
        position = slots.index(level)
        state = self._replay(slots[:position], prefix)
        legal, seen = [], set()
        for i in range(len(level.options)):
            nxt = self._advance(level, i, state)
            if nxt is None or not self._feasible(level.term, position + 1, nxt):
                continue
            same = self._canonical(level, level.options[i], state[0]) if state is not None else None
            if same is not None:
                if same in seen:  # the same step as an earlier option here (`kl(t = 4)` on distributions)
                    continue
                seen.add(same)
            legal.append(i)
        return legal

    def _canonical(self, slot: Slot, option, kinds):
        """The step ``option`` computes at ``slot`` given the kinds so far, for spotting equivalent options."""
        if slot.role == "distance" and isinstance(option, ir.Call) and all(idle_temperature(option, k)
                                                                           for k in kinds):
            return print_step(drop_idle_temperature(option))
        return print_step(option) if isinstance(option, ir.Expr.__args__) else None

    def key(self, path: Path) -> str:
        """The candidate's content key. Without ``term_values`` its IR key (the same text, the same key). With it,
        a key of the function it computes on the networks at hand: each term's values on fixed random activations
        (``term_values`` of the term alone at weight 1, e.g. :meth:`CompilesOn.values`) times the term's weight,
        to 6 significant digits (below 1e-9: 0), so candidates that compute the same loss (`pool(4)` on a 4×4 map
        and `none`) share a key."""
        key = self._keys.get(path)
        if key is None:
            key = self._keys[path] = function_key(self.candidate(path), self.term_values)
        return key

    # ---- kinds ---------------------------------------------------------------------------------------------
    def _replay(self, slots: list[Slot], prefix: Path):
        state = ((), ())
        for slot in slots:
            state = self._advance(slot, prefix[slot.level] if slot.level is not None else 0, state, check=False)
        return state

    def _advance(self, slot: Slot, index: int, state, check: bool = True):
        """The search state after choosing ``slot.options[index]``: (kinds, chosen indices of the term so far;
        empty without shape checks). None when the choice is invalid."""
        if state is None:
            return None
        kinds, picks = state
        kinds = self._step(slot, slot.options[index], kinds)
        if kinds is None:
            return None
        if self.term_fits is None:
            return kinds, ()
        picks = picks + (index,)
        if check and slot.role == "distance" and not self._term_fits(slot.term, picks):
            return None
        return kinds, picks

    def _term_fits(self, term: int, picks: tuple[int, ...]) -> bool:
        """Shape check of one term pipeline (taps, transforms, distance chosen by ``picks``), memoised."""
        known = self._fits.get((term, picks))
        if known is None:
            slots = self.slots[term]
            chosen = [slot.options[i] for slot, i in zip(slots, picks)] + [slots[-1].options[0]]  # any weight
            params = tuple(dataclasses.replace(p, value=s.options[0])
                           for p, s in zip(self.block.params, self.param_slots))
            one = dataclasses.replace(self.block, kind="distiller", params=params, comments=(),
                                      terms=(self._term(self.block.terms[term], slots, chosen),))
            known = self._fits[(term, picks)] = bool(self.term_fits(one))
        return known

    def _term(self, term: ir.Term, slots: list[Slot], chosen: list) -> ir.Term:
        """One concrete term: optional transforms left out, a `t` that changes nothing (`kl` on distributions)
        dropped, so that a candidate reads as what it computes and checks as a distiller."""
        taps = tuple(t for c, s in zip(chosen, slots) if s.role == "tap" for t in ir.option_taps(c))
        steps = []
        kinds: tuple | None = tuple(self.tap_kind(t) for t in taps)
        for c, s in zip(chosen, slots):
            if s.role == "tap" or (isinstance(c, ir.Name) and c.id == NONE):
                continue
            if s.role == "transform" and kinds is not None:
                after = tuple(apply_transform(c, k) for k in kinds)
                kinds = None if any(k is None for k in after) else after
            elif s.role == "distance" and kinds and isinstance(c, ir.Call) and all(idle_temperature(c, k)
                                                                                   for k in kinds):
                c = drop_idle_temperature(c)
            steps.append(c)
        return dataclasses.replace(term, taps=taps, steps=tuple(steps))

    def _step(self, slot: Slot, option, state):
        """Kinds after a slot: a tuple of (student, teacher) kinds per tap; None when invalid."""
        if state is None:
            return None
        if slot.role == "tap":
            return state + tuple(self.tap_kind(tap) for tap in ir.option_taps(option))
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
            (nxt := self._advance(slot, i, state)) is not None and self._feasible(term, position + 1, nxt)
            for i in range(len(slot.options))
        )

    # ---- candidates --------------------------------------------------------------------------------------
    def candidate(self, path: Path) -> ir.Block:
        """The distiller a complete path chooses (optional transforms left out)."""
        def pick(slot: Slot):
            return slot.options[path[slot.level]] if slot.level is not None else slot.options[0]

        params = tuple(dataclasses.replace(p, value=pick(s)) for p, s in zip(self.block.params, self.param_slots))
        terms = [self._term(term, slots, [pick(s) for s in slots]) for term, slots in zip(self.block.terms, self.slots)]
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


def function_key(block: ir.Block, term_values: Callable[[ir.Block], tuple[float, ...] | None] | None) -> str:
    """The key of the loss a distiller computes (see :meth:`SearchSpace.key`); its IR key without ``term_values``."""
    if term_values is None:
        return block.key
    params = {p.name: p.value for p in block.params}
    parts = []
    for term in block.terms:
        one = dataclasses.replace(block, terms=(dataclasses.replace(term, label=None, steps=term.steps[:-1]
                                                                    + (ir.Num(1),)),), comments=())
        values = term_values(one)
        weight = weight_number(term.weight, params)
        if values is None or weight is None:  # does not compile, or a weight that changes with the epoch
            parts.append(f"{print_block(one)}|{print_expr(term.weight)}")
        else:
            parts.append(",".join(_rounded(weight * v) for v in values))
    return "f" + hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:15]


def _rounded(value: float) -> str:
    """A loss value to 6 significant digits; below 1e-9 it is 0 (float noise of a term that is exactly 0)."""
    return "0" if abs(value) < 1e-9 else f"{value:.6g}"


def weight_number(expr: ir.Expr, params: dict[str, ir.Expr]) -> float | None:
    """The value of a weight with the block's parameters substituted, or None (`warmup(…)`, unknown names).

    >>> from autokd_dsl.lang.parse import parse
    >>> block = parse("distiller d(t = 4):\\n  logits -> softmax(t) -> kl -> 0.5 * t^2\\n").blocks[0]
    >>> weight_number(block.terms[0].weight, {p.name: p.value for p in block.params})
    8.0
    """
    def subst(e: ir.Expr) -> ir.Expr:
        if isinstance(e, ir.Name) and e.id in params:
            return subst(params[e.id])
        if isinstance(e, ir.BinOp):
            return dataclasses.replace(e, left=subst(e.left), right=subst(e.right))
        if isinstance(e, ir.Neg):
            return dataclasses.replace(e, operand=subst(e.operand))
        return e

    value = constant_value(subst(expr))
    return None if value is None else float(value)
