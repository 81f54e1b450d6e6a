"""The `autokd-dsl` command line.

Commands import what they need when they run, so `autokd-dsl check` never imports torch. A user mistake
(:class:`~autokd_dsl.errors.KDError`) prints as ``file:line:col: error: …`` and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import KDError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Write, check, compile and search knowledge-distillation losses.",
)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors.")) -> None:
    _state["debug"] = debug


def user_errors(command):
    """Turn a KDError into its rendered message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KDError as err:
            if _state["debug"]:
                raise
            typer.echo(err.render(), err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def load_checked(path: Path):
    """Read, parse and check one file (errors carry the file's text for their excerpt)."""
    from .errors import SourceText
    from .lang.check import check
    from .lang.parse import parse_file

    program = parse_file(path)
    return check(program, SourceText(str(path), Path(path).read_text(encoding="utf-8")))


def _each_file(files: List[Path], action) -> int:
    """Run ``action`` on every file, report every error, and return how many files failed."""
    failed = 0
    for path in files:
        try:
            action(path)
        except KDError as err:
            if _state["debug"]:
                raise
            typer.echo(err.render(), err=True)
            failed += 1
    return failed


@app.command()
@user_errors
def check(files: List[Path] = typer.Argument(..., help=".kd files to check.")) -> None:
    """Parse and kind-check .kd files; exit 2 on any error."""
    counts = {"distiller": 0, "space": 0}

    def one(path: Path) -> None:
        for block in load_checked(path).blocks:
            counts[block.kind] += 1

    failed = _each_file(files, one)
    if failed:
        raise typer.Exit(2)
    typer.echo(f"ok: {len(files)} file{'s' * (len(files) != 1)}, {counts['distiller']} distillers, "
               f"{counts['space']} spaces")


@app.command()
@user_errors
def fmt(
    files: List[Path] = typer.Argument(..., help=".kd files to rewrite in canonical form."),
    check_only: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a file would change."),
) -> None:
    """Rewrite .kd files in canonical form (comments kept)."""
    from .lang.printer import print_program

    changed: list[Path] = []

    def one(path: Path) -> None:
        text = print_program(load_checked(path))
        if text != path.read_text(encoding="utf-8"):
            changed.append(path)
            if not check_only:
                path.write_text(text, encoding="utf-8")

    failed = _each_file(files, one)
    for path in changed:
        typer.echo(f"{'would reformat' if check_only else 'reformatted'} {path}")
    if failed:
        raise typer.Exit(2)
    if check_only and changed:
        raise typer.Exit(1)


@app.command()
@user_errors
def ops(role: Optional[str] = typer.Argument(None, help="transform, distance or weight")) -> None:
    """List the ops of the language with their arguments and the kinds they take."""
    from rich.console import Console
    from rich.table import Table

    from .lang.ops import OPS

    table = Table("op", "role", "arguments", "takes", "what it does")
    for op in OPS.values():
        if role and op.role != role:
            continue
        args = ", ".join(p.name + ("" if p.default is None else f"={p.default}") for p in op.params)
        notes = ([f"{op.side} side"] if op.side != "both" else []) + op.constructs()
        table.add_row(op.name, op.role + (f" ({'; '.join(notes)})" if notes else ""), args,
                      op.accepts() if op.role != "weight" else "epoch", op.doc)
    Console().print(table)


@app.command()
@user_errors
def layers(
    model: str = typer.Argument(..., help="A zoo name, timm:NAME or package.module:factory."),
    input_size: str = typer.Option("3x32x32", "--input-size", help="CxHxW of the inputs."),
    num_classes: int = typer.Option(100, "--num-classes"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List a model's tap points: module paths, output shapes, call counts and aliases."""
    import json

    from .compiler.taps import aliases, list_layers
    from .models import create_model
    from .options import parse_input_size

    size = parse_input_size(input_size)
    net = create_model(model, num_classes=num_classes, in_chans=size[0])
    rows = list_layers(net, size)
    if as_json:
        payload = {"model": model, "input_size": list(size), "aliases": aliases(net),
                   "layers": [{"name": r.name, "type": r.type, "shape": list(r.shape) if r.shape else None,
                               "calls": r.calls, "aliases": list(r.aliases)} for r in rows]}
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("tap", "module", "output (per sample)", "calls", "aliases", title=f"{model} at {input_size}")
    for r in rows:
        shape = "×".join(map(str, r.shape)) if r.shape else "-"
        table.add_row(r.name, r.type, shape, str(r.calls), ", ".join(r.aliases))
    Console().print(table)
    typer.echo("aliases: " + ", ".join(f"{a} = {s}" for a, s in aliases(net).items()))


@app.command("compile")
@user_errors
def compile_cmd(
    file: Path = typer.Argument(..., help="The .kd file holding the distiller."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher model name."),
    student: str = typer.Option(..., "--student", help="Student model name."),
    distiller: Optional[str] = typer.Option(None, "--distiller", help="Which distiller of the file."),
    input_size: str = typer.Option("3x32x32", "--input-size", help="CxHxW of the inputs."),
    num_classes: int = typer.Option(100, "--num-classes"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the module here (default: stdout)."),
) -> None:
    """Compile a distiller into a standalone PyTorch loss module (imports only torch)."""
    import torch

    from .compiler.build import compile_distiller, load_distiller
    from .compiler.emit import emit
    from .errors import SourceText
    from .models import create_model
    from .options import parse_input_size

    size = parse_input_size(input_size)
    block = load_distiller(file, distiller)
    torch.manual_seed(0)
    t_net = create_model(teacher, num_classes=num_classes, in_chans=size[0])
    s_net = create_model(student, num_classes=num_classes, in_chans=size[0])
    try:
        loss = compile_distiller(block, t_net, s_net, size, teacher_name=teacher, student_name=student)
    except KDError as err:
        raise err.located(SourceText(str(file), file.read_text(encoding="utf-8")))
    text = emit(loss, teacher=teacher, student=student, input_size=size, num_classes=num_classes)
    if out is None:
        typer.echo(text, nl=False)
        return
    _write_text(out, text)
    typer.echo(f"wrote {out}: distiller `{block.name}`, terms {', '.join(loss.term_names)}, "
               f"{sum(p.numel() for p in loss.parameters())} connector parameters", err=True)


@app.command()
@user_errors
def expand(
    file: Path = typer.Argument(..., help="The .kd file holding the distiller (e.g. a search's best.kd)."),
    layers_: str = typer.Option(..., "--layers", help="Comma-separated tap points, e.g. stage1,stage2,stage3."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher architecture."),
    student: str = typer.Option(..., "--student", help="Student architecture."),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights",
                                                   help="Teacher checkpoint (default: the cached teacher, "
                                                        "trained first when there is none)."),
    term: Optional[str] = typer.Option(None, "--term", help="Which term to expand (default: the first one "
                                                            "tapped at a single feature point)."),
    distiller: Optional[str] = typer.Option(None, "--distiller", help="Which distiller of the file."),
    data: str = typer.Option("digits", "--data", help="Dataset the batch comes from."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    input_size: str = typer.Option("3x16x16", "--input-size", help="CxHxW, as in the search or training."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images in the one batch that sets the weights."),
    seed: int = typer.Option(0, "--seed", help="Seeds the batch and the untrained student."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the distiller here (default: stdout)."),
    device: str = typer.Option("cpu", "--device", help="Where the batch runs: cpu, cuda, cuda:N or mps."),
) -> None:
    """Apply one term at several layers, with training-free weights set on one batch."""
    import torch

    from .compiler.build import load_distiller
    from .data import DataConfig, load_data
    from .errors import SourceText
    from .multilayer import expand_layers, pick_term
    from .options import parse_input_size
    from .training.runtime import resolve_device
    from .training.student import make_student

    console = _plain_console(stderr=True)
    resolve_device(device)  # a device this machine lacks fails first
    block = load_distiller(file, distiller)
    points = [p.strip() for p in layers_.split(",") if p.strip()]
    if batch_size < 2:
        raise KDError("--batch-size must be at least 2")
    try:  # a bad term or layer list fails before any teacher is loaded or trained
        pick_term(block, points, term)
    except KDError as err:
        raise err.located(SourceText(str(file), file.read_text(encoding="utf-8")))
    data_cfg = DataConfig(name=data, root=data_root, input_size=parse_input_size(input_size))
    bundle = load_data(data_cfg)
    teacher_net = obtain_teacher(teacher, teacher_weights, data_cfg, bundle.num_classes, console)
    student_net = make_student(student, bundle.num_classes, data_cfg.input_size[0], seed)
    pick = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    torch.manual_seed(seed)  # learnable connectors start from the same weights each time
    dev = resolve_device(device)
    teacher_net.to(dev)
    student_net.to(dev)
    try:
        result, info = expand_layers(block, points, teacher_net, student_net, bundle.train.images[pick].to(dev),
                                     bundle.train.labels[pick].to(dev), term, teacher_name=teacher,
                                     student_name=student)
    except KDError as err:
        raise err.located(SourceText(str(file), file.read_text(encoding="utf-8")))
    from .lang.printer import print_block

    text = print_block(result)
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write_text(out, text)
    console.print(f"term `{info['term']}`: unweighted loss {info['original']:.4g}; per layer "
                  + ", ".join(f"{k} {v:.4g}" for k, v in info["layers"].items())
                  + (f"; wrote {out}" if out is not None else ""))


def _given(ctx: typer.Context, values: dict) -> dict:
    """The options the user gave on the command line (not their defaults), for merging over --config."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = value
    return out


def _settings(model, command_name: str, ctx: typer.Context, config: Optional[Path], values: dict):
    from .config_file import settings_from

    return settings_from(model, command_name, config, _given(ctx, values))


CONFIG_HELP = "Read the settings from this TOML file (option names as keys); flags given here override it."
DEVICE_HELP = "auto (the GPU when there is one), cpu, cuda, cuda:N or mps."
AMP_HELP = "Mixed precision: bf16, fp16 (with a gradient scaler) or off."


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a killed command never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def check_device(device: str) -> None:
    """A clear error for a device this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise KDError(f"unknown device `{device}`", hint="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KDError(f"device `{device}` is not available here", hint="this machine has no GPU: use --device cpu")


def cache_dir() -> Path:
    """Where teachers are cached: $AUTOKD_CACHE, else the user cache folder."""
    import os

    return Path(os.environ.get("AUTOKD_CACHE", "~/.cache/autokd-dsl")).expanduser() / "teachers"


def obtain_teacher(arch: str, weights: Optional[Path], data_cfg, num_classes: int, console):
    """The teacher from --teacher-weights, or the cached one (trained and cached on first use)."""
    from .training.teacher import default_recipe, load_teacher, teacher_for

    path = weights if weights is not None else teacher_for(arch, data_cfg, default_recipe(arch, data_cfg.name),
                                                           cache_dir(), console)
    return load_teacher(path, arch, num_classes, data_cfg.input_size)


@app.command()
@user_errors
def search(
    ctx: typer.Context,
    space_file: Optional[Path] = typer.Argument(None, help="The .kd file holding a `space` block."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher model name."),
    student: Optional[str] = typer.Option(None, "--student", help="Student model name."),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights", help="Teacher checkpoint."),
    data: str = typer.Option("digits", "--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, ...)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root"),
    input_size: str = typer.Option("3x16x16", "--input-size", help="CxHxW; proxy searches run small."),
    train_subset: Optional[int] = typer.Option(None, "--train-subset",
                                               help="Low-data runs: a class-balanced subset of N training images."),
    budget: int = typer.Option(48, "--budget", help="Candidates to evaluate."),
    epochs: int = typer.Option(6, "--epochs", help="Proxy training epochs per candidate."),
    subset: float = typer.Option(1.0, "--subset", help="Fraction of the training split used by the proxy "
                                                     "(below 1: drawn by teacher entropy)."),
    entropy: bool = typer.Option(True, "--entropy/--uniform", help="Draw the subset by teacher entropy."),
    offline_teacher: bool = typer.Option(True, "--offline-teacher/--live-teacher",
                                         help="Cache teacher outputs once (default) or run the teacher per batch."),
    sparse: Optional[float] = typer.Option(None, "--sparse", help="Train a sparse student at this density."),
    strategy: str = typer.Option("mcts", "--strategy", help="mcts, random or evolution."),
    c: float = typer.Option(0.7, "--c", help="UCT exploration constant (on min-max normalised rewards)."),
    rollout: str = typer.Option("mast", "--rollout", help="MCTS rollout policy: mast (guided by the mean reward "
                                                        "of each choice) or random (uniform)."),
    workers: int = typer.Option(1, "--workers", help="Evaluate this many candidates at once (processes, or "
                                                     "Ray tasks in flight with --executor ray)."),
    executor: str = typer.Option("local", "--executor", help="local (in-process or a process pool) or ray "
                                                            "(the `ray` extra; a local instance or a cluster)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: auto (the cluster "
                                              "this machine joined) or HOST:PORT; default: start a local instance."),
    cpus_per_candidate: float = typer.Option(1.0, "--cpus-per-candidate", help="Ray: CPUs each candidate holds."),
    gpus_per_candidate: float = typer.Option(0.0, "--gpus-per-candidate", help="Ray: GPUs each candidate holds "
                                             "(fractional: 0.25 packs four candidates on one device)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps: where candidates train."),
    space: Optional[str] = typer.Option(None, "--space", help="Which space of the file."),
    out: Path = typer.Option(Path("runs/search"), "--out", help="Output folder (store, best.kd, report)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search stored in --out."),
    final_epochs: int = typer.Option(0, "--final-epochs", help="Retrain the top 3 and KD this long (test accuracy)."),
    final_seeds: int = typer.Option(3, "--final-seeds", help="Seeds for the final retraining."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard",
                                     help="Log each candidate's reward and the best so far for TensorBoard."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Search a space of distillers with MCTS (or random / evolution) and write the best as best.kd."""
    from .api import SearchSettings
    from .api import search as run_search
    from .training.tracking import command_line

    values = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    settings = _settings(SearchSettings, "search", ctx, config, values)
    summary = run_search(settings, console=_plain_console(stderr=True), command=command_line())
    if summary["best"] is None:
        raise typer.Exit(1)


def _plain_console(stderr: bool = False):
    """A rich console for logs: no markup in paths, no wrapping of long lines when piped."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, markup=False, highlight=False)


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


@app.command("teacher")
@user_errors
def teacher_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="Teacher architecture: a zoo name, timm:NAME or "
                                                     "package.module:factory."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, "
                                                            "cifar100, imagefolder:PATH)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    input_size: str = typer.Option("3x32x32", "--input-size", help="CxHxW; 1x16x16 for fast CPU proxies."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment",
                                           help="Random crop + flip (default: on for CIFAR and ImageFolder)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: 240 (RepDistiller), 10 for digits, "
                                                                "8 for (fashion-)mnist."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 0.05 (0.01 for MobileNet/ShuffleNet)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 64 (per rank under torchrun)."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the checkpoint here (default: the teacher "
                                                           "cache, reused by `train` and `search`)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    amp: str = typer.Option("off", "--amp", help=AMP_HELP),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="NHWC memory format (default: on for CUDA)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loading processes per rank."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Write TensorBoard events."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Train a teacher with cross-entropy and save a checked checkpoint (or cache it); runs under torchrun."""
    from .api import TeacherSettings
    from .api import teacher as run_teacher
    from .training.tracking import command_line

    values = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    run_teacher(_settings(TeacherSettings, "teacher", ctx, config, values), command=command_line())


@app.command("train")
@user_errors
def train_cmd(
    ctx: typer.Context,
    file: Optional[Path] = typer.Argument(None, help="The .kd file holding the distiller."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher architecture."),
    student: Optional[str] = typer.Option(None, "--student", help="Student architecture."),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights",
                                                   help="Teacher checkpoint (default: the cached teacher, "
                                                        "trained first when there is none)."),
    distiller: Optional[str] = typer.Option(None, "--distiller", help="Which distiller of the file."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, "
                                                            "cifar100, imagefolder:PATH)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    input_size: str = typer.Option("3x32x32", "--input-size", help="CxHxW; 1x16x16 for fast CPU proxies."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment",
                                           help="Random crop + flip (default: on for CIFAR and ImageFolder)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: 240 (RepDistiller), 10 for digits, "
                                                                "8 for (fashion-)mnist."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 0.05 (0.01 for MobileNet/ShuffleNet)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 64 (per rank under torchrun)."),
    train_subset: Optional[int] = typer.Option(None, "--train-subset",
                                               help="Train on this many class-balanced images (drawn by --seed)."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/train-<distiller>-<student>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    offline_teacher: bool = typer.Option(False, "--offline-teacher",
                                         help="Cache the teacher's outputs once instead of running it per batch "
                                              "(used when augmentation is off)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    amp: str = typer.Option("off", "--amp", help=AMP_HELP),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="NHWC memory format (default: on for CUDA)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loading processes per rank."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Write TensorBoard events."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Distil a teacher into a student with a distiller; resumable (--resume), seeded, and data-parallel under
    torchrun."""
    from .api import TrainSettings
    from .api import train as run_train
    from .training.tracking import command_line

    values = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    run_train(_settings(TrainSettings, "train", ctx, config, values), command=command_line())


@app.command("library")
@user_errors
def library_cmd(name: Optional[str] = typer.Argument(None, help="A library distiller to print, e.g. `dkd`.")) -> None:
    """List the published distillers that ship with autokd-dsl, or print one (`autokd-dsl library dkd`)."""
    from .lang.library import library_entries, library_file

    if name is not None:
        typer.echo(library_file(name).read_text(encoding="utf-8"), nl=False)
        return
    from rich.table import Table

    table = Table("name", "paper", "matches (taps: transforms → distance)", "beyond transform → distance")
    for entry in library_entries():
        table.add_row(entry.name, entry.paper, entry.matches, ", ".join(entry.constructs) or "-")
    console = _plain_console()
    console.print(table)
    console.print("print one with `autokd-dsl library NAME`; compile it with `autokd-dsl compile` on its file")


@app.command("models")
@user_errors
def models_cmd(
    num_classes: int = typer.Option(100, "--num-classes", help="Classes of the parameter count."),
) -> None:
    """List the model zoo: names, families and parameter counts (timm:NAME and package.module:factory work too)."""
    from rich.table import Table

    from .models import ZOO, count_parameters, create_model, list_models

    table = Table("model", "family", f"params ({num_classes} classes)")
    for name in list_models():
        params = count_parameters(create_model(name, num_classes=num_classes))
        table.add_row(name, ZOO[name][0], f"{params / 1e6:.2f}M")
    console = _plain_console()
    console.print(table)
    console.print("also: timm:NAME (any timm model, random weights) and package.module:factory (your own)")


def main() -> None:
    try:
        app()
    except KDError as err:  # raised while typer parsed options (callbacks), or re-raised under --debug
        if _state["debug"]:
            raise
        typer.echo(err.render(), err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
