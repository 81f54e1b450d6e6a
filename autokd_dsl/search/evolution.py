"""Regularized (aging) evolution over paths."""

from __future__ import annotations

from collections import deque

from .base import _StrategyBase
from .protocols import ChoiceSpace, Path


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

    def _on_retell(self, path: Path, key: str, old: float, new: float) -> None:
        self.population = deque((p, new if p == path else v) for p, v in self.population)

    def _on_tell(self, path: Path, key: str, value: float) -> None:
        self.population.append((path, value))
        while len(self.population) > self.population_size:
            self.population.popleft()
