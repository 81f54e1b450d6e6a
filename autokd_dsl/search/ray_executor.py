"""Candidates as Ray tasks, on this machine or on a cluster (``autokd-dsl search --executor ray``).

* The proxy context (the teacher's cached activations, the training and validation tensors, the teacher itself)
  goes into Ray's object store once, as numpy arrays. Every task receives the same reference; a worker process
  maps the arrays (zero copy on its node) the first time it runs a candidate and keeps the context for the
  next ones, so nothing is pickled per candidate except the candidate's `.kd` text.
* Each candidate is one task asking ``cpus_per_candidate`` CPUs and ``gpus_per_candidate`` GPUs (fractional:
  0.25 packs four candidates on one device). ``workers`` bounds how many are in flight.
* A worker that dies mid-candidate (its process killed, its node gone) has the task retried once on another
  worker; a candidate whose evaluation kills two workers comes back as a rejected :class:`Outcome` naming the
  failure. An exception raised by the evaluation itself is re-raised in the driver, as in-process.

Only the driver touches the search store: results come back to it, and it writes them in arrival order.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import KDError
from .evaluate import Outcome, ProxyContext
from .executor import _evaluate_text

RAY_EXTRA = 'pip install -e ".[ray]"'
"""How to install the optional Ray dependency (the ``ray`` extra of this package)."""

WORKER_FAILURES = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError")
"""Ray errors that mean the process running a candidate died (after its one retry): the candidate is rejected."""


def import_ray():
    """Ray, or a KDError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise KDError("--executor ray needs Ray, which is not installed",
                      hint=f"install the `ray` extra: {RAY_EXTRA}  (or: pip install 'autokd-dsl[ray]')") from None
    return ray


def ray_init(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect to Ray: ``None`` starts a local instance, ``auto`` finds the cluster this machine belongs to,
    ``HOST:PORT`` (or ``ray://HOST:PORT``) joins that one. Returns True when this call started the connection
    (and so should shut it down), False when the process was already connected."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        kwargs.update(address="local", num_cpus=num_cpus, num_gpus=num_gpus)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = "a local Ray instance" if address is None else f"the Ray cluster at `{address}`"
        hint = ("start one with `ray start --head` (see README: Searching on a Ray cluster), or leave --ray-address "
                "out to start a local instance")
        if address not in (None, "auto") and not os.environ.get("RAY_AUTH_MODE"):
            hint = ("if the cluster uses token authentication (Ray's default), copy the head's ~/.ray/auth_token here "
                    "and set RAY_AUTH_MODE=token; otherwise " + hint)
        raise KDError(f"could not connect to {where}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                      hint=hint) from None
    return True


# ---- the proxy context in the object store ----------------------------------------------------------------

def pack_context(ctx: ProxyContext) -> dict:
    """The context as plain data for the object store: every tensor (alone or in a dict) becomes a numpy
    array, modules move to CPU, the dataset object (which the tensors already hold) stays behind."""
    import copy

    from torch import nn

    arrays: dict[str, np.ndarray] = {}
    fields: dict[str, Any] = {}
    for name, value in vars(ctx).items():
        if name in ("bundle", "device"):
            continue
        if isinstance(value, torch.Tensor):
            arrays[name] = value.detach().cpu().numpy()
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            for key, tensor in value.items():
                arrays[f"{name}/{key}"] = tensor.detach().cpu().numpy()
        elif isinstance(value, nn.Module):
            fields[name] = copy.deepcopy(value).cpu()
        else:
            fields[name] = value
    return {"arrays": arrays, "fields": fields}


def unpack_context(packed: dict, device: str = "cpu") -> ProxyContext:
    """A working :class:`ProxyContext` from :func:`pack_context`'s data; the teacher does not run again."""
    from torch import nn

    ctx = ProxyContext.__new__(ProxyContext)
    ctx.device = torch.device(device)
    ctx.bundle = None  # evaluation reads the tensors below, never the dataset object
    with warnings.catch_warnings():  # arrays mapped from the object store are read-only; nothing writes them
        warnings.simplefilter("ignore", UserWarning)
        for name, array in packed["arrays"].items():
            tensor = torch.from_numpy(array).to(ctx.device)
            if "/" in name:
                outer, key = name.split("/", 1)
                if not isinstance(getattr(ctx, outer, None), dict):
                    setattr(ctx, outer, {})
                getattr(ctx, outer)[key] = tensor
            else:
                setattr(ctx, name, tensor)
    for name, value in packed["fields"].items():
        setattr(ctx, name, value.to(ctx.device) if isinstance(value, nn.Module) else value)
    ctx.teacher_runs = 0
    return ctx


# ---- what runs in a worker ----------------------------------------------------------------------------------

_CACHE: dict[str, Any] = {}  # per worker process: object-store id -> unpacked context


def _context(box: list) -> Any:
    import ray

    ref = box[0]
    key = ref.hex()
    if key not in _CACHE:
        value = ray.get(ref)
        if isinstance(value, dict) and value.get("__packed_context__"):
            value = unpack_context(value["context"], "cuda" if ray.get_gpu_ids() else "cpu")
        _CACHE.clear()  # one search per worker process at a time
        _CACHE[key] = value
    return _CACHE[key]


def _candidate(box: list, fn: Callable[..., Outcome], text: str, threads: int, settings: Any = None) -> Outcome:
    torch.set_num_threads(threads)
    context = _context(box)
    return fn(context, text) if settings is None else fn(context, text, settings)


# ---- the driver side -----------------------------------------------------------------------------------------


class RayExecutor:
    """Evaluate candidates as Ray tasks; ``submit`` / ``next_done`` keep several in flight, ``map`` waits for all.

    ``context`` is a :class:`ProxyContext` (packed for the object store) or any picklable value handed as is to
    ``fn(context, text) -> Outcome`` (the default runs the proxy evaluation; benchmarks pass fakes).
    """

    def __init__(self, context: Any, workers: int = 1, *, address: str | None = None,
                 cpus_per_candidate: float = 1.0, gpus_per_candidate: float = 0.0,
                 fn: Callable[[Any, str], Outcome] = _evaluate_text, num_cpus: int | None = None):
        if workers < 1:
            raise KDError("--workers must be at least 1")
        if cpus_per_candidate < 0 or gpus_per_candidate < 0 or (cpus_per_candidate == 0 and gpus_per_candidate == 0):
            raise KDError("--cpus-per-candidate and --gpus-per-candidate must be >= 0, and one of them > 0")
        if gpus_per_candidate > 1 and gpus_per_candidate != int(gpus_per_candidate):
            raise KDError(f"--gpus-per-candidate {gpus_per_candidate}: above 1 it must be a whole number of GPUs")
        self.ray = import_ray()
        self.owns = ray_init(address, num_cpus=num_cpus)
        self.workers = int(workers)
        self.fn = fn
        payload = {"__packed_context__": True, "context": pack_context(context)} \
            if isinstance(context, ProxyContext) else context
        self.context_ref = self.ray.put(payload)  # once, shared by every task
        self.task = self.ray.remote(
            num_cpus=cpus_per_candidate, num_gpus=gpus_per_candidate, max_retries=1, retry_exceptions=False,
            max_calls=0)(_candidate)  # max_calls=0: workers (and their mapped context) stay, GPU ones too
        self.threads = max(1, int(cpus_per_candidate))
        self._flight: dict[Any, Hashable] = {}  # object ref -> the caller's tag, in submission order
        self._done: deque[tuple[Hashable, Outcome]] = deque()
        self.retried = 0

    # -- streaming --------------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    def submit(self, tag: Hashable, text: str, settings: Any = None) -> None:
        """Start one candidate (under ``settings``, None: the context's); its outcome comes back from
        :meth:`next_done` with ``tag``."""
        ref = self.task.remote([self.context_ref], self.fn, text, self.threads, settings)
        self._flight[ref] = tag

    def next_done(self, timeout: float | None = None) -> tuple[Hashable, Outcome] | None:
        """The first candidate to finish (blocking), as ``(tag, outcome)``; None when nothing is in flight
        (or nothing finished within ``timeout`` seconds)."""
        if self._done:
            return self._done.popleft()
        if not self._flight:
            return None
        ready, _ = self.ray.wait(list(self._flight), num_returns=1, timeout=timeout)
        if not ready:
            return None
        ref = ready[0]
        tag = self._flight.pop(ref)
        return tag, self._outcome(ref)

    def _outcome(self, ref) -> Outcome:
        start = time.perf_counter()
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:  # the evaluation raised: as in-process, so does the search
            raise err.as_instanceof_cause() from None
        except self.ray.exceptions.RayError as err:
            name = type(err).__name__
            if name not in WORKER_FAILURES:
                raise KDError(f"the Ray cluster failed while a candidate ran ({name}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})",
                              hint="finished candidates are in the store; rerun the command with --resume") from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            return Outcome(None, "rejected", f"its evaluation killed two workers ({name}: {first})",
                           seconds=time.perf_counter() - start)

    # -- all at once ------------------------------------------------------------------------------------------

    def map(self, texts: Sequence[str], settings: Any = None) -> list[Outcome]:
        """Every text's outcome (under ``settings``), in the order given (at most ``workers`` in flight)."""
        outcomes: list[Outcome | None] = [None] * len(texts)
        todo = deque(enumerate(texts))
        while todo or self._flight:
            while todo and len(self._flight) < self.workers:
                i, text = todo.popleft()
                self.submit(("map", i), text, settings)
            tag, outcome = self.next_done()
            outcomes[tag[1]] = outcome
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        for ref in list(self._flight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or its worker gone
                pass
        self._flight.clear()
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()


# ---- evaluators for tests and benchmarks ---------------------------------------------------------------------


def sleeping_evaluator(context: dict, text: str) -> Outcome:
    """A fake evaluation: sleep ``context["seconds"]`` (no CPU), reward from the text's hash (deterministic)."""
    import hashlib

    time.sleep(float(context.get("seconds", 0.0)))
    digest = hashlib.sha256(text.encode()).digest()
    return Outcome(int.from_bytes(digest[:8], "big") / 2.0**64, "ok", "", seconds=float(context.get("seconds", 0)))


def array_bytes(context: Any) -> int:
    """Bytes of numpy data a packed context holds (to report what the object store shares)."""
    packed = context["context"] if isinstance(context, dict) and "context" in context else context
    return int(sum(a.nbytes for a in packed.get("arrays", {}).values() if isinstance(a, np.ndarray)))
