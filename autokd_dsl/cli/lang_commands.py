"""Commands on `.kd` text: check, fmt, ops, library (none imports torch)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import command, each_file, option_value, plain_console


def load_checked(path: Path):
    """Read, parse and check one file (errors carry the file's text for their excerpt)."""
    from ..lang.check import check
    from ..lang.parse import parse_source, read_source

    source = read_source(path)
    return check(parse_source(source), source), source


@command()
def check(files: list[Path] = typer.Argument(..., help=".kd files to check.")) -> None:
    """Parse and kind-check .kd files; exit 2 on any error."""
    counts = {"distiller": 0, "space": 0}

    def one(path: Path) -> None:
        for block in load_checked(path)[0].blocks:
            counts[block.kind] += 1

    if each_file(files, one):
        raise typer.Exit(2)
    typer.echo(f"ok: {len(files)} file{'s' * (len(files) != 1)}, {counts['distiller']} distillers, "
               f"{counts['space']} spaces")


@command()
def fmt(
    files: list[Path] = typer.Argument(..., help=".kd files to rewrite in canonical form."),
    check_only: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if a file would change."),
) -> None:
    """Rewrite .kd files in canonical form (comments kept)."""
    from ..files import replace_text
    from ..lang.printer import print_program

    changed: list[Path] = []

    def one(path: Path) -> None:
        program, source = load_checked(path)
        text = print_program(program)
        if text != source.text:
            if not check_only:
                replace_text(path, text)
            changed.append(path)

    failed = each_file(files, one)
    for path in changed:
        typer.echo(f"{'would reformat' if check_only else 'reformatted'} {path}")
    if failed:
        raise typer.Exit(2)
    if check_only and changed:
        raise typer.Exit(1)


@command()
def ops(role: str | None = typer.Argument(None, help="transform, distance or weight")) -> None:
    """List the ops of the language with their arguments and the kinds they take."""
    from rich.table import Table

    from ..errors import KDError, did_you_mean
    from ..lang.ops import OPS

    roles = sorted({op.role for op in OPS.values()})
    if role is not None and role not in roles:
        raise KDError(f"unknown role `{role}` (command-line value)",
                      hint=did_you_mean(role, roles) or "choose " + ", ".join(roles))
    table = Table("op", "role", "arguments", "takes", "what it does")
    for op in OPS.values():
        if role and op.role != role:
            continue
        args = ", ".join(p.name + ("" if p.default is None else f"={p.default}") for p in op.params)
        notes = ([f"{op.side} side"] if op.side != "both" else []) + op.constructs()
        table.add_row(op.name, op.role + (f" ({'; '.join(notes)})" if notes else ""), args,
                      op.accepts() if op.role != "weight" else "epoch", op.doc)
    plain_console().print(table)


@command("library")
def library_cmd(name: str | None = typer.Argument(None, help="A library distiller to print, e.g. `dkd`.")) -> None:
    """List the published distillers that ship with autokd-dsl, or print one (`autokd-dsl library dkd`)."""
    from ..lang.library import library_entries, library_file

    if name is not None:
        with option_value("NAME"):
            path = library_file(name)
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    from rich.table import Table

    table = Table("name", "paper", "matches (taps: transforms → distance)", "beyond transform → distance")
    for entry in library_entries():
        table.add_row(entry.name, entry.paper, entry.matches, ", ".join(entry.constructs) or "-")
    console = plain_console()
    console.print(table)
    console.print("print one with `autokd-dsl library NAME`; compile it with `autokd-dsl compile` on its file")
