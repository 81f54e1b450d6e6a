"""Where candidate evaluations run. An executor maps a function over candidates (canonical `.kd` texts).

``InProcess`` runs them one after another; ``ProcessPool`` runs K at a time in worker processes, each holding
its own copy of the proxy context (built once per worker). ``RayExecutor`` (:mod:`.ray_executor`, the optional
``ray`` extra) runs each candidate as a Ray task on this machine or a cluster; besides ``map`` it streams
(``submit`` / ``next_done``), and :func:`run_in_flight` keeps the strategy asking while K candidates run.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import torch

from ..errors import KDError
from .evaluate import Outcome, ProxyContext, ProxySettings, evaluate


class Executor(Protocol):
    def map(self, texts: Sequence[str], settings: ProxySettings | None = None) -> list[Outcome]:
        """Evaluate each text under ``settings`` (None: the context's)."""
        ...

    def close(self) -> None: ...


class StreamingExecutor(Executor, Protocol):
    """An executor whose results come back one at a time, in the order they finish."""

    workers: int

    def submit(self, tag: Hashable, text: str, settings: ProxySettings | None = None) -> None: ...

    def next_done(self) -> tuple[Hashable, Outcome] | None: ...


def _evaluate_text(ctx: ProxyContext, text: str, settings: ProxySettings | None = None) -> Outcome:
    from ..lang.check import check_text

    return evaluate(check_text(text).blocks[0], ctx, settings)


class InProcess:
    def __init__(self, ctx: ProxyContext):
        self.ctx = ctx

    def map(self, texts: Sequence[str], settings: ProxySettings | None = None) -> list[Outcome]:
        return [_evaluate_text(self.ctx, t, settings) for t in texts]

    def close(self) -> None:
        pass


_WORKER: dict = {}


def _init_worker(ctx: ProxyContext, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["ctx"] = ctx


def _work(job: tuple[str, ProxySettings | None]) -> Outcome:
    return _evaluate_text(_WORKER["ctx"], *job)


class ProcessPool:
    def __init__(self, ctx: ProxyContext, workers: int, cores: int | None = None):
        cores = cores or max(1, torch.get_num_threads())
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(ctx, max(1, cores // workers)))

    def map(self, texts: Sequence[str], settings: ProxySettings | None = None) -> list[Outcome]:
        return list(self.pool.map(_work, [(t, settings) for t in texts]))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def check_executor(executor: str, address: str | None, device: str, cpus: float, gpus: float) -> None:
    """The --executor options make sense together, and Ray is installed when asked for (before any training)."""
    if executor not in ("local", "ray"):
        raise KDError(f"unknown executor `{executor}`", hint="choose local or ray")
    if executor == "local":
        if address is not None or gpus or cpus != 1.0:
            raise KDError("--ray-address, --cpus-per-candidate and --gpus-per-candidate need --executor ray")
        return
    from .ray_executor import import_ray

    import_ray()
    if cpus < 0 or gpus < 0 or (cpus == 0 and gpus == 0):
        raise KDError("--cpus-per-candidate and --gpus-per-candidate must be >= 0, and one of them > 0")
    if gpus > 1 and gpus != int(gpus):
        raise KDError(f"--gpus-per-candidate {gpus}: above 1 it must be a whole number of GPUs")
    if device.startswith("cuda") and not gpus:
        raise KDError("--device cuda with --executor ray: each candidate needs a share of a GPU",
                      hint="pass --gpus-per-candidate (1, or 0.25 to pack four candidates on one device)")


def make_executor(ctx: ProxyContext, workers: int, kind: str = "local", **ray_options) -> Executor:
    """``local``: in-process (one worker) or a process pool; ``ray``: Ray tasks (``ray_options``: address,
    cpus_per_candidate, gpus_per_candidate; see :class:`.ray_executor.RayExecutor`)."""
    if kind == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(ctx, workers, **ray_options)
    return InProcess(ctx) if workers <= 1 else ProcessPool(ctx, workers)


def run_in_flight(strategy, known: Callable, submit: Callable, wait: Callable, budget: int, in_flight: int,
                  on_result: Callable | None = None) -> list:
    """Drive an ask/tell strategy with up to ``in_flight`` evaluations running at once.

    ``known(path)`` returns ``(True, reward)`` when the result is already known (the store), else
    ``(False, None)``; ``submit(path)`` starts an evaluation; ``wait()`` blocks for the next one to finish and
    returns ``(path, reward)``. Results are told in the order they arrive; meanwhile the strategy keeps
    asking, and MCTS counts the running candidates as visits at the minimum reward (virtual loss), so the
    asks spread over the tree. Stops after ``budget`` results or when the strategy runs dry. With
    ``in_flight=1`` the asks and tells are those of ``run_search(..., batch=1)``.

    >>> from autokd_dsl.search import TabulatedSpace, make_strategy
    >>> space, running = TabulatedSpace((2, 3)), []
    >>> def wait():
    ...     path = running.pop(0)
    ...     return path, space.reward(path)
    >>> results = run_in_flight(make_strategy("mcts", space, seed=0), lambda path: (False, None), running.append,
    ...                         wait, budget=6, in_flight=2)
    >>> sorted(r.key for r in results)
    ['0-0', '0-1', '0-2', '1-0', '1-1', '1-2']
    """
    from .driver import record as tell

    if in_flight < 1:
        raise ValueError("in_flight must be >= 1")
    results: list = []
    flying = 0
    dry = False

    def record(path, reward) -> None:
        tell(strategy, results, path, reward, on_result)

    while len(results) < budget:
        while not dry and flying < in_flight and len(results) + flying < budget:
            path = strategy.ask()
            if path is None:
                dry = True
                break
            hit, reward = known(path)
            if hit:
                record(path, reward)
            else:
                submit(path)
                flying += 1
        if flying == 0:
            break
        path, reward = wait()
        flying -= 1
        record(path, reward)
    return results


Evaluate = Callable[[Sequence[str]], list[Outcome]]
