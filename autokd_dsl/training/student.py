"""Distillation training: SGD on the student and the distiller's connectors, resumable and reproducible.

The distiller's ``total`` is the whole training loss (library distillers carry their own cross-entropy term).
Every epoch appends one line to ``out_dir/metrics.jsonl``, logs the same figures to TensorBoard
(``out_dir/tensorboard``) and atomically rewrites ``out_dir/checkpoint.pt`` (student, connectors, optimiser,
scheduler, gradient scaler, the epoch and the metrics so far). Data order, augmentation and dropout are seeded
per epoch, so a run killed at any moment resumes exactly where its last finished epoch left it: the same
batches, the same augmentations and, on the same machine and thread count, bit-identical weights. The test
split is evaluated once, at the end, into ``out_dir/result.json``; ``out_dir/run.json`` and
``out_dir/distiller.kd`` record what ran (see :mod:`.tracking`).

Under ``torchrun`` (``dist.world > 1``) the student and the connectors train inside DistributedDataParallel,
each rank takes its slice of every global batch of ``world × batch_size`` samples, metrics are summed over the
ranks, and rank 0 alone writes the run folder.

Example (see ``autokd-dsl train``)::

    result = train(load_distiller("library/kd.kd"), teacher, student, bundle, TrainConfig(epochs=20), "runs/kd")
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..data import DataBundle, Split
from ..data.core import balanced_subset
from ..data.stream import SetBundle, as_sets
from ..errors import KDError
from ..files import write_text
from ..lang import ir
from ..models import create_model
from ..progress import LOG_FILE, format_terms
from ..standalone.attach import TapCapture
from .loop import Loop, evaluate, train_epoch
from .optim import SGDSettings, make_optimizer, seed_everything
from .runtime import Dist, Precision, Runtime, default_workers, resolve_device, to_runtime, use_channels_last
from .teacher import check_fields, read_checkpoint, save_atomic
from .teacher_cache import TeacherCache, split_fingerprint, teacher_hash
from .tracking import RUN_INFO, TENSORBOARD, Tracker, write_run_info

FORMAT = "autokd-dsl/train/1"
CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FIELDS = {"epoch": "count", "settings": "dict", "student": "state_dict", "connectors": "state_dict",
                      "optimizer": "dict", "scheduler": "dict", "history": "list", "elapsed": "number"}
METRICS = "metrics.jsonl"
RESULT = "result.json"


class TrainConfig(SGDSettings):
    """Student training settings: RepDistiller's SGD recipe (see :class:`~autokd_dsl.training.optim.SGDSettings`) and
    ``offline_teacher`` (read the teacher's outputs from the cache instead of running it; needs augmentation off).
    """

    offline_teacher: bool = False


# ------------------------------------------------------------------------------------------- helpers


def subset_train(bundle: DataBundle | SetBundle, size: int, seed: int) -> DataBundle | SetBundle:
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
    if isinstance(bundle, SetBundle):
        return dataclasses.replace(bundle, train=bundle.train.take(t))
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


def run_settings(block: ir.Block, teacher: nn.Module | list[nn.Module], student: nn.Module,
                 bundle: DataBundle | SetBundle, cfg: TrainConfig) -> dict:
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
        "augment": bool(bundle.augment),
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
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


# -------------------------------------------------------------------------------------------- steps


class Distill(nn.Module):
    """The student and the distiller's loss in one module tree, so ``.to()``, ``state_dict()`` and
    DistributedDataParallel see both the student's and the connectors' parameters.

    ``forward(x, labels, index, epoch)`` → ``(student output, losses)``. The teacher is held outside the tree
    (it never trains) and runs in inference mode; with ``cache`` its tapped outputs are read by sample index
    instead. This is also the supported way to use a compiled loss under DDP in one's own loop (see
    ``docs/scale.md``): the ``Attached`` module of an emitted file keeps the student outside its tree.
    ``teacher`` may be a list (several teachers, in the order of ``loss.teachers_taps``), ``cache`` then a list
    with one cache per teacher.
    """

    def __init__(self, teacher: nn.Module | list[nn.Module], student: nn.Module, loss: nn.Module,
                 cache: TeacherCache | list[TeacherCache] | None = None) -> None:
        super().__init__()
        self.student, self.loss = student, loss
        specs = loss.tap_specs()
        teachers = _teachers(teacher)
        object.__setattr__(self, "_teachers", teachers)
        self._caches = None if cache is None else _teachers(cache)
        self._teacher_specs = list(getattr(loss, "teachers_taps", [specs["teacher"]]))
        self._student_capture = TapCapture(student, specs["student"])
        self._teacher_captures = None if cache is not None else [
            TapCapture(t, taps, detach=True) for t, taps in zip(teachers, self._teacher_specs)]
        for module in loss.modules():
            if getattr(module, "reads_teacher", False):  # every module has copy_from_teacher; few read it
                module.copy_from_teacher(teachers[0])

    def teacher_outputs(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._caches is not None:
            out = {}
            for cache, taps in zip(self._caches, self._teacher_specs):
                rows = cache.batch(index)
                out.update({name: rows[spec].to(x.device, non_blocking=True) for name, spec in taps.items()})
            return out
        with torch.inference_mode():
            for teacher in self._teachers:
                teacher.eval()
                teacher(x)
        # inference tensors cannot be saved for backward; a clone outside inference mode is an ordinary tensor
        return {name: value.clone() for capture in self._teacher_captures for name, value in capture.values.items()}

    def forward(self, x, labels=None, index=None, epoch=0):
        teacher_acts = self.teacher_outputs(x, index)
        output = self.student(x)
        extra = {"index": index.to(x.device)} if getattr(self.loss, "needs_index", False) else {}
        losses = self.loss(**self._student_capture.values, **teacher_acts, labels=labels, epoch=epoch, **extra)
        return output, losses

    def close(self) -> None:
        self._student_capture.remove()
        for capture in self._teacher_captures or []:
            capture.remove()


# ------------------------------------------------------------------------------------------- resume


def _restore(state: dict, student, loss, opt, sched, precision: Precision) -> None:
    student.load_state_dict(state["student"])
    loss.load_state_dict(state["connectors"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    precision.load_state_dict(state.get("scaler") or {})


# what a run folder holds: the checkpoint, metrics, result, run.json with the distiller's source, TensorBoard logs
RUN_FILES = {CHECKPOINT, METRICS, RESULT, RUN_INFO, LOG_FILE, "distiller.kd", TENSORBOARD}


def check_run_folder(out: str | Path, resume: bool) -> None:
    """Refuse, before any work, an --out folder that holds something other than a training run (a search, a
    dataset, anything else), or a run without --resume. Nothing in the folder is touched."""
    out = Path(out)
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir()}
    foreign = sorted(n for n in names - RUN_FILES if not n.startswith("."))
    if foreign:
        raise KDError(f"--out {out} (command-line value) holds files that are not a training run's "
                      f"({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}); nothing was changed",
                      hint="choose another --out for the run")
    if CHECKPOINT in names and not resume:
        raise KDError(f"{out} already holds a run", hint="pass --resume to continue it, or choose another --out")
    if CHECKPOINT in names:
        _read_state(out / CHECKPOINT)


def _read_state(ckpt: Path) -> dict:
    state = read_checkpoint(ckpt, what="checkpoint")
    if state.get("format") != FORMAT:
        raise KDError(f"{ckpt} is not an autokd-dsl training checkpoint; it was left as it is",
                      hint="choose another --out for the run")
    check_fields(state, _CHECKPOINT_FIELDS, f"checkpoint {ckpt}")
    return state


def _resume_state(ckpt: Path, settings: dict, console: Console) -> dict | None:
    if not ckpt.is_file():
        console.print(f"no checkpoint in {ckpt.parent}; starting from epoch 1")
        return None
    state = _read_state(ckpt)
    diff = settings_diff(state["settings"], settings)
    if diff:
        raise KDError(f"cannot resume {ckpt.parent}: the run was started with different settings ("
                      + "; ".join(diff[:4]) + (f"; {len(diff) - 4} more" if len(diff) > 4 else "") + ")",
                      hint="rerun with the original settings, or choose another --out to start a new run")
    return state


# -------------------------------------------------------------------------------------------- train


def train(block: ir.Block, teacher: nn.Module, student: nn.Module, bundle: DataBundle | SetBundle,
          cfg: TrainConfig, out_dir: str | Path, resume: bool = False, console: Console | None = None, *,
          cache_root: str | Path | None = None, runtime: Runtime | None = None, dist: Dist | None = None,
          sources: dict[str, str] | None = None, command: str | None = None, options: dict | None = None) -> dict:
    """Distil ``teacher`` into ``student`` with the distiller ``block``; return the contents of result.json.

    ``bundle`` is held in memory (:func:`~autokd_dsl.data.load_data`) or streamed
    (:func:`~autokd_dsl.data.stream.open_data`); ``cache_root`` holds the offline teacher outputs
    (``cfg.offline_teacher``); ``runtime`` says where and how to run; ``dist`` is this process's rank in a
    ``torchrun`` run; ``sources`` (``{"distiller.kd": text}``), ``command`` and ``options`` (the settings as
    given) go into the run folder's ``run.json``.
    """
    from ..compiler.build import compile_distiller
    from ..lang.printer import print_block

    console = console or Console()
    runtime, dist = runtime or Runtime(), dist or Dist()
    device = resolve_device(runtime.device, dist.local_rank)
    dist.init(device)
    out = Path(out_dir)
    ckpt_path, metrics_path = out / CHECKPOINT, out / METRICS
    sets = as_sets(bundle)
    settings = run_settings(block, teacher, student, sets, cfg)
    check_run_folder(out, resume)
    offline = cfg.offline_teacher and not sets.augment
    if cfg.offline_teacher and sets.augment:
        console.print("note: --offline-teacher is not used: augmentation is on, and the teacher's outputs change "
                      "with every random crop and flip, so they cannot be computed once; the teacher runs on "
                      "every batch (pass --no-augment to use the cache)")

    seed_everything(cfg.seed)
    loss = compile_distiller(block, teacher, student, input_size=sets.input_size)
    channels_last = use_channels_last(runtime, device)
    for t in _teachers(teacher):
        to_runtime(t, device, channels_last)
    to_runtime(student, device, channels_last)
    loss.to(device)
    precision = Precision(runtime.amp, device)
    opt, sched = make_optimizer([*student.parameters(), *loss.parameters()], cfg)
    state = _resume_state(ckpt_path, settings, console) if resume else None
    history: list[dict] = []
    elapsed = 0.0
    if state is not None:
        try:
            _restore(state, student, loss, opt, sched, precision)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:  # a hand-edited checkpoint
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise KDError(f"checkpoint {ckpt_path} does not fit this run ({reason})",
                          hint="the file was edited or is corrupt; choose another --out to start a new run") from None
        history, elapsed = list(state["history"]), float(state["elapsed"])
        console.print(f"resuming {out} after epoch {state['epoch']}/{cfg.epochs}")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(metrics_path, history)  # drops any line written after the checkpoint
        (out / RESULT).unlink(missing_ok=True)
        write_run_info(out, settings, sources=sources or {"distiller.kd": print_block(block)}, command=command,
                       resumed=state is not None,
                       extra={"runtime": runtime.model_dump(mode="json") | {"resolved_device": str(device)},
                              "world_size": dist.world, "options": options or {},
                              "offline_teacher_used": offline})
    dist.barrier()

    cache = _teacher_cache(cfg, teacher, loss, sets, cache_root, console) if offline else None
    distill = Distill(teacher, student, loss, cache)
    model = dist.wrap(distill, device)
    loop = Loop(device, channels_last, precision, dist, default_workers(runtime, sets.streamed, dist), cfg.seed,
                cfg.batch_size)
    tracker = Tracker(out / TENSORBOARD, runtime.tensorboard and dist.main, purge_step=len(history) + 1)
    try:
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            row = _epoch(loop, model, distill, sets, cfg, opt, epoch, console)
            sched.step()
            history.append(row)
            elapsed += row["seconds"]
            tracker.scalars(epoch, {f"loss/{k}": v for k, v in row["losses"].items()}
                            | {"accuracy/train": row["train_acc"], "accuracy/val": row["val_acc"], "lr": row["lr"]})
            if dist.main:
                save_atomic(_checkpoint(epoch, settings, student, loss, opt, sched, precision, history, elapsed),
                            ckpt_path)
                with metrics_path.open("a", encoding="utf-8") as f:  # a logged epoch is always a saved one
                    f.write(json.dumps(row) + "\n")
            dist.barrier()
        return _finish(loop, out, settings, distill, teacher, sets, history, elapsed, console, tracker)
    finally:
        distill.close()
        tracker.close()


def _teacher_cache(cfg, teacher, loss, sets, cache_root, console) -> TeacherCache | list[TeacherCache]:
    """The offline outputs of the teacher, or one cache per teacher (each holding that teacher's taps)."""
    if cache_root is None:
        raise KDError("--offline-teacher needs a cache folder for the teacher's outputs")
    tap_sets = getattr(loss, "teachers_taps", [loss.tap_specs()["teacher"]])
    caches = [TeacherCache.open(t, sets.train, taps.values(), cache_root, data_key=sets.config.key(),
                                augment=sets.augment, console=console)
              for t, taps in zip(_teachers(teacher), tap_sets)]
    return caches if isinstance(teacher, (list, tuple)) else caches[0]


def _epoch(loop: Loop, model, distill: Distill, sets: SetBundle, cfg, opt, epoch, console) -> dict:
    distill.train()

    def forward(x, y, idx):
        return model(x, labels=y, index=idx, epoch=epoch)

    terms, train_acc, seconds = train_epoch(loop, forward, sets.train, opt, epoch, console,
                                            f"epoch {epoch}/{cfg.epochs}")
    row = {"epoch": epoch, "losses": terms, "train_acc": train_acc,
           "val_acc": evaluate(loop, distill.student, sets.val),
           "lr": opt.param_groups[0]["lr"], "seconds": round(seconds, 3)}
    console.print(f"epoch {epoch}/{cfg.epochs}  {format_terms(terms)}  train {row['train_acc']:.2%}  "
                  f"val {row['val_acc']:.2%}  lr {row['lr']:.4g}  {row['seconds']:.1f}s")
    return row


def _checkpoint(epoch, settings, student, loss, opt, sched, precision, history, elapsed) -> dict:
    return {
        "format": FORMAT,
        "epoch": epoch,
        "settings": settings,
        "student": student.state_dict(),
        "connectors": loss.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": precision.state_dict(),
        "history": history,
        "elapsed": elapsed,
    }


def _finish(loop, out, settings, distill, teacher, sets, history, elapsed, console, tracker) -> dict:
    test_acc = evaluate(loop, distill.student, sets.test)
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
    tracker.scalars(len(history), {"accuracy/test": test_acc})
    if loop.dist.main:
        write_json(out / RESULT, result)
    loop.dist.barrier()
    console.print(f"test accuracy {test_acc:.2%} (final weights after epoch {len(history)}; "
                  f"best val {result['best_val_accuracy']:.2%} at epoch {result['best_val_epoch']}); "
                  f"results in {out}")
    return result
