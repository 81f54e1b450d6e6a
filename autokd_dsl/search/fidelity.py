"""Multi-fidelity promotion: many cheap looks, a few careful ones (ASHA, Li et al., MLSys 2020).

Every candidate is first scored at the lowest rung (the fewest proxy epochs). Whenever a result arrives, the
best ``1/eta`` of the candidates finished at a rung (rejected ones count, and are never promoted) that have
not been promoted yet are promoted to the next rung, before any new candidate is started; rungs are searched
from the top down, so the most careful looks come first. Nothing waits for a rung to fill: promotion is
asynchronous, as results come.

The strategy sees one value per candidate: the reward from the highest rung it reached, made comparable with
the rewards of the lowest rung by subtracting that rung's *shift*, the mean of (reward at rung r - reward at
rung 0) over the candidates scored at both. Longer training lowers the cross-entropy and the gap of every
candidate alike, so without the shift a promoted candidate would look better than all of rung 0 just for
having trained longer. Whenever a higher-rung result arrives, every promoted candidate's value is told again
(:meth:`~autokd_dsl.search.base._StrategyBase.retell`) with the current shifts.

With one rung this is :func:`~autokd_dsl.search.driver.run_search`: the same asks, the same tells.

>>> from autokd_dsl.search.testing import TabulatedSpace
>>> from autokd_dsl.search.random_search import RandomSearch
>>> space = TabulatedSpace((3, 3))
>>> jobs = run_promotions(RandomSearch(space, 0), lambda js: [space.reward(j.path) + j.rung for j in js],
...                       budget=9, rungs=(1, 3, 9), eta=3)
>>> [sum(1 for j in jobs if j.rung == r) for r in range(3)]  # one more at rung 1 than 9 / 3: promoted early
[9, 4, 1]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .driver import evaluated
from .protocols import Path, Strategy


@dataclass(frozen=True)
class Job:
    """One evaluation: a candidate at a rung (``rung`` indexes the rungs; its epochs are ``rungs[rung]``)."""

    path: Path
    key: str
    rung: int


@dataclass(frozen=True)
class RungResult:
    path: Path
    key: str
    rung: int
    reward: float | None


class Promotion:
    """ASHA's bookkeeping: results per rung, who was promoted, and the comparable value of each candidate."""

    def __init__(self, rungs: Sequence[int], eta: int = 3) -> None:
        self.rungs = tuple(int(r) for r in rungs)
        if not self.rungs or any(r < 1 for r in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ValueError("rungs must be increasing epoch counts >= 1")
        if eta < 2:
            raise ValueError("eta must be at least 2")
        self.eta = int(eta)
        self.results: list[dict[str, float | None]] = [{} for _ in self.rungs]  # rung -> key -> reward, in order
        self.promoted: list[dict[str, None]] = [{} for _ in self.rungs]  # rung -> keys promoted out of it
        self.paths: dict[str, Path] = {}

    def next_promotion(self) -> Job | None:
        """The next candidate to score at a higher rung, or None (marked promoted when returned)."""
        for rung in range(len(self.rungs) - 2, -1, -1):
            done = self.results[rung]
            quota = len(done) // self.eta
            if quota == 0:
                continue
            order = list(done)
            ranked = sorted((k for k in order if done[k] is not None), key=lambda k: (-done[k], order.index(k)))
            for key in ranked[:quota]:
                if key not in self.promoted[rung]:
                    self.promoted[rung][key] = None
                    return Job(self.paths[key], key, rung + 1)
        return None

    def record(self, job: Job, reward: float | None) -> None:
        self.paths[job.key] = job.path
        self.results[job.rung][job.key] = reward

    def top_rung(self, key: str) -> int:
        return max(r for r, done in enumerate(self.results) if key in done)

    def shift(self, rung: int) -> float:
        """Mean of (reward at ``rung`` − reward at rung 0) over candidates scored at both (0.0 if none)."""
        low, high = self.results[0], self.results[rung]
        gaps = [high[k] - low[k] for k in high if high[k] is not None and low.get(k) is not None]
        return statistics.fmean(gaps) if gaps and rung else 0.0

    def value(self, key: str) -> float | None:
        """The candidate's reward at its highest rung, on the scale of rung 0 (None: rejected there)."""
        rung = self.top_rung(key)
        reward = self.results[rung][key]
        return None if reward is None else reward - self.shift(rung)

    def promoted_keys(self) -> list[str]:
        return [k for k in self.paths if self.top_rung(k) > 0]


def run_promotions(
    strategy: Strategy,
    evaluate: Callable[[list[Job]], list[float | None]],
    budget: int,
    rungs: Sequence[int],
    eta: int = 3,
    batch: int = 1,
    on_result: Callable[[RungResult], None] | None = None,
) -> list[RungResult]:
    """Start ``budget`` candidates at rung 0 and promote by ASHA; return every result in the order told.

    ``evaluate`` gets up to ``batch`` jobs at a time (promotions first, then new candidates) and returns their
    rewards (None = rejected). The same inputs give the same jobs, so a killed search resumes by running again
    with finished (candidate, rung) results served from a memo.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    promo = Promotion(rungs, eta)
    results: list[RungResult] = []
    started, dry = 0, False
    while True:
        jobs: list[Job] = []
        while len(jobs) < batch:
            job = promo.next_promotion()
            if job is None:
                if started >= budget or dry:
                    break
                path = strategy.ask()
                if path is None:
                    dry = True
                    break
                job = Job(tuple(path), strategy.space.key(path), 0)
                started += 1
            jobs.append(job)
        if not jobs:
            break
        for job, reward in zip(jobs, evaluated(evaluate, jobs, "jobs")):
            reward = None if reward is None else float(reward)
            promo.record(job, reward)
            if job.rung == 0:
                strategy.tell(job.path, reward)
            else:
                for key in promo.promoted_keys():
                    strategy.retell(promo.paths[key], promo.value(key))
            result = RungResult(job.path, job.key, job.rung, reward)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results
