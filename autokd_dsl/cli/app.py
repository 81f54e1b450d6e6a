"""The typer application and its one error boundary.

Every command is registered with :func:`command`. A user mistake (:class:`~autokd_dsl.errors.KDError`)
raised anywhere below a command prints as ``file:line:col: error: …`` and exits with status 2; the boundary
adds the source text of the command's input file when the error points into it but carries no text yet.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from ..api import plain_console  # noqa: F401  (the commands' log console)
from ..errors import KDError

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


def report(err: KDError) -> None:
    """Print one user error (or re-raise it under ``--debug``)."""
    if _state["debug"]:
        raise err
    typer.echo(err.render(), err=True)


def _with_source(err: KDError, path: Path | None) -> KDError:
    """Attach the text of ``path`` to an error that points into it (a span) but carries no text."""
    if path is None or err.source is not None or err.span is None:
        return err
    from ..lang.parse import read_source

    try:
        return err.located(read_source(path))
    except KDError:
        return err


def command(name: str | None = None, *, source: str | None = None) -> Callable:
    """Register a command behind the error boundary; ``source`` names the parameter holding its `.kd` file."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except KDError as err:
                report(_with_source(err, kwargs.get(source) if source else None))
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                typer.echo("interrupted", err=True)
                raise typer.Exit(130) from None

        app.command(name)(wrapper)
        return fn

    return register


@contextlib.contextmanager
def option_value(option: str):
    """Errors raised inside name the command-line option whose value they are about (``--data``)."""
    try:
        yield
    except KDError as err:
        if err.span is None and "command-line value" not in err.message:
            err.message = f"{option}: {err.message} (command-line value)"
        raise


def each_file(files: list[Path], action: Callable[[Path], None]) -> int:
    """Run ``action`` on every file, report every error, and return how many files failed."""
    failed = 0
    for path in files:
        try:
            action(path)
        except KDError as err:
            report(_with_source(err, path))
            failed += 1
    return failed


def _usage_errors() -> tuple[type, ...]:
    """The command-line parser's own error classes (click's, or the copy of click that typer ships)."""
    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def run(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return its exit status.

    Every user error, the parser's included, is printed as one ``error: …`` message: exit status 2.
    """
    from typer.main import get_command

    _state["debug"] = False
    try:
        status = get_command(app).main(args=argv, prog_name="autokd-dsl", standalone_mode=False)
    except KDError as err:  # raised while options were parsed (callbacks), or re-raised under --debug
        if _state["debug"]:
            raise
        typer.echo(err.render(), err=True)
        return 2
    except _usage_errors() as err:
        message = err.format_message().replace("Value error, ", "")
        if not message.strip():  # no command given: the help was shown
            return err.exit_code
        command = getattr(getattr(err, "ctx", None), "command_path", "autokd-dsl")
        typer.echo(f"error: {message} (command-line value)\nhint: see `{command} --help`", err=True)
        return err.exit_code
    except typer.Abort:
        typer.echo("interrupted", err=True)
        return 130
    return status if isinstance(status, int) else 0


def main() -> None:
    """The `autokd-dsl` entry point."""
    sys.exit(run())
