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
    from .check import check
    from .errors import SourceText
    from .parse import parse_file

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
    from .printer import print_program

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

    from .ops import OPS

    table = Table("op", "role", "arguments", "takes", "what it does")
    for op in OPS.values():
        if role and op.role != role:
            continue
        args = ", ".join(p.name + ("" if p.default is None else f"={p.default}") for p in op.params)
        table.add_row(op.name, op.role + (" (student side)" if op.side == "student" else ""), args,
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

    from .models import create_model
    from .options import parse_input_size
    from .taps import aliases, list_layers

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

    from .emit import emit
    from .errors import SourceText
    from .models import create_model
    from .options import parse_input_size
    from .runtime import compile_distiller, load_distiller

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
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    typer.echo(f"wrote {out}: distiller `{block.name}`, terms {', '.join(loss.term_names)}, "
               f"{sum(p.numel() for p in loss.parameters())} connector parameters", err=True)


def main() -> None:
    try:
        app()
    except KDError as err:  # raised while typer parsed options (callbacks)
        typer.echo(err.render(), err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
