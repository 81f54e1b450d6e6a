"""Bookkeeping shared by every strategy (seen keys, pending paths, exhausted prefixes, reward range).

Everything is deterministic given ``seed``: all randomness comes from one ``random.Random(seed)`` per
strategy, nothing iterates an unordered container, nothing reads the clock and nothing uses ``hash()``.
"""

from __future__ import annotations

import math
import random

from .protocols import ChoiceSpace, Path


class _StrategyBase:
    """Bookkeeping common to every strategy: seen keys, pending paths, exhausted prefixes, reward range.

    A prefix is *exhausted* when every complete path below it has a key that was told or is pending.
    Exhaustion is marked when a leaf is proposed or found to be a duplicate, and propagates upward as soon
    as every legal option of a prefix is exhausted; so ``() in self._exhausted`` means the space is done.
    """

    def __init__(self, space: ChoiceSpace, seed: int) -> None:
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.levels = int(space.num_levels())
        self._options: dict[Path, tuple[int, ...]] = {}
        self._exhausted: set[Path] = set()  # membership only, never iterated
        self._told: dict[str, float | None] = {}  # key -> raw reward (None = rejected)
        self._pending: dict[Path, str] = {}  # path -> key, in ask order
        self._pending_keys: set[str] = set()  # membership only
        self._values: dict[Path, float] = {}  # told path -> the value its reward contributed
        self.rmin: float | None = None
        self.rmax: float | None = None

    # -- space access -------------------------------------------------------------------------------------

    def _opts(self, prefix: Path) -> tuple[int, ...]:
        opts = self._options.get(prefix)
        if opts is None:
            opts = tuple(int(o) for o in self.space.options(prefix))
            self._options[prefix] = opts
        return opts

    def _free(self, prefix: Path) -> list[int]:
        """Legal options at ``prefix`` whose subtree still holds an unseen candidate (as far as known)."""
        return [o for o in self._opts(prefix) if prefix + (o,) not in self._exhausted]

    # -- seen / exhausted ------------------------------------------------------------------------------

    def _is_seen(self, key: str) -> bool:
        return key in self._told or key in self._pending_keys

    def _mark_exhausted(self, prefix: Path) -> None:
        self._exhausted.add(prefix)
        while prefix:
            parent = prefix[:-1]
            if parent in self._exhausted or self._free(parent):
                return
            self._exhausted.add(parent)
            prefix = parent

    @property
    def exhausted(self) -> bool:
        """True once every candidate has been proposed (told or pending)."""
        return () in self._exhausted

    # -- sampling ----------------------------------------------------------------------------------------

    def _complete(self, prefix: Path) -> Path | None:
        """One uniform random completion of ``prefix`` over non-exhausted legal options (level by level)."""
        path = prefix
        while len(path) < self.levels:
            free = self._free(path)
            if not free:  # a dead end the space should not have offered, or exhausted meanwhile
                self._mark_exhausted(path)
                return None
            path = path + (self.rng.choice(free),)
        return path

    def _random_unseen(self, prefix: Path = ()) -> Path | None:
        """A random complete path below ``prefix`` whose key is unseen, or None if there is none.

        Every failed try marks one more leaf exhausted, so this terminates.
        """
        while prefix not in self._exhausted:
            path = self._complete(prefix)
            if path is None:
                continue
            if self._is_seen(self.space.key(path)):
                self._mark_exhausted(path)
                continue
            return path
        return None

    # -- ask/tell plumbing ---------------------------------------------------------------------------------

    def _start(self, path: Path) -> Path:
        key = self.space.key(path)
        self._pending[path] = key
        self._pending_keys.add(key)
        self._mark_exhausted(path)
        self._on_start(path)
        return path

    def _on_start(self, path: Path) -> None:  # hook
        pass

    def backup_value(self, reward: float | None) -> float:
        """The value a reward contributes: itself, or (rejected) the minimum seen so far, or 0.0."""
        if reward is not None:
            return float(reward)
        return self.rmin if self.rmin is not None else 0.0

    def tell(self, path: tuple[int, ...], reward: float | None) -> None:
        path = tuple(int(o) for o in path)
        if len(path) != self.levels:
            raise ValueError(f"tell() needs a complete path of {self.levels} choices, got {path}")
        if reward is not None:
            reward = float(reward)
            if not math.isfinite(reward):
                reward = None  # a NaN/inf reward is a rejection
        key = self._pending.pop(path, None)
        if key is None:
            key = self.space.key(path)
            if key in self._told:
                raise ValueError(f"key {key!r} was already told")
            if key in self._pending_keys:
                raise ValueError(f"key {key!r} is pending under another path")
        else:
            self._pending_keys.discard(key)
        value = self.backup_value(reward)  # before the range moves: a rejection counts as the old minimum
        self._told[key] = reward
        if reward is not None:
            self.rmin = reward if self.rmin is None else min(self.rmin, reward)
            self.rmax = reward if self.rmax is None else max(self.rmax, reward)
        if path not in self._exhausted:
            self._mark_exhausted(path)
        self._values[path] = value
        self._on_tell(path, key, value)

    def _on_tell(self, path: Path, key: str, value: float) -> None:  # hook
        pass

    def retell(self, path: tuple[int, ...], reward: float | None) -> None:
        """Replace the reward of a path told before (e.g. by its reward after longer training, see
        :mod:`autokd_dsl.search.fidelity`): the strategy's statistics then hold the new value instead of the old."""
        path = tuple(int(o) for o in path)
        key = self.space.key(path)
        if key not in self._told:
            raise ValueError(f"key {key!r} was not told")
        if reward is not None:
            reward = float(reward)
            if not math.isfinite(reward):
                reward = None
        old = self._values.get(path, self.backup_value(self._told[key]))
        new = self.backup_value(reward)
        self._told[key] = reward
        if reward is not None:
            self.rmin = reward if self.rmin is None else min(self.rmin, reward)
            self.rmax = reward if self.rmax is None else max(self.rmax, reward)
        self._values[path] = new
        self._on_retell(path, key, old, new)

    def _on_retell(self, path: Path, key: str, old: float, new: float) -> None:  # hook
        pass

    @property
    def pending(self) -> list[tuple[int, ...]]:
        """Paths asked and not yet told, in ask order."""
        return list(self._pending)

    @property
    def num_told(self) -> int:
        return len(self._told)
