"""Writing a search tree out: GraphML (networkx) and Graphviz DOT text."""

from __future__ import annotations

import math
from pathlib import Path as FilePath
from typing import Any

import networkx as nx
import numpy as np


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
