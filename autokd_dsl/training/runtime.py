"""Where and how a run executes: the device, mixed precision, memory format, data workers and data parallelism.

None of this is part of a run's identity: a checkpoint written on a GPU with bf16 resumes on a CPU in fp32.

>>> rt = Runtime(device="cpu", amp="bf16")
>>> p = Precision(rt.amp, torch.device("cpu"))
>>> with p.autocast():
...     y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
>>> y.dtype
torch.bfloat16
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import pydantic
import torch
from torch import nn

from ..errors import KDError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Runtime(pydantic.BaseModel):
    """``device``: ``auto`` (the local GPU when there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``; ``amp``: autocast precision (``fp16`` adds a gradient scaler); ``channels_last``: NHWC weights and
    inputs (``None``: on for CUDA, where convolutions gain from it, off elsewhere); ``workers``: data-loading
    processes (``None``: 0 for data held in memory, up to 4 per rank for streamed data)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool | None = None
    workers: int | None = None
    tensorboard: bool = True

    @pydantic.field_validator("workers")
    @classmethod
    def _workers(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise KDError(f"workers {value} must be 0 or more", hint="0 loads data in the training process")
        return value


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` → a device this machine has, else a :class:`KDError`.

    Under ``torchrun`` a bare ``cuda`` (or ``auto`` on a GPU machine) means ``cuda:LOCAL_RANK``.
    """
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise KDError(f"unknown device `{name}`", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KDError(f"device `{name}` is not available here: this machine has no CUDA GPU",
                          hint="use --device cpu")
        index = local_rank if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise KDError(f"device cuda:{index} does not exist: this machine has {torch.cuda.device_count()} GPU(s)",
                          hint=f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise KDError(f"device `{name}` is not available here (no Apple GPU)", hint="use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise KDError(f"device `{name}` is not supported", hint="use auto, cpu, cuda, cuda:N or mps")
    return dev


def use_channels_last(rt: Runtime, device: torch.device) -> bool:
    return device.type == "cuda" if rt.channels_last is None else bool(rt.channels_last)


def to_runtime(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move ``model`` to ``device``, in NHWC memory format when ``channels_last``."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def batch_to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class Precision:
    """Autocast for the forward passes, and for fp16 a gradient scaler around backward and the step."""

    def __init__(self, amp: str, device: torch.device) -> None:
        if amp != "off" and amp not in AMP_DTYPES:
            raise KDError(f"unknown precision `{amp}`", hint="use --amp bf16, fp16 or off")
        self.amp, self.device = amp, device
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and ``opt.step()``, scaled under fp16 (steps with inf/NaN gradients are skipped)."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


# --------------------------------------------------------------------------------------- data parallel


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (``world == 1``: a plain single-process run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env=None) -> Dist:
        """The ranks ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process otherwise."""
        env = os.environ if env is None else env
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def init(self, device: torch.device) -> None:
        """Join the process group (gloo on CPU, NCCL on CUDA) once; nothing for a single process."""
        import torch.distributed as td

        if self.world > 1 and not td.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over the ranks."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=device)
        td.all_reduce(t)
        return t.tolist()

    def agree(self, ok: bool, device: torch.device) -> bool:
        """True on every rank only when ``ok`` holds on every rank."""
        return self.sum([0.0 if ok else 1.0], device)[0] == 0.0

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` inside DistributedDataParallel (gradients all-reduced), or itself for one process."""
        if self.world == 1 or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def default_workers(rt: Runtime, streamed: bool, dist: Dist) -> int:
    if rt.workers is not None:
        return rt.workers
    if not streamed:
        return 0
    return max(1, min(4, (os.cpu_count() or 1) // dist.world))
