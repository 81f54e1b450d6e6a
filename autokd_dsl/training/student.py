"""Distillation training: SGD on the student and the distiller's connectors, resumable and reproducible.

The distiller's ``total`` is the whole training loss (library distillers carry their own cross-entropy term).
Every epoch appends one line to ``out_dir/metrics.jsonl`` and atomically rewrites ``out_dir/checkpoint.pt``
(student, connectors, optimiser, scheduler, every random state, the epoch and the metrics so far), so a run
killed at any moment resumes exactly where its last finished epoch left it: the same batches, the same
augmentations and, on the same machine and thread count, bit-identical weights. The test split is evaluated
once, at the end, into the last line of the log and ``out_dir/result.json``.

Example (see ``autokd-dsl train``)::

    result = train(load_distiller("library/kd.kd"), teacher, student, bundle, TrainConfig(epochs=20), "runs/kd")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..data import DataBundle, Split, batches
from ..data.core import balanced_subset
from ..errors import KDError
from ..lang import ir
from ..models import create_model
from ..progress import EpochBar, format_terms
from ..standalone.attach import TapCapture
from .optim import (
    SGDSettings,
    accuracy,
    make_optimizer,
    rng_state,
    seed_everything,
    set_rng_state,
)
from .teacher import read_checkpoint, save_atomic
from .teacher_cache import TeacherCache, split_fingerprint, teacher_hash

FORMAT = "autokd-dsl/train/1"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"


class TrainConfig(SGDSettings):
    """Student training settings: RepDistiller's SGD recipe (see :class:`~autokd_dsl.training.optim.SGDSettings`) and
    ``offline_teacher`` (read the teacher's outputs from the cache instead of running it; needs augmentation off).
    """

    offline_teacher: bool = False


# ------------------------------------------------------------------------------------------- helpers


def subset_train(bundle: DataBundle, size: int, seed: int) -> DataBundle:
    """``bundle`` with a class-balanced ``size``-image training subset drawn with ``seed`` (val/test unchanged).

    The split itself stays fixed, so a cached teacher never sees a student's validation images whatever the seed.
    """
    n = len(bundle.train)
    if size > n:
        raise KDError(f"train subset {size} is larger than the training split ({n} images)",
                      hint=f"use at most {n}")
    if size < bundle.num_classes:
        raise KDError(f"train subset {size} is smaller than the number of classes ({bundle.num_classes})",
                      hint=f"use at least {bundle.num_classes}")
    sel = balanced_subset(bundle.train.labels.numpy(), size, np.random.default_rng([seed, 0x5EED]))
    t = torch.from_numpy(sel)
    origin = None if bundle.train.origin is None else bundle.train.origin[t]
    train = Split(bundle.train.images[t], bundle.train.labels[t], torch.arange(size), origin)
    return dataclasses.replace(bundle, train=train)


def make_student(name: str, num_classes: int, in_chans: int, seed: int) -> nn.Module:
    """The student ``name``, initialised from ``seed`` (so two runs with one seed start alike)."""
    torch.manual_seed(seed)
    return create_model(name, num_classes, in_chans)


def _teachers(teacher) -> list[nn.Module]:
    return list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]


def _each(teacher, fn):
    """``fn`` of the teacher, or the list of ``fn`` of each teacher when there are several."""
    values = [fn(t) for t in _teachers(teacher)]
    return values if isinstance(teacher, (list, tuple)) and len(values) > 1 else values[0]


def run_settings(block: ir.Block, teacher: nn.Module | list[nn.Module], student: nn.Module, bundle: DataBundle,
                 cfg: TrainConfig) -> dict:
    """Everything that determines a run; ``--resume`` refuses a checkpoint whose settings differ."""
    return {
        "distiller": block.name,
        "distiller_key": block.key,
        "teacher": _each(teacher, lambda t: getattr(t, "kd_name", type(t).__name__)),
        "teacher_hash": _each(teacher, teacher_hash),
        "student": getattr(student, "kd_name", type(student).__name__),
        "data": bundle.config.model_dump(mode="json"),
        "train_images": len(bundle.train),
        "train_split": split_fingerprint(bundle.train),
        "val_images": len(bundle.val),
        "train": cfg.model_dump(mode="json"),
    }


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_diff(old: dict, new: dict) -> list[str]:
    """``["train.epochs: 20 in the checkpoint, 30 now", …]``."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- steps

class LiveStep:
    """One training step's forward through the compiler's ``attach``: teacher and student both run."""

    def __init__(self, teacher: nn.Module, student: nn.Module, loss: nn.Module) -> None:
        from ..compiler.build import attach

        self.model = attach(teacher, student, loss)

    def __call__(self, x, y, idx, epoch):
        return self.model(x, labels=y, epoch=epoch)

    def close(self) -> None:
        self.model.detach_hooks()


class OfflineStep:
    """Only the student runs; the teacher's tapped outputs come from ``cache`` by sample index (one cache per
    teacher when ``cache`` is a list, in the order of ``loss.teachers_taps``)."""

    def __init__(self, cache: TeacherCache | list[TeacherCache], student: nn.Module, loss: nn.Module) -> None:
        specs = loss.tap_specs()
        self.caches = list(cache) if isinstance(cache, (list, tuple)) else [cache]
        self.cache, self.student, self.loss = self.caches[0], student, loss
        self.teacher_specs = list(getattr(loss, "teachers_taps", [specs["teacher"]]))
        self.capture = TapCapture(student, specs["student"])

    def __call__(self, x, y, idx, epoch):
        teacher_acts = {}
        for cache, taps in zip(self.caches, self.teacher_specs):
            rows = cache.batch(idx)
            teacher_acts.update({name: rows[spec] for name, spec in taps.items()})
        out = self.student(x)
        return out, self.loss(**self.capture.values, **teacher_acts, labels=y, epoch=epoch)

    def close(self) -> None:
        self.capture.remove()


# ------------------------------------------------------------------------------------------- resume


def _restore(state: dict, student, loss, opt, sched, generator) -> None:
    student.load_state_dict(state["student"])
    loss.load_state_dict(state["connectors"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], generator)


def _resume_state(ckpt: Path, settings: dict, console: Console) -> dict | None:
    if not ckpt.is_file():
        console.print(f"no checkpoint in {ckpt.parent}; starting from epoch 1")
        return None
    state = read_checkpoint(ckpt, what="checkpoint")
    if state.get("format") != FORMAT:
        raise KDError(f"{ckpt} is not an autokd-dsl training checkpoint")
    diff = settings_diff(state["settings"], settings)
    if diff:
        raise KDError(f"cannot resume {ckpt.parent}: the run was started with different settings ("
                      + "; ".join(diff[:4]) + (f"; {len(diff) - 4} more" if len(diff) > 4 else "") + ")",
                      hint="rerun with the original settings, or choose another --out to start a new run")
    return state


# -------------------------------------------------------------------------------------------- train


def train(block: ir.Block, teacher: nn.Module, student: nn.Module, bundle: DataBundle, cfg: TrainConfig,
          out_dir: str | Path, resume: bool = False, console: Console | None = None, *,
          cache_root: str | Path | None = None) -> dict:
    """Distil ``teacher`` into ``student`` with the distiller ``block``; return the contents of result.json.

    ``cache_root`` holds the offline teacher outputs (``cfg.offline_teacher``).
    """
    from ..compiler.build import compile_distiller

    console = console or Console()
    out = Path(out_dir)
    ckpt_path, metrics_path = out / CHECKPOINT, out / METRICS
    settings = run_settings(block, teacher, student, bundle, cfg)
    if ckpt_path.exists() and not resume:
        raise KDError(f"{out} already holds a run", hint="pass --resume to continue it, or choose another --out")
    if cfg.offline_teacher and bundle.augment:
        raise KDError("--offline-teacher needs augmentation off: cached teacher outputs cannot follow random crops",
                      hint="drop --offline-teacher, or use a dataset whose default augmentation is off")

    generator = seed_everything(cfg.seed)
    loss = compile_distiller(block, teacher, student, input_size=bundle.input_size)
    opt, sched = make_optimizer([*student.parameters(), *loss.parameters()], cfg)
    state = _resume_state(ckpt_path, settings, console) if resume else None
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    elapsed = 0.0
    if state is not None:
        _restore(state, student, loss, opt, sched, generator)
        history, elapsed = list(state["history"]), float(state["elapsed"])
        console.print(f"resuming {out} after epoch {state['epoch']}/{cfg.epochs}")
    write_jsonl(metrics_path, history)  # drops any line written after the checkpoint
    (out / RESULT).unlink(missing_ok=True)

    step = _make_step(cfg, teacher, student, loss, bundle, cache_root, console)
    try:
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            row = _epoch(step, student, loss, bundle, cfg, opt, generator, epoch, console)
            sched.step()
            history.append(row)
            elapsed += row["seconds"]
            save_atomic(_checkpoint(epoch, settings, student, loss, opt, sched, generator, history, elapsed),
                        ckpt_path)
            with metrics_path.open("a", encoding="utf-8") as f:  # a logged epoch is always a saved one
                f.write(json.dumps(row) + "\n")
    finally:
        step.close()
    return _finish(out, settings, student, teacher, bundle, history, elapsed, console)


def _make_step(cfg, teacher, student, loss, bundle, cache_root, console) -> LiveStep | OfflineStep:
    if not cfg.offline_teacher:
        return LiveStep(teacher, student, loss)
    if cache_root is None:
        raise KDError("--offline-teacher needs a cache folder for the teacher's outputs")
    tap_sets = getattr(loss, "teachers_taps", [loss.tap_specs()["teacher"]])
    caches = [TeacherCache.open(t, bundle.train, taps.values(), cache_root, data_key=bundle.config.key(),
                                augment=bundle.augment, console=console)
              for t, taps in zip(_teachers(teacher), tap_sets)]
    return OfflineStep(caches, student, loss)


def _epoch(step, student, loss, bundle, cfg, opt, generator, epoch, console) -> dict:
    start = time.perf_counter()
    student.train()
    loss.train()
    sums: dict[str, float] = {}
    correct = seen = 0
    steps = -(-len(bundle.train) // cfg.batch_size)
    with EpochBar(console, f"epoch {epoch}/{cfg.epochs}", steps) as bar:
        for x, y, idx in batches(bundle.train, cfg.batch_size, shuffle=True, generator=generator,
                                 augment=bundle.augment):
            out, losses = step(x, y, idx, epoch)
            total = losses["total"]
            if not torch.isfinite(total.detach()):
                raise KDError(f"the loss became {float(total)} in epoch {epoch}",
                              hint="lower --lr, or check the distiller's weights")
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(torch.as_tensor(value).detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            bar.advance({k: v / seen for k, v in sums.items()})
    terms = {k: v / seen for k, v in sums.items()}
    row = {"epoch": epoch, "losses": terms, "train_acc": correct / seen,
           "val_acc": accuracy(student, bundle.val.images, bundle.val.labels),
           "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - start, 3)}
    console.print(f"epoch {epoch}/{cfg.epochs}  {format_terms(terms)}  train {row['train_acc']:.2%}  "
                  f"val {row['val_acc']:.2%}  lr {row['lr']:.4g}  {row['seconds']:.1f}s")
    return row


def _checkpoint(epoch, settings, student, loss, opt, sched, generator, history, elapsed) -> dict:
    return {
        "format": FORMAT,
        "epoch": epoch,
        "settings": settings,
        "student": student.state_dict(),
        "connectors": loss.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng_state(generator),
        "history": history,
        "elapsed": elapsed,
    }


def _finish(out, settings, student, teacher, bundle, history, elapsed, console) -> dict:
    test_acc = accuracy(student, bundle.test.images, bundle.test.labels)
    best = max(history, key=lambda r: r["val_acc"]) if history else None
    result = {
        "settings": settings,
        "epochs": len(history),
        "final_val_accuracy": history[-1]["val_acc"] if history else math.nan,
        "test_accuracy": test_acc,
        "best_val_accuracy": best["val_acc"] if best else math.nan,
        "best_val_epoch": best["epoch"] if best else None,
        "teacher_test_accuracy": _each(teacher, lambda t: (getattr(t, "kd_teacher", None) or {}).get("test_accuracy")),
        "seconds": round(elapsed, 3),
    }
    write_json(out / RESULT, result)
    console.print(f"test accuracy {test_acc:.2%} (final weights after epoch {len(history)}; "
                  f"best val {result['best_val_accuracy']:.2%} at epoch {result['best_val_epoch']}); "
                  f"results in {out}")
    return result
