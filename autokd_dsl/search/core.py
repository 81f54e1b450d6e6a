"""Search strategies over an abstract choice space (ask/tell), after Auto-KD (ICCV 2023).

A search space is a sequence of choice nodes (levels). A candidate is a *path*: a tuple of option indices,
one per level. Which options are legal at a level may depend on the choices already made, so a space only
answers :meth:`ChoiceSpace.options` for a given prefix. Several paths may describe the same candidate; they
then share a content :meth:`ChoiceSpace.key`, and no strategy ever proposes a key twice.

Strategies speak ask/tell so that the caller owns evaluation (batches across worker processes, an on-disk
store acting as a memo cache, resume by replaying)::

    strategy = make_strategy("mcts", space, seed=0)
    results = run_search(strategy, evaluate, budget=100, batch=4)

Everything is deterministic given ``seed``: all randomness comes from one ``random.Random(seed)`` per
strategy, nothing iterates an unordered container, nothing reads the clock and nothing uses ``hash()``.
Running the same strategy with the same seed against the same evaluator therefore replays exactly, which
is how a killed search resumes (run again from scratch with the store as a memo).

>>> space = TabulatedSpace((2, 3), rewards=[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
>>> results = run_search(make_strategy("random", space, seed=0), lambda ps: [space.reward(p) for p in ps], 6)
>>> sorted(r.key for r in results)
['0-0', '0-1', '0-2', '1-0', '1-1', '1-2']
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import (
    Any,
    Callable,
    Iterable,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

import networkx as nx
import numpy as np

from autokd_dsl.errors import KDError, did_you_mean

Path = tuple[int, ...]
"""A complete candidate (one option index per level) or, in the tree, a prefix of one."""

__all__ = [
    "ChoiceSpace",
    "Evaluation",
    "MCTS",
    "MCTS_DEFAULT_C",
    "MCTS_DEFAULT_FPU",
    "MCTS_DEFAULT_MAX_WEIGHT",
    "MCTS_DEFAULT_ROLLOUT",
    "Path",
    "RandomSearch",
    "RegularizedEvolution",
    "STRATEGIES",
    "SelectionRule",
    "Strategy",
    "TabulatedSpace",
    "UnknownStrategyError",
    "export_dot",
    "export_tree",
    "fake_reward",
    "greedy",
    "make_strategy",
    "run_search",
    "uct",
]


# --------------------------------------------------------------------------------------------------------
# Protocols and records
# --------------------------------------------------------------------------------------------------------


@runtime_checkable
class ChoiceSpace(Protocol):
    """What a strategy needs to know about a search space."""

    def num_levels(self) -> int:
        """Number of choice nodes; every complete path has this length."""
        ...

    def options(self, prefix: tuple[int, ...]) -> list[int]:
        """Legal option indices at level ``len(prefix)``, in a fixed order.

        Only options from which at least one complete valid path exists (the space guarantees this); an
        empty list means the prefix is a dead end.
        """
        ...

    def label(self, level: int, option: int) -> str:
        """Human-readable text of an option, for the tree export."""
        ...

    def key(self, path: tuple[int, ...]) -> str:
        """Content key of a complete candidate; equivalent candidates share a key."""
        ...


@dataclass(frozen=True)
class Evaluation:
    """What the search learned of one candidate. ``reward is None`` means the candidate was rejected."""

    path: tuple[int, ...]
    key: str
    reward: float | None


@runtime_checkable
class Strategy(Protocol):
    """An ask/tell search strategy."""

    space: ChoiceSpace

    def ask(self) -> tuple[int, ...] | None:
        """The next complete path to evaluate, or None when the space is exhausted.

        Never returns a path whose key was already told or is pending (asked, not yet told).
        """
        ...

    def tell(self, path: tuple[int, ...], reward: float | None) -> None:
        """Report the reward of a path (None = rejected)."""
        ...


class UnknownStrategyError(KDError, ValueError):
    """``make_strategy`` was given a name it does not know."""


# --------------------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------------------


class _StrategyBase:
    """Bookkeeping common to every strategy: seen keys, pending paths, exhausted prefixes, reward range.

    A prefix is *exhausted* when every complete path below it has a key that was told or is pending.
    Exhaustion is marked when a leaf is proposed or found to be a duplicate, and propagates upward as soon
    as every legal option of a prefix is exhausted; so ``() in self._exhausted`` means the space is done.
    """

    def __init__(self, space: ChoiceSpace, seed: int) -> None:
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.levels = int(space.num_levels())
        self._options: dict[Path, tuple[int, ...]] = {}
        self._exhausted: set[Path] = set()  # membership only, never iterated
        self._told: dict[str, float | None] = {}  # key -> raw reward (None = rejected)
        self._pending: dict[Path, str] = {}  # path -> key, in ask order
        self._pending_keys: set[str] = set()  # membership only
        self.rmin: float | None = None
        self.rmax: float | None = None

    # -- space access -------------------------------------------------------------------------------------

    def _opts(self, prefix: Path) -> tuple[int, ...]:
        opts = self._options.get(prefix)
        if opts is None:
            opts = tuple(int(o) for o in self.space.options(prefix))
            self._options[prefix] = opts
        return opts

    def _free(self, prefix: Path) -> list[int]:
        """Legal options at ``prefix`` whose subtree still holds an unseen candidate (as far as known)."""
        return [o for o in self._opts(prefix) if prefix + (o,) not in self._exhausted]

    # -- seen / exhausted ------------------------------------------------------------------------------

    def _is_seen(self, key: str) -> bool:
        return key in self._told or key in self._pending_keys

    def _mark_exhausted(self, prefix: Path) -> None:
        self._exhausted.add(prefix)
        while prefix:
            parent = prefix[:-1]
            if parent in self._exhausted or self._free(parent):
                return
            self._exhausted.add(parent)
            prefix = parent

    @property
    def exhausted(self) -> bool:
        """True once every candidate has been proposed (told or pending)."""
        return () in self._exhausted

    # -- sampling ----------------------------------------------------------------------------------------

    def _complete(self, prefix: Path) -> Path | None:
        """One uniform random completion of ``prefix`` over non-exhausted legal options (level by level)."""
        path = prefix
        while len(path) < self.levels:
            free = self._free(path)
            if not free:  # a dead end the space should not have offered, or exhausted meanwhile
                self._mark_exhausted(path)
                return None
            path = path + (self.rng.choice(free),)
        return path

    def _random_unseen(self, prefix: Path = ()) -> Path | None:
        """A random complete path below ``prefix`` whose key is unseen, or None if there is none.

        Every failed try marks one more leaf exhausted, so this terminates.
        """
        while prefix not in self._exhausted:
            path = self._complete(prefix)
            if path is None:
                continue
            if self._is_seen(self.space.key(path)):
                self._mark_exhausted(path)
                continue
            return path
        return None

    # -- ask/tell plumbing ---------------------------------------------------------------------------------

    def _start(self, path: Path) -> Path:
        key = self.space.key(path)
        self._pending[path] = key
        self._pending_keys.add(key)
        self._mark_exhausted(path)
        self._on_start(path)
        return path

    def _on_start(self, path: Path) -> None:  # hook
        pass

    def backup_value(self, reward: float | None) -> float:
        """The value a reward contributes: itself, or (rejected) the minimum seen so far, or 0.0."""
        if reward is not None:
            return float(reward)
        return self.rmin if self.rmin is not None else 0.0

    def tell(self, path: tuple[int, ...], reward: float | None) -> None:
        path = tuple(int(o) for o in path)
        if len(path) != self.levels:
            raise ValueError(f"tell() needs a complete path of {self.levels} choices, got {path}")
        if reward is not None:
            reward = float(reward)
            if not math.isfinite(reward):
                reward = None  # a NaN/inf reward is a rejection
        key = self._pending.pop(path, None)
        if key is None:
            key = self.space.key(path)
            if key in self._told:
                raise ValueError(f"key {key!r} was already told")
            if key in self._pending_keys:
                raise ValueError(f"key {key!r} is pending under another path")
        else:
            self._pending_keys.discard(key)
        value = self.backup_value(reward)  # before the range moves: a rejection counts as the old minimum
        self._told[key] = reward
        if reward is not None:
            self.rmin = reward if self.rmin is None else min(self.rmin, reward)
            self.rmax = reward if self.rmax is None else max(self.rmax, reward)
        if path not in self._exhausted:
            self._mark_exhausted(path)
        self._on_tell(path, key, value)

    def _on_tell(self, path: Path, key: str, value: float) -> None:  # hook
        pass

    @property
    def pending(self) -> list[tuple[int, ...]]:
        """Paths asked and not yet told, in ask order."""
        return list(self._pending)

    @property
    def num_told(self) -> int:
        return len(self._told)


# --------------------------------------------------------------------------------------------------------
# Random search
# --------------------------------------------------------------------------------------------------------


class RandomSearch(_StrategyBase):
    """Uniform random choice at each level (over legal options), never repeating a key."""

    def __init__(self, space: ChoiceSpace, seed: int = 0) -> None:
        super().__init__(space, seed)

    def ask(self) -> tuple[int, ...] | None:
        path = self._random_unseen(())
        return None if path is None else self._start(path)


# --------------------------------------------------------------------------------------------------------
# Regularized (aging) evolution
# --------------------------------------------------------------------------------------------------------


class RegularizedEvolution(_StrategyBase):
    """Aging evolution (Real et al., AAAI 2019) over paths.

    The first ``population`` candidates are random. After that each ask runs a tournament of ``sample``
    members drawn without replacement from the population (the most recent ``population`` told
    candidates), mutates ONE choice of the winner (a different legal option at one level; later levels keep
    their choice when still legal and are re-sampled only where the mutation made them illegal), and the
    oldest member dies when a new one is told. A child whose key was seen is retried (up to
    ``max_retries``), then a random unseen candidate is used instead.
    """

    def __init__(
        self, space: ChoiceSpace, seed: int = 0, population: int = 10, sample: int = 3, max_retries: int = 32
    ) -> None:
        super().__init__(space, seed)
        if population < 1 or sample < 1:
            raise ValueError("population and sample must be >= 1")
        self.population_size = int(population)
        self.sample_size = int(sample)
        self.max_retries = int(max_retries)
        self.population: deque[tuple[Path, float]] = deque()
        self._initial_asked = 0

    def ask(self) -> tuple[int, ...] | None:
        if self.exhausted:
            return None
        if self._initial_asked < self.population_size or not self.population:
            path = self._random_unseen(())
            if path is None:
                return None
            if self._initial_asked < self.population_size:
                self._initial_asked += 1
            return self._start(path)
        for _ in range(self.max_retries):
            child = self._mutate(self._tournament())
            if child is None:
                continue
            if self._is_seen(self.space.key(child)):
                self._mark_exhausted(child)
                continue
            return self._start(child)
        path = self._random_unseen(())
        return None if path is None else self._start(path)

    def _tournament(self) -> Path:
        members = list(self.population)
        picks = self.rng.sample(range(len(members)), min(self.sample_size, len(members)))
        best = max(picks, key=lambda i: members[i][1])  # first of equals wins (picks order is seeded)
        return members[best][0]

    def _mutate(self, parent: Path) -> Path | None:
        mutable = [lv for lv in range(self.levels) if len(self._opts(parent[:lv])) > 1]
        if not mutable:
            return None
        level = self.rng.choice(mutable)
        alternatives = [o for o in self._opts(parent[:level]) if o != parent[level]]
        child = parent[:level] + (self.rng.choice(alternatives),)
        for lv in range(level + 1, self.levels):
            legal = self._opts(child)
            if not legal:
                return None
            child = child + ((parent[lv],) if parent[lv] in legal else (self.rng.choice(legal),))
        return child

    def _on_tell(self, path: Path, key: str, value: float) -> None:
        self.population.append((path, value))
        while len(self.population) > self.population_size:
            self.population.popleft()


# --------------------------------------------------------------------------------------------------------
# Monte Carlo tree search
# --------------------------------------------------------------------------------------------------------

SelectionRule = Callable[[float, int, int, float], float]
"""``rule(q, n, parent_n, c) -> score``: q is the child's mean normalised reward in [0, 1] (pending visits
count at the minimum), n its visit count (told + pending, >= 1), parent_n the parent's, c the exploration
constant. Selection descends to the child with the highest score (first in option order on ties)."""


def uct(q: float, n: int, parent_n: int, c: float) -> float:
    """UCT (Kocsis & Szepesvari 2006): ``q + c * sqrt(ln(parent_n) / n)``."""
    return q + c * math.sqrt(math.log(max(parent_n, 1)) / n)


def greedy(q: float, n: int, parent_n: int, c: float) -> float:
    """Pure exploitation (ignores ``c``); for ablations."""
    return q


MCTS_DEFAULT_C = 0.7
"""UCT exploration constant used by the product (on min-max normalised values; see the tuning note below)."""

MCTS_DEFAULT_FPU: float | None = 0.2
"""First-play urgency reduction used by the product (see :class:`MCTS`)."""

MCTS_DEFAULT_MAX_WEIGHT = 1.0
"""How much a node's value is its subtree's best reward rather than its mean (see :class:`MCTS`).

Tuning note for the MCTS defaults (c, fpu, max_weight). Two families of synthetic tables, never the ones that
bench/search_efficiency.py reports (table seed 0), shapes 2x5x5x6x7, 2x6x6x5x4x4, 3x6x6x5x4 and 4x6x6x5x4, 20
search seeds each; evaluations to the top 1% divided by random search's, geometric mean over tables (worst
table in brackets):

* structured (:meth:`TabulatedSpace.synthetic`): mean values, c = 0.15, fpu 0, MAST rollouts on seeds 101-102:
  0.29 (0.48); max values, fpu 0.2, c = 0.5 / 0.7 / 1.0 on seeds 101-103: 0.27 (0.52) / 0.32 (0.52) / 0.30 (0.62).
* gated (:meth:`TabulatedSpace.gated`: each first-level option scales and shifts its own structured subtable,
  so a branch with a lower mean can hold the best candidates, as `logits` and `stage3` do in the Auto-KD
  space): mean values, c = 0.15, MAST rollouts on seeds 201-203: 7.2 (43), i.e. far worse than random: one bad
  first sample shuts a branch for good. Max values, fpu 0.2, on seeds 201-206, c = 0.7 / 1.0 / 1.4: 0.41 (0.78)
  / 0.43 (0.80) / 0.42 (0.79); c = 0.5 on seeds 201-204: 0.55 (2.6).

c = 0.7 with max values has the best worst case over both families.
"""

MCTS_DEFAULT_ROLLOUT = "mast"
"""Rollout policy used by the product: ``"mast"`` or ``"random"`` (see :class:`MCTS`).

MAST rollouts (temperature 0.1, 20% uniform picks) needed ~0.30x as many evaluations as random search to reach
the top 1% (geometric mean over the tuning tables: shapes 3x6x6x5x4x4, 6^5, 10x10x8x8, 4^7, table seeds
101-106, 20 search seeds each) against ~0.48x for uniform rollouts; with strong interactions (sd 1.0 instead
of 0.3, seeds 107-108) 0.29x against 0.35x. Temperatures 0.05-0.2 and 0-20% uniform picks all gave 0.28-0.35x.
"""

MAST_DEFAULT_TAU = 0.1
MAST_DEFAULT_EPSILON = 0.2


class MCTS(_StrategyBase):
    """Monte Carlo tree search over the levels of a choice space, as in Auto-KD.

    The tree holds one level per choice node, in a ``networkx.DiGraph`` whose node ids are prefix tuples
    (attributes ``visits``, ``value_sum``, ``best``, ``pending``, ``level``, ``label``) with an edge from each
    prefix to ``prefix + (option,)``.

    * **Selection** descends from the root by ``selection(q, n, parent_n, c)`` (default :func:`uct`). A
      node's value ``q`` is ``(1 - max_weight) * mean + max_weight * best`` over the rewards backed up through
      it, min-max normalised over the rewards told so far, so ``c`` is scale-free. The search looks for the
      single best candidate, so by default (``max_weight=1``) a branch is worth its best candidate, not its
      average: a branch whose typical candidate is poor but which holds the best ones is not abandoned after
      one unlucky sample. ``max_weight=0`` is classic mean-value UCT. Subtrees whose candidates were all
      proposed are skipped.
    * **Expansion** adds ONE untried child at a time, chosen uniformly among the untried legal options.
      With ``fpu=None`` a node expands all its children before descending (classic UCT). With a float
      ``fpu`` (first-play urgency), the untried children are scored as one child with a single visit at
      the parent's normalised value minus ``fpu``; the node expands only when that beats every tried child,
      so good branches are deepened before all their siblings are tried.
    * **Rollout** completes the remaining levels. ``rollout="random"``: uniformly over the legal options.
      ``rollout="mast"`` (Move-Average Sampling Technique, Finnsson & Bjornsson 2008): every choice
      (level, option) keeps the mean of the rewards of all told candidates that made it, and a rollout picks
      among the legal options by a softmax of those means (min-max normalised, temperature ``mast_tau``;
      a choice never told counts as 0.5), or uniformly with probability ``mast_epsilon``. A choice's
      statistics are shared across the whole tree, so what is learned under one branch guides rollouts under
      every other.
    * **Backup** adds the reward (a rejection: the minimum so far, or 0.0) to every tree node on the path and
      raises their ``best``.

    Pending paths (asked, not told) count as visits at the current minimum reward (virtual loss) in the mean
    and in the visit count, so several asks in a row spread out over the tree. When a rollout ends on a key
    already told, its known reward is backed up along that path and the ask retries (``max_retries`` times,
    then a random unseen path); when nothing unseen is left, ``ask`` returns None.
    """

    def __init__(
        self,
        space: ChoiceSpace,
        seed: int = 0,
        c: float = MCTS_DEFAULT_C,
        selection: SelectionRule = uct,
        fpu: float | None = MCTS_DEFAULT_FPU,
        max_retries: int = 16,
        rollout: str = MCTS_DEFAULT_ROLLOUT,
        mast_tau: float = MAST_DEFAULT_TAU,
        mast_epsilon: float = MAST_DEFAULT_EPSILON,
        max_weight: float = MCTS_DEFAULT_MAX_WEIGHT,
    ) -> None:
        super().__init__(space, seed)
        self.c = float(c)
        self.selection = selection
        self.fpu = None if fpu is None else float(fpu)
        self.max_retries = int(max_retries)
        if rollout not in ("mast", "random"):
            raise ValueError(f"rollout must be 'mast' or 'random', not {rollout!r}")
        if mast_tau <= 0 or not 0 <= mast_epsilon <= 1:
            raise ValueError("mast_tau must be > 0 and mast_epsilon in [0, 1]")
        if not 0 <= max_weight <= 1:
            raise ValueError("max_weight must be in [0, 1]")
        self.max_weight = float(max_weight)
        self.rollout = rollout
        self.mast_tau = float(mast_tau)
        self.mast_epsilon = float(mast_epsilon)
        self._moves: dict[tuple[int, int], list[float]] = {}  # (level, option) -> [value sum, count]
        self.graph = nx.DiGraph()
        self.graph.add_node((), visits=0, value_sum=0.0, best=-math.inf, pending=0, level=0, label="root")
        self._credited: dict[Path, list[Path]] = {}  # pending path -> tree nodes given a virtual visit

    # -- statistics ----------------------------------------------------------------------------------

    def _floor(self) -> float:
        return self.rmin if self.rmin is not None else 0.0

    def _q(self, attrs: Mapping[str, Any]) -> tuple[float, int]:
        """(normalised value: mean with virtual losses mixed with the best, visits incl. pending) of a node."""
        n = attrs["visits"] + attrs["pending"]
        if n == 0:
            return 0.0, 0
        mean = (attrs["value_sum"] + attrs["pending"] * self._floor()) / n
        if self.rmin is None or self.rmax is None or self.rmax <= self.rmin:
            return 0.5, n
        value = mean
        if self.max_weight and attrs["visits"]:
            value = (1.0 - self.max_weight) * mean + self.max_weight * attrs["best"]
        return (value - self.rmin) / (self.rmax - self.rmin), n

    # -- tree operations -----------------------------------------------------------------------------

    def _add_child(self, parent: Path, option: int) -> Path:
        child = parent + (option,)
        self.graph.add_node(
            child,
            visits=0,
            value_sum=0.0,
            best=-math.inf,
            pending=0,
            level=len(child),
            label=str(self.space.label(len(parent), option)),
        )
        self.graph.add_edge(parent, child)
        return child

    def _in_tree(self, path: Path) -> list[Path]:
        nodes = []
        for depth in range(len(path) + 1):
            prefix = path[:depth]
            if prefix not in self.graph:
                break
            nodes.append(prefix)
        return nodes

    def _backup(self, path: Path, value: float) -> None:
        nodes = self.graph.nodes
        for prefix in self._in_tree(path):
            attrs = nodes[prefix]
            attrs["visits"] += 1
            attrs["value_sum"] += value
            attrs["best"] = max(attrs["best"], value)

    def _select_expand(self) -> tuple[Path, bool]:
        """Descend by the selection rule; return (node to roll out from, whether it was just added)."""
        nodes = self.graph.nodes
        node: Path = ()
        while len(node) < self.levels:
            free = self._free(node)
            if not free:
                return node, False
            parent_q, parent_n = self._q(nodes[node])
            best_option, best_score = None, -math.inf
            untried = []
            for option in free:
                child = node + (option,)
                if child not in self.graph:
                    untried.append(option)
                    continue
                q, n = self._q(nodes[child])
                score = math.inf if n == 0 else self.selection(q, n, parent_n, self.c)
                if score > best_score:
                    best_option, best_score = option, score
            if untried:
                if self.fpu is None or best_option is None:
                    expand = True
                else:
                    expand = self.selection(parent_q - self.fpu, 1, parent_n, self.c) >= best_score
                if expand:
                    return self._add_child(node, self.rng.choice(untried)), True
            assert best_option is not None
            node = node + (best_option,)
        return node, False

    # -- ask/tell ------------------------------------------------------------------------------------

    def ask(self) -> tuple[int, ...] | None:
        for _ in range(self.max_retries):
            if self.exhausted:
                return None
            node, created = self._select_expand()
            path = self._rollout(node)
            if path is None:
                self._drop_if_unvisited(node, created)
                continue
            key = self.space.key(path)
            if key in self._told:
                self._mark_exhausted(path)
                self._backup(path, self.backup_value(self._told[key]))
                continue
            if key in self._pending_keys:
                self._mark_exhausted(path)
                self._drop_if_unvisited(node, created)
                continue
            return self._start(path)
        path = self._random_unseen(())
        return None if path is None else self._start(path)

    def _rollout(self, prefix: Path) -> Path | None:
        """Complete ``prefix`` by the rollout policy over non-exhausted legal options (None: a dead end)."""
        if self.rollout == "random":
            return self._complete(prefix)
        path = prefix
        while len(path) < self.levels:
            free = self._free(path)
            if not free:
                self._mark_exhausted(path)
                return None
            path = path + (self._mast_pick(len(path), free),)
        return path

    def _mast_pick(self, level: int, free: list[int]) -> int:
        uniform = self.rmin is None or self.rmax is None or self.rmax <= self.rmin
        if self.rng.random() < self.mast_epsilon or uniform:
            return self.rng.choice(free)
        span = self.rmax - self.rmin
        means = []
        for option in free:
            stats = self._moves.get((level, option))
            means.append(0.5 if stats is None else (stats[0] / stats[1] - self.rmin) / span)
        top = max(means)
        weights = [math.exp((m - top) / self.mast_tau) for m in means]
        draw = self.rng.random() * sum(weights)
        for option, weight in zip(free, weights):
            draw -= weight
            if draw <= 0:
                return option
        return free[-1]

    def _drop_if_unvisited(self, node: Path, created: bool) -> None:
        if created:
            attrs = self.graph.nodes[node]
            if attrs["visits"] == 0 and attrs["pending"] == 0:
                self.graph.remove_node(node)

    def _on_start(self, path: Path) -> None:
        credited = self._in_tree(path)
        nodes = self.graph.nodes
        for prefix in credited:
            nodes[prefix]["pending"] += 1
        self._credited[path] = credited

    def _on_tell(self, path: Path, key: str, value: float) -> None:
        nodes = self.graph.nodes
        for prefix in self._credited.pop(path, []):
            nodes[prefix]["pending"] -= 1
        self._backup(path, value)
        for level, option in enumerate(path):
            stats = self._moves.setdefault((level, option), [0.0, 0])
            stats[0] += value
            stats[1] += 1

    def tree_graph(self) -> nx.DiGraph:
        """The search tree (live; do not mutate). Node ids are prefix tuples."""
        return self.graph


# --------------------------------------------------------------------------------------------------------
# Tree export
# --------------------------------------------------------------------------------------------------------


def _node_name(node: Any) -> str:
    if isinstance(node, tuple):
        return "root" if not node else "n" + "_".join(str(o) for o in node)
    return str(node)


def _plain(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _export_graph(graph: nx.DiGraph) -> nx.DiGraph:
    out = nx.DiGraph()
    for node, attrs in graph.nodes(data=True):
        plain = {name: _plain(v) for name, v in attrs.items()
                 if not (isinstance(v, float) and not math.isfinite(v))}  # `best` before any visit
        plain["prefix"] = _plain(node)
        visits = attrs.get("visits", 0)
        if visits:
            plain["mean"] = float(attrs.get("value_sum", 0.0)) / visits
        out.add_node(_node_name(node), **plain)
    for u, v in graph.edges():
        out.add_edge(_node_name(u), _node_name(v))
    return out


def export_tree(graph: nx.DiGraph, path: str | FilePath) -> None:
    """Write a search tree as GraphML (tuple ids and attributes become strings, e.g. ``n0_3``, ``"0,3"``)."""
    nx.write_graphml(_export_graph(graph), str(path))


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def export_dot(graph: nx.DiGraph, path: str | FilePath) -> None:
    """Write a search tree as Graphviz DOT text (no pygraphviz needed)."""
    plain = _export_graph(graph)
    lines = ["digraph search_tree {", "  node [shape=box, fontname=Helvetica];"]
    for name, attrs in plain.nodes(data=True):
        text = str(attrs.get("label", name))
        if "visits" in attrs:
            text += f"\nn={attrs['visits']}"
            if "mean" in attrs:
                text += f" mean={attrs['mean']:.4g}"
        lines.append(f"  {_dot_quote(name)} [label={_dot_quote(text)}];")
    for u, v in plain.edges():
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)};")
    lines.append("}")
    FilePath(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------------
# Driver and factory
# --------------------------------------------------------------------------------------------------------


def run_search(
    strategy: Strategy,
    evaluate: Callable[[list[tuple[int, ...]]], list[float | None]],
    budget: int,
    batch: int = 1,
    on_result: Callable[[Evaluation], None] | None = None,
) -> list[Evaluation]:
    """Ask ``batch`` paths at a time, evaluate them together, tell in order.

    Stops after ``budget`` evaluations or when the strategy is exhausted. ``on_result`` sees every
    :class:`Evaluation` right after it is told (e.g. to append it to a store).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    results: list[Evaluation] = []
    while len(results) < budget:
        want = min(batch, budget - len(results))
        paths: list[tuple[int, ...]] = []
        for _ in range(want):
            path = strategy.ask()
            if path is None:
                break
            paths.append(path)
        if not paths:
            break
        rewards = list(evaluate(list(paths)))
        if len(rewards) != len(paths):
            raise ValueError(f"evaluate returned {len(rewards)} rewards for {len(paths)} paths")
        for path, reward in zip(paths, rewards):
            strategy.tell(path, reward)
            result = Evaluation(tuple(path), strategy.space.key(path), None if reward is None else float(reward))
            results.append(result)
            if on_result is not None:
                on_result(result)
        if len(paths) < want:
            break  # the strategy ran dry mid-batch
    return results


STRATEGIES: dict[str, type] = {"mcts": MCTS, "random": RandomSearch, "evolution": RegularizedEvolution}


def make_strategy(name: str, space: ChoiceSpace, seed: int = 0, **kw: Any) -> Strategy:
    """Build a strategy by name: ``"mcts"``, ``"random"`` or ``"evolution"`` (keyword args pass through)."""
    cls = STRATEGIES.get(name.strip().lower())
    if cls is None:
        raise UnknownStrategyError(
            f"unknown search strategy `{name}`",
            hint=did_you_mean(name, STRATEGIES) or f"choose one of: {', '.join(STRATEGIES)}",
        )
    return cls(space, seed, **kw)


# --------------------------------------------------------------------------------------------------------
# A tabulated space (tests and benchmarks)
# --------------------------------------------------------------------------------------------------------


def fake_reward(key: str) -> float:
    """A deterministic pseudo-reward in [0, 1) derived from sha256 of ``key`` (never Python's ``hash()``)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class TabulatedSpace:
    """A product space with per-level option counts, pairwise exclusions and a reward table.

    ``forbid`` holds pairs ``((level_a, option_a), (level_b, option_b))``: a path may not choose both
    (e.g. ``((1, 0), (2, 2))``: option 0 at level 1 forbids option 2 at level 2). ``options`` prunes an
    option also when no complete path would remain legal below it. ``key_fn`` may map several paths to
    one key (equivalent candidates); the default key is ``"-".join(path)``.

    >>> s = TabulatedSpace((2, 3), forbid=[((0, 0), (1, 2))])
    >>> s.options(()), s.options((0,)), s.options((1,)), s.key((1, 2)), s.size()
    ([0, 1], [0, 1], [0, 1, 2], '1-2', 5)
    """

    def __init__(
        self,
        option_counts: Sequence[int],
        rewards: Any = None,
        *,
        forbid: Iterable[tuple[tuple[int, int], tuple[int, int]]] = (),
        labels: Sequence[Sequence[str]] | None = None,
        key_fn: Callable[[tuple[int, ...]], str] | None = None,
    ) -> None:
        self.option_counts = tuple(int(n) for n in option_counts)
        if not self.option_counts or min(self.option_counts) < 1:
            raise ValueError("every level needs at least one option")
        self.rewards = None if rewards is None else np.asarray(rewards, dtype=float)
        if self.rewards is not None and self.rewards.shape != self.option_counts:
            raise ValueError(f"reward table shape {self.rewards.shape} != option counts {self.option_counts}")
        self._forbidden: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for a, b in forbid:
            (la, oa), (lb, ob) = sorted([tuple(a), tuple(b)])
            if la == lb:
                raise ValueError("a forbidden pair must span two levels")
            self._forbidden.setdefault((lb, ob), []).append((la, oa))
        self.labels = labels
        self.key_fn = key_fn
        self._completable: dict[Path, bool] = {}

    def num_levels(self) -> int:
        return len(self.option_counts)

    def _consistent(self, prefix: Path, option: int) -> bool:
        level = len(prefix)
        return all(prefix[la] != oa for la, oa in self._forbidden.get((level, option), ()))

    def _can_complete(self, prefix: Path) -> bool:
        known = self._completable.get(prefix)
        if known is None:
            known = len(prefix) == len(self.option_counts) or any(
                self._consistent(prefix, o) and self._can_complete(prefix + (o,))
                for o in range(self.option_counts[len(prefix)])
            )
            self._completable[prefix] = known
        return known

    def options(self, prefix: tuple[int, ...]) -> list[int]:
        prefix = tuple(prefix)
        if len(prefix) >= len(self.option_counts):
            return []
        return [
            o
            for o in range(self.option_counts[len(prefix)])
            if self._consistent(prefix, o) and self._can_complete(prefix + (o,))
        ]

    def label(self, level: int, option: int) -> str:
        if self.labels is not None:
            return str(self.labels[level][option])
        return f"L{level}={option}"

    def key(self, path: tuple[int, ...]) -> str:
        if self.key_fn is not None:
            return self.key_fn(tuple(path))
        return "-".join(str(o) for o in path)

    def reward(self, path: tuple[int, ...]) -> float:
        if self.rewards is None:
            return fake_reward(self.key(path))
        return float(self.rewards[tuple(path)])

    def paths(self) -> list[tuple[int, ...]]:
        """Every legal complete path, in lexicographic order."""
        out: list[Path] = []

        def walk(prefix: Path) -> None:
            if len(prefix) == len(self.option_counts):
                out.append(prefix)
                return
            for o in self.options(prefix):
                walk(prefix + (o,))

        walk(())
        return out

    def size(self) -> int:
        return len(self.paths())

    def top_threshold(self, fraction: float = 0.01) -> float:
        """The reward of the ``ceil(fraction * size)``-th best legal candidate (by distinct key)."""
        best: dict[str, float] = {}
        for p in self.paths():
            best[self.key(p)] = self.reward(p)
        values = sorted(best.values(), reverse=True)
        return values[max(1, math.ceil(fraction * len(values))) - 1]

    @classmethod
    def synthetic(
        cls,
        option_counts: Sequence[int],
        seed: int,
        *,
        interaction: float = 0.3,
        noise: float = 0.3,
        level_scales: Sequence[float] | None = None,
        forbid: Iterable[tuple[tuple[int, int], tuple[int, int]]] = (),
        key_fn: Callable[[tuple[int, ...]], str] | None = None,
    ) -> "TabulatedSpace":
        """A structured reward table: additive per-level effects + pairwise interactions + noise.

        Level ``l``'s option effects are N(0, scale_l^2) (``level_scales``, default 1 for every level),
        every pair of levels gets an interaction table of N(0, interaction^2) entries, and every cell gets
        independent N(0, noise^2) noise. Drawn from ``numpy.random.default_rng(seed)``.
        """
        counts = tuple(int(n) for n in option_counts)
        rng = np.random.default_rng(seed)
        scales = [1.0] * len(counts) if level_scales is None else [float(s) for s in level_scales]
        table = np.zeros(counts)
        for lv, n in enumerate(counts):
            shape = [1] * len(counts)
            shape[lv] = n
            table = table + rng.normal(0.0, scales[lv], n).reshape(shape)
        for la in range(len(counts)):
            for lb in range(la + 1, len(counts)):
                shape = [1] * len(counts)
                shape[la], shape[lb] = counts[la], counts[lb]
                table = table + rng.normal(0.0, interaction, (counts[la], counts[lb])).reshape(shape)
        table = table + rng.normal(0.0, noise, counts)
        return cls(counts, table, forbid=forbid, key_fn=key_fn)

    @classmethod
    def gated(
        cls,
        option_counts: Sequence[int],
        seed: int,
        *,
        scales: Sequence[float] = (0.2, 1.0),
        offset_sd: float = 0.5,
        interaction: float = 0.3,
        noise: float = 0.3,
        forbid: Iterable[tuple[tuple[int, int], tuple[int, int]]] = (),
    ) -> "TabulatedSpace":
        """A table whose first level gates the rest: under each first-level option, its own structured table
        (:meth:`synthetic` over the remaining levels) times a scale drawn from ``scales``, plus an offset drawn
        from N(0, offset_sd^2).

        A branch can then have a higher mean but a narrower spread than another that holds the best
        candidates, as the logits and last-stage branches of a distiller space do.

        >>> t = TabulatedSpace.gated((2, 3, 4), seed=0)
        >>> t.rewards.shape, t.size()
        ((2, 3, 4), 24)
        """
        counts = tuple(int(n) for n in option_counts)
        if len(counts) < 2:
            raise ValueError("a gated table needs at least two levels")
        rng = np.random.default_rng(seed)
        blocks = []
        for _ in range(counts[0]):
            sub = cls.synthetic(counts[1:], int(rng.integers(1 << 30)), interaction=interaction, noise=noise)
            scale = float(rng.choice(np.asarray(scales, dtype=float)))
            blocks.append(rng.normal(0.0, offset_sd) + scale * sub.rewards)
        return cls(counts, np.stack(blocks), forbid=forbid)
