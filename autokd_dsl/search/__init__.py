"""Distiller search: strategies over an abstract choice space (the strategies: :mod:`autokd_dsl.search.core`).

The package is also callable: ``autokd_dsl.search(space_file=..., teacher=..., student=...)`` runs
:func:`autokd_dsl.api.search`.
"""

import sys
import types

from autokd_dsl.search.driver import make_strategy, run_search
from autokd_dsl.search.evolution import RegularizedEvolution
from autokd_dsl.search.export import export_dot, export_tree
from autokd_dsl.search.mcts import MCTS, uct
from autokd_dsl.search.protocols import ChoiceSpace, Evaluation, Strategy
from autokd_dsl.search.random_search import RandomSearch
from autokd_dsl.search.testing import TabulatedSpace

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


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from autokd_dsl.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
