"""Where candidate evaluations run. An executor maps a function over candidates (canonical `.kd` texts).

``InProcess`` runs them one after another; ``ProcessPool`` runs K at a time in worker processes, each holding
its own copy of the proxy context (built once per worker). A distributed engine implements the same ``map``.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Callable, Protocol, Sequence

import torch

from .evaluate import Outcome, ProxyContext, ProxySettings, evaluate


class Executor(Protocol):
    def map(self, texts: Sequence[str], settings: ProxySettings | None = None) -> list[Outcome]:
        """Evaluate each text under ``settings`` (None: the context's)."""
        ...

    def close(self) -> None: ...


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


def make_executor(ctx: ProxyContext, workers: int) -> Executor:
    return InProcess(ctx) if workers <= 1 else ProcessPool(ctx, workers)


Evaluate = Callable[[Sequence[str]], list[Outcome]]
