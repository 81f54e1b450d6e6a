"""Random search: the baseline every other strategy is measured against."""

from __future__ import annotations

from .base import _StrategyBase
from .protocols import ChoiceSpace


class RandomSearch(_StrategyBase):
    """Uniform random choice at each level (over legal options), never repeating a key."""

    def __init__(self, space: ChoiceSpace, seed: int = 0) -> None:
        super().__init__(space, seed)

    def ask(self) -> tuple[int, ...] | None:
        path = self._random_unseen(())
        return None if path is None else self._start(path)
