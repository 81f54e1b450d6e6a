"""What a search is made of: a choice space, a strategy that speaks ask/tell, and the record of one evaluation.

A search space is a sequence of choice nodes (levels). A candidate is a *path*: a tuple of option indices,
one per level. Which options are legal at a level may depend on the choices already made, so a space only
answers :meth:`ChoiceSpace.options` for a given prefix. Several paths may describe the same candidate; they
then share a content :meth:`ChoiceSpace.key`, and no strategy ever proposes a key twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from autokd_dsl.errors import KDError

Path = tuple[int, ...]
"""A complete candidate (one option index per level) or, in the tree, a prefix of one."""

__all__ = ["ChoiceSpace", "Evaluation", "Path", "Strategy", "UnknownStrategyError"]


@runtime_checkable
class ChoiceSpace(Protocol):
    """What a strategy needs to know about a search space."""

    def num_levels(self) -> int:
        """Number of choice nodes; every complete path has this length."""
        ...

    def options(self, prefix: tuple[int, ...]) -> list[int]:
        """Legal option indices at level ``len(prefix)``, in a fixed order.

        Only options from which at least one complete valid path exists (the space guarantees this); an
        empty list means the prefix is a dead end.
        """
        ...

    def label(self, level: int, option: int) -> str:
        """Human-readable text of an option, for the tree export. A space whose option text depends on the
        choices before it may also offer ``option_label(prefix, option)``, which the tree then uses."""
        ...

    def key(self, path: tuple[int, ...]) -> str:
        """Content key of a complete candidate; equivalent candidates share a key."""
        ...


@dataclass(frozen=True)
class Evaluation:
    """What the search learned of one candidate. ``reward is None`` means the candidate was rejected."""

    path: tuple[int, ...]
    key: str
    reward: float | None


@runtime_checkable
class Strategy(Protocol):
    """An ask/tell search strategy."""

    space: ChoiceSpace

    def ask(self) -> tuple[int, ...] | None:
        """The next complete path to evaluate, or None when the space is exhausted.

        Never returns a path whose key was already told or is pending (asked, not yet told).
        """
        ...

    def tell(self, path: tuple[int, ...], reward: float | None) -> None:
        """Report the reward of a path (None = rejected)."""
        ...


class UnknownStrategyError(KDError, ValueError):
    """``make_strategy`` was given a name it does not know."""
