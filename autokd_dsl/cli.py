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
) -> None:
    """Apply one term at several layers, with training-free weights set on one batch."""
    import torch

    from .compiler.build import load_distiller
    from .data import DataConfig, load_data
    from .errors import SourceText
    from .multilayer import expand_layers, pick_term
    from .options import parse_input_size
    from .training.student import make_student

    console = _plain_console(stderr=True)
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
    try:
        result, info = expand_layers(block, points, teacher_net, student_net, bundle.train.images[pick],
                                     bundle.train.labels[pick], term, teacher_name=teacher, student_name=student)
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
    space_file: Path = typer.Argument(..., help="The .kd file holding a `space` block."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher model name."),
    student: str = typer.Option(..., "--student", help="Student model name."),
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
    offline: bool = typer.Option(True, "--offline-teacher/--live-teacher",
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
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N: where candidates train."),
    space_name: Optional[str] = typer.Option(None, "--space", help="Which space of the file."),
    out: Path = typer.Option(Path("runs/search"), "--out", help="Output folder (store, best.kd, report)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search stored in --out."),
    final_epochs: int = typer.Option(0, "--final-epochs", help="Retrain the top 3 and every baseline this long "
                                                              "(test accuracy)."),
    final_seeds: int = typer.Option(3, "--final-seeds", help="Seeds for the final retraining."),
    baselines: str = typer.Option("kd,fitnet", "--baselines", help="Library distillers scored under the same proxy "
                                                                 "next to the CE-only baseline (comma-separated)."),
    fidelity: Optional[str] = typer.Option(None, "--fidelity", help="Epochs per rung, e.g. 2,6,18: every candidate "
                                                                   "at the first, the best 1/eta promoted (ASHA)."),
    eta: int = typer.Option(3, "--eta", help="Promotion rate of --fidelity: the best 1/eta go on."),
) -> None:
    """Search a space of distillers with MCTS (or random / evolution) and write the best as best.kd."""
    from rich.console import Console

    from .data import DataConfig, load_data
    from .options import parse_input_size
    from .search.evaluate import ProxySettings
    from .search.run import SearchConfig, load_baselines, load_space, parse_rungs
    from .search.run import search as run

    console = Console(stderr=True)
    size = parse_input_size(input_size)
    if budget < 1 or epochs < 1 or not 0 < subset <= 1 or workers < 1 or final_epochs < 0 or final_seeds < 1:
        raise KDError("--budget, --epochs, --workers and --final-seeds must be at least 1, --final-epochs at least 0, "
                      "and --subset in (0, 1]")
    if rollout not in ("mast", "random"):
        raise KDError(f"unknown rollout policy `{rollout}`", hint="choose mast or random")
    check_device(device)
    rungs = parse_rungs(fidelity, eta)
    from .search.executor import check_executor

    check_executor(executor, ray_address, device, cpus_per_candidate, gpus_per_candidate)
    load_space(str(space_file), space_name)  # a bad space fails before any training
    load_baselines(baselines.split(","))
    proxy = ProxySettings(epochs=epochs, subset=subset, entropy_sampling=entropy, offline_teacher=offline,
                          sparse_density=sparse, seed=seed)
    cfg = SearchConfig(space_file=str(space_file), space_name=space_name, teacher=teacher, student=student,
                       teacher_weights=str(teacher_weights) if teacher_weights else None, data=data,
                       data_root=str(data_root) if data_root else None, input_size=size, budget=budget,
                       train_subset=train_subset,
                       strategy=strategy, c=c, rollout=rollout, workers=workers, executor=executor,
                       ray_address=ray_address, cpus_per_candidate=cpus_per_candidate,
                       gpus_per_candidate=gpus_per_candidate, seed=seed, proxy=proxy, device=device,
                       final_epochs=final_epochs, final_seeds=final_seeds,
                       baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()), fidelity=rungs, eta=eta)
    data_cfg = DataConfig(name=data, root=data_root, input_size=size, seed=seed, augment=False,
                          train_subset=train_subset)
    bundle = load_data(data_cfg)
    # the teacher's data setting is the one `train` and `teacher` use, so they share the cached teacher
    teacher_cfg = DataConfig(name=data, root=data_root, input_size=size)
    teacher_net = obtain_teacher(teacher, teacher_weights, teacher_cfg, bundle.num_classes, console)
    summary = run(cfg, out, resume, teacher_net, bundle, console)
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
    model: str = typer.Argument(..., help="Teacher architecture: a zoo name, timm:NAME or package.module:factory."),
    data: str = typer.Option(..., "--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, cifar100, "
                                                 "imagefolder:PATH)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    input_size: str = typer.Option("3x32x32", "--input-size", help="CxHxW; 1x16x16 for fast CPU proxies."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: 240 (RepDistiller), 10 for digits, "
                                                                "8 for (fashion-)mnist."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 0.05 (0.01 for MobileNet/ShuffleNet)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 64."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the checkpoint here (default: the teacher "
                                                           "cache, reused by `train` and `search`)."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda to train the teacher on a GPU."),
) -> None:
    """Train a teacher with cross-entropy and save a checked checkpoint (or cache it)."""
    from .data import DataConfig
    from .models import create_model
    from .options import parse_input_size
    from .training.teacher import default_recipe, teacher_for, train_teacher

    console = _plain_console()
    data_cfg = DataConfig(name=data, root=data_root, input_size=parse_input_size(input_size))
    create_model(model, num_classes=10, in_chans=data_cfg.input_size[0])  # an unknown name fails first
    recipe = default_recipe(model, data_cfg.name, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    if out is None:
        path = teacher_for(model, data_cfg, recipe, cache_dir(), console, device=device)
    else:
        path = train_teacher(model, data_cfg, recipe, out, console, device=device)
    console.print(f"teacher checkpoint: {path}")


@app.command("train")
@user_errors
def train_cmd(
    file: Path = typer.Argument(..., help="The .kd file holding the distiller."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher architecture."),
    student: str = typer.Option(..., "--student", help="Student architecture."),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights",
                                                   help="Teacher checkpoint (default: the cached teacher, "
                                                        "trained first when there is none)."),
    distiller: Optional[str] = typer.Option(None, "--distiller", help="Which distiller of the file."),
    data: str = typer.Option(..., "--data", help="Dataset (digits, fashion-mnist, mnist, cifar10, cifar100, "
                                                 "imagefolder:PATH)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the dataset files."),
    input_size: str = typer.Option("3x32x32", "--input-size", help="CxHxW; 1x16x16 for fast CPU proxies."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: 240 (RepDistiller), 10 for digits, "
                                                                "8 for (fashion-)mnist."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 0.05 (0.01 for MobileNet/ShuffleNet)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 64."),
    train_subset: Optional[int] = typer.Option(None, "--train-subset",
                                               help="Train on this many class-balanced images (drawn by --seed)."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/train-<distiller>-<student>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    offline_teacher: bool = typer.Option(False, "--offline-teacher",
                                         help="Cache the teacher's outputs once instead of running it per batch "
                                              "(needs augmentation off)."),
) -> None:
    """Distil a teacher into a student with a distiller; resumable (--resume), seeded and reproducible."""
    from .compiler.build import load_distiller
    from .data import DataConfig, describe, load_data
    from .errors import SourceText
    from .models import create_model
    from .options import parse_input_size
    from .training.student import TrainConfig, make_student, subset_train, train
    from .training.teacher import default_recipe

    console = _plain_console()
    block = load_distiller(file, distiller)
    data_cfg = DataConfig(name=data, root=data_root, input_size=parse_input_size(input_size))
    in_chans = data_cfg.input_size[0]
    for name in (teacher, student):  # unknown names fail before any data is read or teacher trained
        create_model(name, num_classes=10, in_chans=in_chans)
    defaults = default_recipe(student, data_cfg.name, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    cfg = TrainConfig(**defaults.model_dump(), offline_teacher=offline_teacher)
    bundle = load_data(data_cfg)
    if train_subset is not None:
        bundle = subset_train(bundle, train_subset, seed)
    teacher_net = obtain_teacher(teacher, teacher_weights, data_cfg, bundle.num_classes, console)
    student_net = make_student(student, bundle.num_classes, in_chans, seed)
    out = out or Path("runs") / f"train-{block.name}-{_slug(student)}"
    t_acc = (getattr(teacher_net, "kd_teacher", None) or {}).get("test_accuracy")
    console.print(f"distiller {block.name} ({file}): {teacher}"
                  + (f" (test {t_acc:.2%})" if isinstance(t_acc, float) else "")
                  + f" -> {student}; {describe(bundle)}"
                  + (f" (class-balanced subset, seed {seed})" if train_subset is not None else "")
                  + f"; {cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, "
                  f"{cfg.schedule} schedule, seed {cfg.seed}; run folder {out}")
    try:
        train(block, teacher_net, student_net, bundle, cfg, out, resume, console,
              cache_root=cache_dir().parent / "teacher-outputs")
    except KDError as err:
        raise err.located(SourceText(str(file), file.read_text(encoding="utf-8"))) if err.span else err


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
