"""Training commands: teacher (cross-entropy) and train (a full distillation run); both run under torchrun.

Each builds the settings of :mod:`autokd_dsl.api` (from ``--config`` and the options given), checks them before
any work starts (input size, dataset, model names, device, the output path or run folder) and calls the API.
Both take the options of :data:`TRAINING_OPTIONS` (the data, the optimisation, how the run executes, the settings
file), declared once and added after each command's own by :func:`training_options`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from . import values as check
from .app import command, plain_console
from .params import (
    INPUT_SIZE,
    Amp,
    Augment,
    BatchSize,
    ChannelsLast,
    Config,
    DataRoot,
    DistillerName,
    Epochs,
    FileInputSize,
    InputSize,
    LoaderWorkers,
    Lr,
    RunDevice,
    Seed,
    TeacherWeights,
    Tensorboard,
    TrainSubset,
    settings,
)

DATA_HELP = "Dataset (digits, fashion-mnist, mnist, cifar10, cifar100, imagefolder:PATH)."

# name → (type, default), in the order of --help
TRAINING_OPTIONS = {
    "data": (Annotated[str | None, typer.Option("--data", help=DATA_HELP)], None),
    "data_root": (DataRoot, None),
    "augment": (Augment, None),
    "epochs": (Epochs, None),
    "lr": (Lr, None),
    "batch_size": (BatchSize, None),
    "seed": (Seed, 0),
    "device": (RunDevice, "auto"),
    "amp": (Amp, "off"),
    "channels_last": (ChannelsLast, None),
    "workers": (LoaderWorkers, None),
    "tensorboard": (Tensorboard, True),
    "config": (Config, None),
}


def training_options(fn):
    """Add the :data:`TRAINING_OPTIONS` to the parameters of command ``fn`` (typer reads them from its signature),
    after its own; ``fn`` receives them in its ``**options``."""
    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
             for name, (kind, default) in TRAINING_OPTIONS.items()]
    fn.__signature__ = inspect.Signature(own + added)
    fn.__annotations__ = {p.name: p.annotation for p in own + added}
    return fn


@command("teacher")
@training_options
def teacher_cmd(
    ctx: typer.Context,
    model: list[str] | None = typer.Argument(None, help="Teacher architectures (one or more, each trained in "
                                                        "turn): zoo names, timm:NAME or package.module:factory."),
    input_size: InputSize = INPUT_SIZE,
    out: Path | None = typer.Option(None, "--out", help="Write the checkpoint here (default: the teacher "
                                                        "cache, reused by `train` and `search`)."),
    **options,
) -> None:
    """Train a teacher with cross-entropy and save a checked checkpoint (or cache it); runs under torchrun."""
    config = options.pop("config")
    from ..api import TeacherSettings
    from ..api import teacher as run_teacher
    from ..files import check_output_file
    from ..training.tracking import command_line

    check.input_size(input_size)  # a bad value fails as a command-line value, before the settings are built
    options.update(model=check.one_or_list(model), input_size=input_size, out=out)
    s = settings(TeacherSettings, "teacher", ctx, config, options)
    check.data_config(name=s.data, root=s.data_root, input_size=s.input_size)
    if s.out is not None:
        check_output_file(s.out)
    check.device(s.device)
    check.models(s.input_size[0], model=s.model)  # an unknown name fails first
    run_teacher(s, console=plain_console(), command=command_line())


@command("train", source="file")
@training_options
def train_cmd(
    ctx: typer.Context,
    file: Path | None = typer.Argument(None, help="The .kd file holding the distiller."),
    teacher: list[str] | None = typer.Option(None, "--teacher", help="Teacher architecture; repeat for several."),
    student: str | None = typer.Option(None, "--student", help="Student architecture."),
    teacher_weights: TeacherWeights = None,
    distiller: DistillerName = None,
    input_size: FileInputSize = None,
    train_subset: TrainSubset = None,
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/train-<distiller>-<student>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    offline_teacher: bool = typer.Option(False, "--offline-teacher",
                                         help="Cache the teacher's outputs once instead of running it per batch "
                                              "(used when augmentation is off)."),
    **options,
) -> None:
    """Distil a teacher into a student with a distiller; resumable (--resume), seeded, and data-parallel under
    torchrun."""
    config = options.pop("config")
    options.update({k: v for k, v in locals().items() if k not in ("ctx", "options", "config")})
    from ..api import TrainSettings, run_folder
    from ..api import train as run_train
    from ..compiler.build import load_distiller
    from ..files import check_output_folder
    from ..training.student import check_run_folder
    from ..training.tracking import command_line

    console = plain_console()
    size, note = (None, None) if input_size is None and config is not None else check.input_size(input_size, file)
    options.update(teacher=check.one_or_list(teacher), teacher_weights=check.one_or_list(teacher_weights))
    s = settings(TrainSettings, "train", ctx, config, options, **({"input_size": size} if size else {}))
    if note:
        console.print(note)
    check.data_config(name=s.data, root=s.data_root, input_size=s.input_size)
    block = load_distiller(s.file, s.distiller)
    out = check_output_folder(s.out or run_folder(block.name, s.student))
    check_run_folder(out, s.resume)
    check.device(s.device)
    check.models(s.input_size[0], teacher=s.teacher, student=s.student)  # before any data is read
    run_train(s.model_copy(update={"out": out}), console=console, command=command_line())
