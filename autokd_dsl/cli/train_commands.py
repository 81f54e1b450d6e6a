"""Training commands: teacher (cross-entropy) and train (a full distillation run)."""

from __future__ import annotations

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
    from ..api import TeacherSettings
    from ..api import teacher as run_teacher
    from ..files import check_output_file
    from ..training.tracking import command_line

    size, _ = values.input_size(input_size)
    values.data_config(name=data, root=data_root, input_size=size)
    if out is not None:
        check_output_file(out)
    values.device(device)
    values.models(size[0], model=model)  # an unknown name fails first
    settings = TeacherSettings(model=model, data=data, data_root=data_root, input_size=size, epochs=epochs, lr=lr,
                               batch_size=batch_size, seed=seed, out=out, device=device)
    run_teacher(settings, console=plain_console(), command=command_line())


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
    from ..api import TrainSettings, run_folder
    from ..api import train as run_train
    from ..compiler.build import load_distiller
    from ..files import check_output_folder
    from ..training.student import check_run_folder
    from ..training.tracking import command_line

    console = plain_console()
    size, note = values.input_size(input_size, file)
    if note:
        console.print(note)
    values.data_config(name=data, root=data_root, input_size=size)
    block = load_distiller(file, distiller)
    out = check_output_folder(out or run_folder(block.name, student))
    check_run_folder(out, resume)
    values.models(size[0], teacher=teacher, student=student)  # before any data is read or teacher trained
    settings = TrainSettings(file=file, teacher=teacher, student=student, data=data, distiller=distiller,
                             teacher_weights=teacher_weights, data_root=data_root, input_size=size, epochs=epochs,
                             lr=lr, batch_size=batch_size, train_subset=train_subset, seed=seed, out=out,
                             resume=resume, offline_teacher=offline_teacher)
    run_train(settings, console=console, command=command_line())
