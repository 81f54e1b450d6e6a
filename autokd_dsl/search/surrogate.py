"""A Bayesian additive model of the reward over a choice space, sampled for Thompson rollouts.

A candidate's features are its choices: one indicator per (level, option) and, for the levels after the first
``context`` choices, one per (those first choices, level, option). The model is Bayesian linear regression on those
indicators (prior N(0, scale^2/precision) per weight, with its own precision for the weights per first choice,
around the mean of the told values), fitted jointly, so a choice that was often made together with a good one is not
credited with its effect, as a per-choice average (MAST) would credit it. A Thompson draw samples the weights from
the posterior once; a rollout then takes, level by level, the legal option whose sampled weights are largest.
Choices told rarely or never keep a wide posterior and are drawn high now and then: that is the exploration, with no
temperature or epsilon to set.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from .protocols import Path

Feature = tuple
"""(level, option) or (first choices, level, option)."""


class AdditiveModel:
    """Bayesian linear regression of a value on the choices of a path (see the module docstring).

    ``add(path, value)`` records a told path; ``revalue(values)`` replaces every recorded value at once (the
    statistics of :class:`~autokd_dsl.search.mcts.MCTS` re-rank rewards as they come); ``draw(rng)`` returns a
    sampled weight per feature (a function of the feature, drawn from the prior for features never seen).
    """

    def __init__(self, context: int = 1, precision: float = 1.0, scale: float = 1.0,
                 context_precision: float | None = None) -> None:
        if precision <= 0 or scale <= 0 or (context_precision is not None and context_precision <= 0):
            raise ValueError("precision and scale must be > 0")
        self.context = int(context)
        self.precision = float(precision)
        self.context_precision = self.precision if context_precision is None else float(context_precision)
        self.scale = float(scale)
        self._index: dict[Feature, int] = {}
        self._rows: list[list[int]] = []
        self._values: list[float] = []
        self._gram = np.zeros((0, 0))  # sum over rows of x x^T

    def features(self, prefix: Path, level: int, option: int) -> list[Feature]:
        """The features switched on by choosing ``option`` at ``level`` after ``prefix``."""
        out: list[Feature] = [(level, option)]
        if self.context and level >= self.context:
            out.append((tuple(prefix[: self.context]), level, option))
        return out

    def _columns(self, path: Path) -> list[int]:
        cols = []
        for level, option in enumerate(path):
            for feature in self.features(path[:level], level, option):
                col = self._index.get(feature)
                if col is None:
                    col = self._index[feature] = len(self._index)
                cols.append(col)
        return cols

    def add(self, path: Path, value: float) -> None:
        cols = self._columns(path)
        d = len(self._index)
        if self._gram.shape[0] < d:
            grown = np.zeros((d, d))
            k = self._gram.shape[0]
            grown[:k, :k] = self._gram
            self._gram = grown
        idx = np.asarray(cols)
        self._gram[np.ix_(idx, idx)] += 1.0
        self._rows.append(cols)
        self._values.append(float(value))

    def revalue(self, values: Sequence[float]) -> None:
        """Replace the recorded values, in the order the paths were added."""
        if len(values) != len(self._values):
            raise ValueError(f"{len(values)} values for {len(self._values)} paths")
        self._values = [float(v) for v in values]

    def __len__(self) -> int:
        return len(self._values)

    def draw(self, rng: random.Random) -> Callable[[Feature], float]:
        """A sample of the weights from the posterior, as a function of the feature."""
        d = len(self._index)
        gauss = np.random.default_rng(rng.getrandbits(63))

        def prior_sd(feature: Feature) -> float:
            return self.scale / np.sqrt(self.context_precision if len(feature) == 3 else self.precision)

        if not self._values or d == 0:
            return lambda feature: float(gauss.normal(0.0, prior_sd(feature)))
        y = np.asarray(self._values)
        mean_y = float(y.mean())
        b = np.zeros(d)
        for cols, v in zip(self._rows, y - mean_y):
            b[cols] += v
        precisions = np.array([self.context_precision if len(f) == 3 else self.precision for f in self._index])
        a = self._gram[:d, :d] + np.diag(precisions)
        chol = np.linalg.cholesky(a)
        mu = np.linalg.solve(a, b)
        # w = mu + scale * L^-T z has covariance scale^2 A^-1
        z = gauss.standard_normal(d)
        w = mu + self.scale * np.linalg.solve(chol.T, z)
        index = self._index
        unseen: dict[Feature, float] = {}

        def weight(feature: Feature) -> float:
            col = index.get(feature)
            if col is not None and col < d:
                return float(w[col])
            if feature not in unseen:
                unseen[feature] = float(gauss.normal(0.0, prior_sd(feature)))
            return unseen[feature]

        return weight
