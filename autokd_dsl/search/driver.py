"""Running a strategy against an evaluator, and building one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autokd_dsl.errors import did_you_mean

from .evolution import RegularizedEvolution
from .mcts import MCTS
from .protocols import ChoiceSpace, Evaluation, Strategy, UnknownStrategyError
from .random_search import RandomSearch


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
        for path, reward in zip(paths, evaluated(evaluate, paths, "paths")):
            record(strategy, results, path, reward, on_result)
        if len(paths) < want:
            break  # the strategy ran dry mid-batch
    return results


def evaluated(evaluate: Callable[[list], Any], items: list, what: str) -> list:
    """``evaluate(items)`` as a list, checked to hold one reward per item."""
    rewards = list(evaluate(list(items)))
    if len(rewards) != len(items):
        raise ValueError(f"evaluate returned {len(rewards)} rewards for {len(items)} {what}")
    return rewards


def record(strategy: Strategy, results: list[Evaluation], path, reward: float | None,
           on_result: Callable[[Evaluation], None] | None = None) -> None:
    """Tell the strategy a result, append it to ``results`` as an :class:`Evaluation`, and show it to
    ``on_result``."""
    strategy.tell(path, reward)
    result = Evaluation(tuple(path), strategy.space.key(path), None if reward is None else float(reward))
    results.append(result)
    if on_result is not None:
        on_result(result)


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
