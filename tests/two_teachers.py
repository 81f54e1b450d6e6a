"""Fixtures of the multi-teacher tests: two small teachers (resnet8 and wrn_16_1, one epoch on digits at 1x8x8),
the command line run in-process with the teacher cache in the test's folder, and the teacher options."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from autokd_dsl.cli import app
from autokd_dsl.data import DataConfig
from autokd_dsl.training.teacher import Recipe, train_teacher

TEACHERS = ("resnet8", "wrn_16_1")
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # user models (`multiteacher_nets:…`)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("teachers")
    cfg = DataConfig(name="digits", input_size=(1, 8, 8))
    return [train_teacher(name, cfg, Recipe(epochs=1, schedule="cosine"), folder / f"{name}.pt",
                          Console(file=io.StringIO())) for name in TEACHERS]


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")

    return invoke


def teacher_args(ckpts, names=TEACHERS) -> list[str]:
    """``--teacher`` for each name, then ``--teacher-weights`` for each checkpoint, in order."""
    return [*(a for name in names for a in ("--teacher", name)),
            *(a for c in ckpts for a in ("--teacher-weights", str(c)))]


def assert_located_errors(cli, cases, after=None) -> None:
    """Each ``(args, message, hint)`` exits 2 with the message and the hint and no traceback (the user models of
    tests/fixtures importable); ``after(args)`` checks what the failed command left."""
    sys.path.insert(0, str(FIXTURES))
    try:
        for args, message, hint in cases:
            code, text = cli(*args)
            assert code == 2 and message in text and hint in text and "Traceback" not in text, (args, text)
            if after is not None:
                after(args)
    finally:
        sys.path.remove(str(FIXTURES))
