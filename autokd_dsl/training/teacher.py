"""Teachers: train one, save it as a checked checkpoint, load it back, and cache it per recipe.

A teacher checkpoint is a ``torch.save``-d dict of plain values and the state dict, so
``torch.load(path, weights_only=True)`` reads it::

    {"format": "autokd-dsl/teacher/1", "architecture": "resnet20", "dataset": "digits",
     "data_config": {...}, "input_size": [3, 32, 32], "num_classes": 10, "recipe": {...},
     "test_accuracy": 0.97, "val_accuracy": 0.98, "train_seconds": 41.0, "device": "cpu",
     "content_hash": "<sha256 of the state dict>", "state_dict": {...}}

:func:`load_teacher` checks every field against what the run needs and turns each mismatch or a corrupt file
into a :class:`~autokd_dsl.errors.KDError`. Bare state dicts and RepDistiller's ``{"model": state_dict}``
checkpoints load too (their architecture is then checked by the state dict's shapes only).

>>> default_recipe("resnet56", "cifar100").schedule, default_recipe("resnet20", "digits").epochs
('step', 10)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from ..data import DataConfig, describe
from ..errors import KDError
from ..models import create_model
from .optim import SGDSettings, make_optimizer, seed_everything

FORMAT = "autokd-dsl/teacher/1"
#: RepDistiller's CIFAR recipe length; shorter runs use the scaled (cosine) recipe.
REPDISTILLER_EPOCHS = 240
#: Epochs that reach a good teacher on the small datasets on a CPU (digits: > 95 % test in under a minute).
SHORT_EPOCHS = {"digits": 10, "mnist": 8, "fashion-mnist": 8}
#: RepDistiller's learning rate for the light architectures.
LIGHT_LR = {"mobilenetv2": 0.01, "mobile_half": 0.01, "shufflev1": 0.01, "shufflev2": 0.01}
#: Very deep nets diverge at lr 0.05 on the short recipes (resnet110 on digits: loss 4.8 → 6.4 in two epochs, as
#: He et al. saw for their 110-layer net); a smaller rate over twice the epochs reaches 96.9 % test in 20 epochs.
DEEP = {"resnet110"}
DEEP_SHORT_LR = 0.02


class Recipe(SGDSettings):
    """How a teacher is trained (see :class:`~autokd_dsl.training.optim.SGDSettings` for the fields)."""

    def key(self) -> str:
        return _short_hash(self.model_dump(mode="json"))


def default_recipe(arch: str, dataset: str, epochs: int | None = None, lr: float | None = None,
                   batch_size: int | None = None, seed: int = 0) -> Recipe:
    """RepDistiller's recipe for runs of 240 epochs or more, else the same SGD with a cosine schedule."""
    short = SHORT_EPOCHS.get(dataset)
    deep = arch in DEEP and short is not None
    epochs = epochs or ((2 * short if deep else short) if short else REPDISTILLER_EPOCHS)
    return Recipe(
        epochs=epochs,
        lr=lr or (DEEP_SHORT_LR if deep and epochs < REPDISTILLER_EPOCHS else LIGHT_LR.get(arch, 0.05)),
        batch_size=batch_size or 64,
        schedule="step" if epochs >= REPDISTILLER_EPOCHS else "cosine",
        seed=seed,
    )


def teacher_data(cfg: DataConfig) -> DataConfig:
    """The data a teacher trains on: the whole training split of ``cfg`` (never a student's subset)."""
    return cfg.model_copy(update={"train_subset": None})


# ------------------------------------------------------------------------------------------- hashing


def _short_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def state_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ training


def run_folder(checkpoint: str | Path) -> Path:
    """Where a teacher run's TensorBoard events and ``run.json`` go: ``t.pt`` → ``t.run/``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".run")


def train_teacher(arch: str, data_cfg: DataConfig, recipe: Recipe, out: str | Path,
                  console: Console | None = None, device: str | None = None, *, runtime=None, dist=None,
                  command: str | None = None) -> Path:
    """Train ``arch`` with cross-entropy on ``data_cfg`` and write its checkpoint to ``out``; return ``out``.

    The data streams through :func:`~autokd_dsl.data.stream.open_data`; ``runtime`` (a
    :class:`~autokd_dsl.training.runtime.Runtime`) sets device, precision and workers (``device`` overrides
    its device), and under ``torchrun`` (``dist``) the model trains data-parallel with rank 0 writing.
    Example: ``train_teacher("resnet20", DataConfig(name="digits"), default_recipe("resnet20", "digits"),
    "t.pt")``.
    """
    from ..data.stream import open_data
    from ..progress import LOG_FILE, run_log
    from .loop import Loop, evaluate, train_epoch
    from .runtime import Dist, Precision, Runtime, default_workers, resolve_device, to_runtime, use_channels_last
    from .tracking import TENSORBOARD, Tracker, write_run_info

    console = console or Console()
    runtime = runtime or Runtime(device="cpu")
    if device is not None:
        runtime = runtime.model_copy(update={"device": device})
    dist = dist or Dist()
    dev = resolve_device(runtime.device, dist.local_rank)
    dist.init(dev)
    sets = open_data(data_cfg)
    seed_everything(recipe.seed)
    channels_last = use_channels_last(runtime, dev)
    model = to_runtime(create_model(arch, sets.num_classes, data_cfg.input_size[0]), dev, channels_last)
    opt, sched = make_optimizer(model.parameters(), recipe)
    loop = Loop(dev, channels_last, Precision(runtime.amp, dev), dist, default_workers(runtime, sets.streamed, dist),
                recipe.seed, recipe.batch_size)
    folder = run_folder(out)
    if dist.main:
        write_run_info(folder, {"architecture": arch, "data": data_cfg.model_dump(mode="json"),
                                "recipe": recipe.model_dump(mode="json"), "checkpoint": str(out)},
                       command=command, extra={"runtime": runtime.model_dump(mode="json") | {
                           "resolved_device": str(dev)}, "world_size": dist.world})
    with run_log(console, folder / LOG_FILE, f"training teacher {arch} -> {out}", enabled=dist.main):
        tracker = Tracker(folder / TENSORBOARD, runtime.tensorboard and dist.main)
        wrapped = dist.wrap(model, dev)
        console.print(f"training teacher {arch} on {describe(sets)}: {recipe.epochs} epochs, lr {recipe.lr}, "
                      f"batch {recipe.batch_size}, {recipe.schedule} schedule, {dev}"
                      + (f", {loop.precision.amp}" if loop.precision.amp != "off" else "")
                      + (f", {dist.world} ranks" if dist.world > 1 else ""))

        def forward(x, y, idx):
            output = wrapped(x)
            return output, {"ce": (ce := nn.functional.cross_entropy(output.float(), y)), "total": ce}

        start = time.perf_counter()
        val_acc = 0.0
        try:
            for epoch in range(1, recipe.epochs + 1):
                model.train()
                terms, train_acc, _ = train_epoch(loop, forward, sets.train, opt, epoch, console,
                                                  f"teacher {epoch}/{recipe.epochs}")
                val_acc = evaluate(loop, model, sets.val)
                lr = opt.param_groups[0]["lr"]
                console.print(f"teacher epoch {epoch}/{recipe.epochs}  loss {terms['ce']:.4f}  "
                              f"train {train_acc:.2%}  val {val_acc:.2%}  lr {lr:.4g}")
                tracker.scalars(epoch, {"loss/ce": terms["ce"], "accuracy/train": train_acc,
                                        "accuracy/val": val_acc, "lr": lr})
                sched.step()
            test_acc = evaluate(loop, model, sets.test)
            tracker.scalars(recipe.epochs, {"accuracy/test": test_acc})
        finally:
            tracker.close()
        seconds = time.perf_counter() - start
        console.print(f"teacher {arch}: test accuracy {test_acc:.2%} ({seconds:.0f}s)")
        if dist.main:
            checkpoint = _teacher_checkpoint(arch, data_cfg, sets, recipe, model, test_acc, val_acc, seconds, dev)
            save_atomic(checkpoint, Path(out))
    dist.barrier()
    return Path(out)


def _teacher_checkpoint(arch, data_cfg, sets, recipe, model, test_acc, val_acc, seconds, dev) -> dict:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "architecture": arch,
        "dataset": data_cfg.name,
        "data_config": data_cfg.model_dump(mode="json"),
        "input_size": list(data_cfg.input_size),
        "num_classes": sets.num_classes,
        "recipe": recipe.model_dump(mode="json"),
        "test_accuracy": test_acc,
        "val_accuracy": val_acc,
        "train_seconds": seconds,
        "device": dev.type,
        "content_hash": state_hash(state),
        "state_dict": state,
    }


def save_atomic(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------- loading


def read_checkpoint(path: str | Path, what: str = "teacher weights") -> dict:
    """``torch.load(weights_only=True)`` with every way of failing turned into a :class:`KDError`."""
    path = Path(path)
    if not path.is_file():
        raise KDError(f"{what} {path} not found" if not path.exists() else f"{what} {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix, never a crash
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise KDError(f"cannot read {what} {path}: the file is truncated, corrupt or not a PyTorch checkpoint "
                      f"({reason})", hint="train it again, or delete it so it is re-created") from None
    if not isinstance(obj, dict):
        raise KDError(f"{what} {path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in value.items())


def _is_size(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


# what each field of a checkpoint must hold: (test, in words)
FIELD_TYPES = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "dict": (lambda v: isinstance(v, dict), "a dict"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "state_dict": (_is_state_dict, "a dict of tensors"),
    "size": (_is_size, "three positive whole numbers (C, H, W)"),
}
_TEACHER_FIELDS = {"architecture": "str", "num_classes": "count", "input_size": "size", "state_dict": "state_dict",
                   "content_hash": "str"}


def check_fields(obj: dict, fields: Mapping[str, str], what: str) -> None:
    """A clear error for a missing or mistyped field of a (hand-edited) checkpoint."""
    for key, kind in fields.items():
        test, words = FIELD_TYPES[kind]
        if key not in obj:
            raise KDError(f"{what} lack the field `{key}`", hint="the file was edited or is corrupt; "
                          "create it again")
        if not test(obj[key]):
            raise KDError(f"{what}: `{key}` holds {type(obj[key]).__name__} {str(obj[key])[:40]!r}, not {words}",
                          hint="the file was edited or is corrupt; create it again")


def _normalise(obj: dict, path: Path) -> dict:
    """Our format as is; a bare or RepDistiller state dict wrapped with empty metadata."""
    if obj.get("format") == FORMAT:
        missing = [k for k in ("architecture", "num_classes", "input_size", "state_dict", "content_hash")
                   if k not in obj]
        if missing:
            raise KDError(f"teacher weights {path} lack {', '.join(missing)}", hint="the file is corrupt")
        check_fields(obj, _TEACHER_FIELDS, f"teacher weights {path}")
        return obj
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KDError(f"{path} is not a teacher checkpoint", hint="create one with `autokd-dsl teacher`")
    return {"format": None, "state_dict": obj, "content_hash": state_hash(obj)}


def _fmt_size(size) -> str:
    return "x".join(str(int(v)) for v in size)


def check_teacher_meta(ckpt: dict, path: Path, arch: str, num_classes: int, input_size) -> None:
    """Raise a :class:`KDError` naming the first field of ``ckpt`` that does not fit the run."""
    if ckpt.get("format") is None:
        return
    if ckpt["architecture"] != arch:
        raise KDError(f"teacher weights {path} are for `{ckpt['architecture']}`, not `{arch}`",
                      hint=f"pass --teacher {ckpt['architecture']}, or weights trained for {arch}")
    if int(ckpt["num_classes"]) != int(num_classes):
        raise KDError(f"teacher weights {path} were trained for {ckpt['num_classes']} classes; "
                      f"this dataset has {num_classes}", hint="use weights trained on this dataset")
    if tuple(ckpt["input_size"]) != tuple(input_size):
        raise KDError(f"teacher weights {path} were trained at input size {_fmt_size(ckpt['input_size'])}; "
                      f"this run uses {_fmt_size(input_size)}",
                      hint=f"pass --input-size {_fmt_size(ckpt['input_size'])}, or weights trained at "
                           f"{_fmt_size(input_size)}")
    if state_hash(ckpt["state_dict"]) != ckpt["content_hash"]:
        raise KDError(f"teacher weights {path} are corrupt: their content hash does not match",
                      hint="train them again, or delete the file so it is re-created")


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        if shapes:
            k = shapes[0]
            what = f"`{k}` has shape {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        else:
            what = f"missing `{missing[0]}`" if missing else f"unexpected `{extra[0]}`"
        raise KDError(f"teacher weights {path} do not fit {arch}: {what}",
                      hint="check --teacher, the dataset's number of classes and --input-size channels")
    model.load_state_dict(state)


def load_teacher(path: str | Path, arch: str, num_classes: int, input_size) -> nn.Module:
    """Build ``arch`` and load checked weights from ``path``; the model is in eval mode, without gradients.

    The checkpoint's metadata (everything but the weights) is kept as ``model.kd_teacher``, and its
    ``content_hash`` keys the offline teacher-output cache. Example:
    ``load_teacher("t.pt", "resnet20", num_classes=10, input_size=(3, 32, 32))``.
    """
    path = Path(path)
    ckpt = _normalise(read_checkpoint(path), path)
    check_teacher_meta(ckpt, path, arch, num_classes, input_size)
    model = create_model(arch, num_classes, int(input_size[0]))
    _load_state(model, ckpt["state_dict"], path, arch)
    model.eval()
    model.requires_grad_(False)
    model.kd_teacher = {k: v for k, v in ckpt.items() if k != "state_dict"} | {"path": str(path)}
    return model


# --------------------------------------------------------------------------------------------- cache


def cached_path(arch: str, data_cfg: DataConfig, recipe: Recipe, cache_dir: Path) -> Path:
    """Where the cached teacher for (architecture, dataset, input size, recipe) lives."""
    data_cfg = teacher_data(data_cfg)
    key = _short_hash({"format": FORMAT, "arch": arch, "data": data_cfg.key(), "recipe": recipe.key()})
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", data_cfg.name).strip("_")[:40]
    arch_slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", arch)
    return Path(cache_dir) / f"{arch_slug}-{dataset}-{_fmt_size(data_cfg.input_size)}-{key}.pt"


def teacher_for(arch: str, data_cfg: DataConfig, recipe: Recipe, cache_dir: str | Path,
                console: Console | None = None, device: str | None = None, *, runtime=None, dist=None) -> Path:
    """The cached teacher checkpoint for this setting, training and caching it first when there is none.

    Example: ``teacher_for("resnet20", DataConfig(name="digits"), recipe, Path("~/.cache/autokd-dsl/teachers"))``.
    """
    console = console or Console()
    data_cfg = teacher_data(data_cfg)
    path = cached_path(arch, data_cfg, recipe, Path(cache_dir).expanduser())
    if path.exists():
        try:
            ckpt = _normalise(read_checkpoint(path), path)
            check_teacher_meta(ckpt, path, arch, ckpt["num_classes"], data_cfg.input_size)
        except KDError as err:
            console.print(f"cached teacher {path} is unusable ({err.message}); training it again")
        else:
            console.print(f"using cached teacher {arch} ({data_cfg.name}, {_fmt_size(data_cfg.input_size)}, "
                          f"test accuracy {ckpt['test_accuracy']:.2%}): {path}")
            return path
    console.print(f"no cached teacher {arch} for {data_cfg.name} at {_fmt_size(data_cfg.input_size)}; "
                  f"training one ({recipe.epochs} epochs) and caching it at {path}")
    return train_teacher(arch, data_cfg, recipe, path, console, device, runtime=runtime, dist=dist)

