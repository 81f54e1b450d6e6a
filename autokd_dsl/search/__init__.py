"""Distiller search: strategies over an abstract choice space (see :mod:`autokd_dsl.search.core`)."""

from autokd_dsl.search.core import (
    MCTS,
    ChoiceSpace,
    Evaluation,
    RandomSearch,
    RegularizedEvolution,
    Strategy,
    TabulatedSpace,
    export_dot,
    export_tree,
    make_strategy,
    run_search,
    uct,
)

__all__ = [
    "MCTS",
    "ChoiceSpace",
    "Evaluation",
    "RandomSearch",
    "RegularizedEvolution",
    "Strategy",
    "TabulatedSpace",
    "export_dot",
    "export_tree",
    "make_strategy",
    "run_search",
    "uct",
]
