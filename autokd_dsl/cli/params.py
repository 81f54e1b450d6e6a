"""Option types shared by the commands, declared once.

Each is an ``Annotated`` type: a command writes ``teacher: Teacher`` (required) or ``epochs: Epochs = None``.
Numbers are checked against their range while the command line is parsed, before any work starts, and a
value outside it is exit 2 with the accepted range (non-finite values are refused too).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, List, Optional

import typer


class Number:
    """A parser for an int or finite float in a range, e.g. ``Number(float, 0, 1, low_open=True)`` for (0, 1].

    >>> Number(int, 1)("3"), Number(float, 0, 1, low_open=True)("1")
    (3, 1.0)
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = kind.__name__.upper()

    def describe(self) -> str:
        if self.high is None:
            return f"{'a whole number' if self.kind is int else 'a number'} {'>' if self.low_open else '>='} " \
                   f"{self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{'a whole number' if self.kind is int else 'a number'} in {left}{self.low}, {self.high}{right}"

    def __call__(self, value):
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                raise ValueError(f"`{value}` is not {self.describe()}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"`{value}` is not {self.describe()}")
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if too_low or too_high:
            raise ValueError(f"{value} is out of range: expected {self.describe()}")
        return number


def _opt(*names: str, help: str, click_type: Number | None = None):
    """A typer option; ``click_type`` is the range-checking parser of a number."""
    if click_type is None:
        return typer.Option(*names, help=help)
    return typer.Option(*names, help=help, parser=click_type, metavar=click_type.__name__)


AT_LEAST_1 = Number(int, 1)
AT_LEAST_0 = Number(int, 0)
POSITIVE = Number(float, 0, low_open=True)

# models and weights
Teacher = Annotated[List[str], _opt("--teacher", help="Teacher architecture: a zoo name, timm:NAME or "
                                                      "package.module:factory; repeat for several teachers "
                                                      "(teacher1, teacher2, … in this order).")]
Student = Annotated[str, _opt("--student", help="Student architecture (as --teacher).")]
TeacherWeights = Annotated[Optional[List[Path]], _opt("--teacher-weights", help="Teacher checkpoint, one per --teacher "
                                                      "in the same order (default: the cached teacher, trained "
                                                      "first when there is none).")]
NumClasses = Annotated[int, _opt("--num-classes", help="Classes of the models' outputs.", click_type=AT_LEAST_1)]
DistillerName = Annotated[Optional[str], _opt("--distiller", help="Which distiller of the file.")]

# data
Data = Annotated[str, _opt("--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, cifar100, "
                                          "imagefolder:PATH).")]
DataRoot = Annotated[Optional[Path], _opt("--data-root", help="Folder holding the dataset files.")]
InputSize = Annotated[str, _opt("--input-size", help="CxHxW of the inputs, C = 1 or 3 (e.g. 3x32x32, 1x16x16).")]
# commands on a `.kd` file: a search's best.kd is used at the size of its search, so its teacher is reused
FileInputSize = Annotated[Optional[str], _opt("--input-size", help="CxHxW of the inputs, C = 1 or 3. Default: "
                                              "the size of the search whose folder holds FILE (a search's "
                                              "best.kd), else 3x32x32.")]
TrainSubset = Annotated[Optional[int], _opt("--train-subset", help="Train on this many class-balanced images "
                                            "(drawn by --seed).", click_type=AT_LEAST_1)]

# training
Epochs = Annotated[Optional[int], _opt("--epochs", help="Default: 240 (RepDistiller), 10 for digits, "
                                       "8 for (fashion-)mnist.", click_type=AT_LEAST_1)]
Lr = Annotated[Optional[float], _opt("--lr", help="Learning rate, > 0. Default 0.05 (0.01 for "
                                     "MobileNet/ShuffleNet).", click_type=POSITIVE)]
BatchSize = Annotated[Optional[int], _opt("--batch-size", help="Images per batch, at least 2. Default 64.",
                                          click_type=Number(int, 2))]
Seed = Annotated[int, _opt("--seed", help="Seeds the data order and the initial weights.", click_type=AT_LEAST_0)]
Device = Annotated[str, _opt("--device", help="cpu, cuda or cuda:N.")]

# outputs
OutFile = Annotated[Optional[Path], _opt("-o", "--out", help="Write here (default: stdout). An existing .kd "
                                         "file or a non-regular file is never overwritten.")]

INPUT_SIZE = "3x32x32"  # the default of every command but `search`, whose proxies run at PROXY_INPUT_SIZE
PROXY_INPUT_SIZE = "3x16x16"

# how a training run executes, and settings from a file
Config = Annotated[Optional[Path], _opt("--config", help="Read the settings from this TOML file (option names as "
                                        "keys); options given here override it.")]
RunDevice = Annotated[str, _opt("--device", help="auto (the GPU when there is one), cpu, cuda, cuda:N or mps.")]
Amp = Annotated[str, _opt("--amp", help="Mixed precision: bf16, fp16 (with a gradient scaler) or off.")]
ChannelsLast = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last",
                                                      help="NHWC memory format (default: on for CUDA).")]
LoaderWorkers = Annotated[Optional[int], _opt("--workers", help="Data-loading processes per rank.",
                                              click_type=AT_LEAST_0)]
Tensorboard = Annotated[bool, typer.Option("--tensorboard/--no-tensorboard", help="Write TensorBoard events.")]
Augment = Annotated[Optional[bool], typer.Option("--augment/--no-augment",
                                                 help="Random crop + flip (default: on for CIFAR and ImageFolder).")]


def given(ctx: typer.Context, values: dict) -> dict:
    """The options the user gave on the command line (not their defaults), to merge over a --config file."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = value
    return out


def settings(model, command: str, ctx: typer.Context, config: Optional[Path], values: dict, **extra):
    """The command's settings object: the --config file, overridden by the options given (and ``extra``)."""
    from ..config_file import settings_from

    return settings_from(model, command, config, {**given(ctx, values), **extra})
