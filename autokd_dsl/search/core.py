"""Search strategies over an abstract choice space (ask/tell), after Auto-KD (ICCV 2023): one import for all.

The pieces live in :mod:`.protocols` (ChoiceSpace, Strategy, Evaluation), :mod:`.base` (shared bookkeeping),
:mod:`.mcts` with :mod:`.tree`, :mod:`.random_search`, :mod:`.evolution`, :mod:`.export` (GraphML, DOT),
:mod:`.driver` (run_search, make_strategy) and :mod:`.testing` (TabulatedSpace, a fixture for tests and
benchmarks).

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

from .driver import STRATEGIES, make_strategy, run_search
from .evolution import RegularizedEvolution
from .export import export_dot, export_tree
from .mcts import (
    MCTS,
    MCTS_DEFAULT_C,
    MCTS_DEFAULT_FPU,
    MCTS_DEFAULT_MAX_WEIGHT,
    MCTS_DEFAULT_ROLLOUT,
    SelectionRule,
    greedy,
    uct,
)
from .protocols import ChoiceSpace, Evaluation, Path, Strategy, UnknownStrategyError
from .random_search import RandomSearch
from .testing import TabulatedSpace, fake_reward

__all__ = [
    "MCTS",
    "MCTS_DEFAULT_C",
    "MCTS_DEFAULT_FPU",
    "MCTS_DEFAULT_MAX_WEIGHT",
    "MCTS_DEFAULT_ROLLOUT",
    "STRATEGIES",
    "ChoiceSpace",
    "Evaluation",
    "Path",
    "RandomSearch",
    "RegularizedEvolution",
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
