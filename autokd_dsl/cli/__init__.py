"""The `autokd-dsl` command line.

Commands import what they need when they run, so `autokd-dsl check` never imports torch. The commands are
split by area (``lang_commands``: check, fmt, ops, library; ``model_commands``: layers, models;
``build_commands``: compile, expand; ``search_commands``: search; ``train_commands``: teacher, train), their
shared option types live in ``params`` and the one error boundary in ``app``: a user mistake
(:class:`~autokd_dsl.errors.KDError`) prints as ``file:line:col: error: …`` and exits with status 2;
``--debug`` shows the traceback instead.
"""

# the import order is the order of the commands in --help
# isort: off
from . import lang_commands, model_commands, build_commands, search_commands, train_commands  # noqa: F401
from .app import app, main

# isort: on

__all__ = ["app", "main"]
