"""Training commands: teacher (cross-entropy) and train (a full distillation run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from . import values
from .app import command, plain_console
from .params import (
    INPUT_SIZE,
    BatchSize,
    Data,
    DataRoot,
    Device,
    DistillerName,
    Epochs,
    FileInputSize,
    InputSize,
    Lr,
    Seed,
    Student,
    Teacher,
    TeacherWeights,
    TrainSubset,
)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


@command("teacher")
def teacher_cmd(
    model: str = typer.Argument(..., help="Teacher architecture: a zoo name, timm:NAME or package.module:factory."),
    data: Data = ...,
    data_root: DataRoot = None,
    input_size: InputSize = INPUT_SIZE,
    epochs: Epochs = None,
    lr: Lr = None,
    batch_size: BatchSize = None,
    seed: Seed = 0,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the checkpoint here (default: the teacher "
                                                           "cache, reused by `train` and `search`)."),
    device: Device = "cpu",
) -> None:
    """Train a teacher with cross-entropy and save a checked checkpoint (or cache it)."""
    from ..files import check_output_file
    from ..training.teacher import cache_dir, default_recipe, teacher_for, train_teacher

    console = plain_console()
    size, _ = values.input_size(input_size)
    data_cfg = values.data_config(name=data, root=data_root, input_size=size)
    if out is not None:
        check_output_file(out)
    values.device(device)
    values.models(size[0], model=model)  # an unknown name fails first
    recipe = default_recipe(model, data_cfg.name, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    if out is None:
        path = teacher_for(model, data_cfg, recipe, cache_dir(), console, device=device)
    else:
        path = train_teacher(model, data_cfg, recipe, out, console, device=device)
    console.print(f"teacher checkpoint: {path}")


@command("train", source="file")
def train_cmd(
    file: Path = typer.Argument(..., help="The .kd file holding the distiller."),
    teacher: Teacher = ...,
    student: Student = ...,
    teacher_weights: TeacherWeights = None,
    distiller: DistillerName = None,
    data: Data = ...,
    data_root: DataRoot = None,
    input_size: FileInputSize = None,
    epochs: Epochs = None,
    lr: Lr = None,
    batch_size: BatchSize = None,
    train_subset: TrainSubset = None,
    seed: Seed = 0,
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/train-<distiller>-<student>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    offline_teacher: bool = typer.Option(False, "--offline-teacher",
                                         help="Cache the teacher's outputs once instead of running it per batch "
                                              "(needs augmentation off)."),
) -> None:
    """Distil a teacher into a student with a distiller; resumable (--resume), seeded and reproducible."""
    from ..compiler.build import load_distiller
    from ..data import describe, load_data
    from ..files import check_output_folder
    from ..training.student import TrainConfig, check_run_folder, make_student, subset_train, train
    from ..training.teacher import cache_dir, default_recipe, obtain_teacher

    console = plain_console()
    size, note = values.input_size(input_size, file)
    if note:
        console.print(note)
    data_cfg = values.data_config(name=data, root=data_root, input_size=size)
    block = load_distiller(file, distiller)
    out = check_output_folder(out or Path("runs") / f"train-{block.name}-{_slug(student)}")
    check_run_folder(out, resume)
    in_chans = data_cfg.input_size[0]
    values.models(in_chans, teacher=teacher, student=student)  # before any data is read or teacher trained
    defaults = default_recipe(student, data_cfg.name, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    cfg = TrainConfig(**defaults.model_dump(), offline_teacher=offline_teacher)
    bundle = load_data(data_cfg)
    if train_subset is not None:
        bundle = subset_train(bundle, train_subset, seed)
    teacher_net = obtain_teacher(teacher, teacher_weights, data_cfg, bundle.num_classes, console)
    student_net = make_student(student, bundle.num_classes, in_chans, seed)
    t_acc = (getattr(teacher_net, "kd_teacher", None) or {}).get("test_accuracy")
    console.print(f"distiller {block.name} ({file}): {teacher}"
                  + (f" (test {t_acc:.2%})" if isinstance(t_acc, float) else "")
                  + f" -> {student}; {describe(bundle)}"
                  + (f" (class-balanced subset, seed {seed})" if train_subset is not None else "")
                  + f"; {cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, "
                  f"{cfg.schedule} schedule, seed {cfg.seed}; run folder {out}")
    train(block, teacher_net, student_net, bundle, cfg, out, resume, console,
          cache_root=cache_dir().parent / "teacher-outputs")
