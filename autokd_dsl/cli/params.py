"""Option types shared by the commands, declared once.

Each is an ``Annotated`` type: a command writes ``teacher: Teacher`` (required) or ``epochs: Epochs = None``.
Numbers are checked against their range (a :class:`~autokd_dsl.options.Number`, the one the settings models
check too) while the command line is parsed, before any work starts, and a value outside it is exit 2 with the
accepted range (non-finite values are refused too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import AT_LEAST_0, AT_LEAST_1, AT_LEAST_2, DENSITY, FRACTION, NON_NEGATIVE, POSITIVE, Number  # noqa: F401


def option(*names: str, help: str, click_type: Number | None = None):
    """A typer option; ``click_type`` is the range-checking parser of a number."""
    if click_type is None:
        return typer.Option(*names, help=help)
    return typer.Option(*names, help=help, parser=click_type, metavar=click_type.__name__)


# models and weights
Teacher = Annotated[list[str], option("--teacher", help="Teacher architecture: a zoo name, timm:NAME or "
                                                      "package.module:factory; repeat for several teachers "
                                                      "(teacher1, teacher2, … in this order).")]
Student = Annotated[str, option("--student", help="Student architecture (as --teacher).")]
TeacherWeights = Annotated[list[Path] | None, option("--teacher-weights", help="Teacher checkpoint, one per --teacher "
                                                      "in the same order (default: the cached teacher, trained "
                                                      "first when there is none).")]
NumClasses = Annotated[int, option("--num-classes", help="Classes of the models' outputs.", click_type=AT_LEAST_1)]
DistillerName = Annotated[str | None, option("--distiller", help="Which distiller of the file.")]

# data
Data = Annotated[str, option("--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, cifar100, "
                                          "imagefolder:PATH).")]
DataRoot = Annotated[Path | None, option("--data-root", help="Folder holding the dataset files.")]
InputSize = Annotated[str, option("--input-size", help="CxHxW of the inputs, C = 1 or 3 (e.g. 3x32x32, 1x16x16).")]
# commands on a `.kd` file: a search's best.kd is used at the size of its search, so its teacher is reused
FileInputSize = Annotated[str | None, option("--input-size", help="CxHxW of the inputs, C = 1 or 3. Default: "
                                              "the size of the search whose folder holds FILE (a search's "
                                              "best.kd), else 3x32x32.")]
TrainSubset = Annotated[int | None, option("--train-subset", help="Train on this many class-balanced images "
                                            "(drawn by --seed).", click_type=AT_LEAST_1)]

# training
Epochs = Annotated[int | None, option("--epochs", help="Default: 240 (RepDistiller), 10 for digits, "
                                       "8 for (fashion-)mnist.", click_type=AT_LEAST_1)]
Lr = Annotated[float | None, option("--lr", help="Learning rate, > 0. Default 0.05 (0.01 for "
                                     "MobileNet/ShuffleNet).", click_type=POSITIVE)]
BatchSize = Annotated[int | None, option("--batch-size", help="Images per batch, at least 2. Default 64.",
                                          click_type=AT_LEAST_2)]
Seed = Annotated[int, option("--seed", help="Seeds the data order and the initial weights.", click_type=AT_LEAST_0)]
Device = Annotated[str, option("--device", help="cpu, cuda or cuda:N.")]

# outputs
OutFile = Annotated[Path | None, option("-o", "--out", help="Write here (default: stdout). An existing .kd "
                                         "file or a non-regular file is never overwritten.")]

INPUT_SIZE = "3x32x32"  # the default of every command but `search`, whose proxies run at PROXY_INPUT_SIZE
PROXY_INPUT_SIZE = "3x16x16"

# how a training run executes, and settings from a file
Config = Annotated[Path | None, option("--config", help="Read the settings from this TOML file (option names as "
                                        "keys); options given here override it.")]
RunDevice = Annotated[str, option("--device", help="auto (the GPU when there is one), cpu, cuda, cuda:N or mps.")]
Amp = Annotated[str, option("--amp", help="Mixed precision: bf16, fp16 (with a gradient scaler) or off.")]
ChannelsLast = Annotated[bool | None, typer.Option("--channels-last/--no-channels-last",
                                                      help="NHWC memory format (default: on for CUDA).")]
LoaderWorkers = Annotated[int | None, option("--workers", help="Data-loading processes per rank.",
                                              click_type=AT_LEAST_0)]
Tensorboard = Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Write TensorBoard events.")]
Augment = Annotated[bool | None, typer.Option("--augment/--no-augment",
                                                 help="Random crop + flip (default: on for CIFAR and ImageFolder).")]


def given(ctx: typer.Context, values: dict) -> dict:
    """The options the user gave on the command line (not their defaults), to merge over a --config file."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = value
    return out


def settings(model, command: str, ctx: typer.Context, config: Path | None, values: dict, **extra):
    """The command's settings object: the --config file, overridden by the options given (and ``extra``)."""
    from ..config_file import settings_from

    return settings_from(model, command, config, {**given(ctx, values), **extra}, origin="command-line value")
