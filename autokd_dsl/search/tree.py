"""The MCTS search tree: one typed node per prefix; networkx only to export it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx

from .protocols import Path


@dataclass(eq=False)
class Node:
    """One prefix of the tree: the statistics of the rewards backed up through it.

    ``visits`` counts told candidates, ``pending`` asked ones not yet told, ``value_sum`` and ``best`` the sum and
    maximum of the values backed up (``best`` is -inf before any visit). ``children`` maps an option index to the
    child node, in the order the children were added.
    """

    prefix: Path
    label: str
    visits: int = 0
    value_sum: float = 0.0
    value_sq: float = 0.0  # sum of squared values (the spread of the subtree's rewards)
    best: float = -math.inf
    pending: int = 0
    children: dict[int, Node] = field(default_factory=dict)
    # what the search itself uses: the rewards backed up (a rejection as -inf, i.e. at the floor), their best, and
    # their sums once raised to the search's floor (see MCTS.norm_quantile)
    values: list[float] = field(default_factory=list, repr=False)
    top: float = -math.inf
    clip_sum: float = 0.0
    clip_sq: float = 0.0

    @property
    def level(self) -> int:
        return len(self.prefix)

    def attributes(self) -> dict:
        return {"visits": self.visits, "value_sum": self.value_sum, "best": self.best, "pending": self.pending,
                "level": self.level, "label": self.label}


def tree_graph(nodes: dict[Path, Node]) -> nx.DiGraph:
    """A snapshot of the tree as a ``networkx.DiGraph``: node ids are prefix tuples, with the attributes of
    :meth:`Node.attributes`, and an edge from each prefix to ``prefix + (option,)``."""
    graph = nx.DiGraph()
    for prefix, node in nodes.items():
        graph.add_node(prefix, **node.attributes())
    for prefix, node in nodes.items():
        for child in node.children.values():
            graph.add_edge(prefix, child.prefix)
    return graph
