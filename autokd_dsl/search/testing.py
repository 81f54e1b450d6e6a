"""A tabulated choice space with a reward table: the fixture the strategy tests and benchmarks run on.

Not product code: a real search runs over :class:`autokd_dsl.search.space.SearchSpace`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .protocols import Path


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
    ) -> TabulatedSpace:
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
    ) -> TabulatedSpace:
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


class ListedSpace:
    """A space given by the list of its candidates: (path, key, reward) rows, e.g. a table of measured rewards.

    ``options(prefix)`` offers the options that some listed path takes after ``prefix``; a reward of None is a
    rejected candidate.

    >>> s = ListedSpace([((0, 1), "a", 1.0), ((0, 2), "b", None), ((1, 1), "c", 3.0)])
    >>> s.options(()), s.options((0,)), s.reward((1, 1)), s.size(), s.top_threshold(0.5)
    ([0, 1], [1, 2], 3.0, 3, 3.0)
    """

    def __init__(self, rows: Iterable[tuple[tuple[int, ...], str, float | None]]) -> None:
        self._rows: dict[Path, tuple[str, float | None]] = {}
        for path, key, reward in rows:
            self._rows[tuple(int(o) for o in path)] = (str(key), None if reward is None else float(reward))
        if not self._rows:
            raise ValueError("a listed space needs at least one candidate")
        lengths = {len(p) for p in self._rows}
        if len(lengths) != 1:
            raise ValueError(f"every path needs the same number of levels, got {sorted(lengths)}")
        self.levels = lengths.pop()
        self._next: dict[Path, list[int]] = {}
        for path in sorted(self._rows):
            for depth in range(self.levels):
                nxt = self._next.setdefault(path[:depth], [])
                if path[depth] not in nxt:
                    nxt.append(path[depth])

    def num_levels(self) -> int:
        return self.levels

    def options(self, prefix: tuple[int, ...]) -> list[int]:
        return sorted(self._next.get(tuple(prefix), []))

    def label(self, level: int, option: int) -> str:
        return f"L{level}={option}"

    def key(self, path: tuple[int, ...]) -> str:
        return self._rows[tuple(path)][0]

    def reward(self, path: tuple[int, ...]) -> float | None:
        return self._rows[tuple(path)][1]

    def paths(self) -> list[tuple[int, ...]]:
        return sorted(self._rows)

    def size(self) -> int:
        return len(self._rows)

    def top_threshold(self, fraction: float = 0.01) -> float:
        """The reward of the ``ceil(fraction * n)``-th best trained candidate (by distinct key)."""
        best: dict[str, float] = {}
        for key, reward in self._rows.values():
            if reward is not None:
                best[key] = max(reward, best.get(key, -math.inf))
        values = sorted(best.values(), reverse=True)
        return values[max(1, math.ceil(fraction * len(values))) - 1]
