"""The bad-input table: every class of user mistake, for every command.

One row per case: the command line, the exit status, the message, where it points (``FILE:LINE:COL`` in a
`.kd` file, or ``(command-line value)``), and the files around it. For every row:

- the command ends with that exit status (2 for a user error) and no traceback;
- the message appears on one line together with its location;
- every file that existed before (the row's sources, links, checkpoints, stores) is byte-identical after, and a
  failing command leaves nothing new behind (no ``NAME.tmp``, no store, no run folder);
- no row trains anything: the table runs with the teacher training, the distillation and the search replaced
  by a function that fails the row, so each error must be found before work starts.

Most rows run in-process through :func:`autokd_dsl.cli.app.run`; rows marked ``subprocess`` run the real
entry point with a timeout (inputs that used to hang: ``/dev/zero``, a FIFO).
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autokd_dsl.cli.app import run
from autokd_dsl.errors import KDError

ROOT = Path(__file__).resolve().parents[1]
CLI = "(command-line value)"
KD = (ROOT / "library" / "kd.kd").read_text(encoding="utf-8")
SPACE = "space s:\n    ce: logits ~ labels -> ce -> 1\n    kd: logits -> softmax(4) -> (kl | js) -> (1 | 2)\n"
FEAT = "distiller f:\n    ce: logits ~ labels -> ce -> 1\n    feat: stage2 -> mse -> 1\n"


def weight(expr: str, params: str = "beta = 2.5, t = 0") -> str:
    """A distiller whose one weight is ``expr``; the weight starts at line 2, column 22."""
    return f"distiller w({params}):\n    logits -> mse -> {expr}\n"


def one_term(term: str) -> str:
    return f"distiller d:\n    {term}\n"


# ---- files a row starts from -------------------------------------------------------------------------------
# A value is the file's text or bytes, or a function that makes the entry at the given path.


def fifo(path: Path) -> None:
    os.mkfifo(path)


def folder(path: Path) -> None:
    path.mkdir()


def read_only_folder(path: Path) -> None:
    path.mkdir()
    path.chmod(0o555)


def read_only_file(text: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_text(text, encoding="utf-8")
        path.chmod(0o444)
    return make


def link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def teacher_weights(**changes) -> Callable[[Path], None]:
    """A checkpoint in the teacher format whose fields were edited by hand (``field=...``; ``None`` drops it)."""
    from autokd_dsl.training.teacher import FORMAT

    def make(path: Path) -> None:
        ckpt = {"format": FORMAT, "architecture": "resnet8", "num_classes": 10, "input_size": [1, 8, 8],
                "state_dict": {"w": torch.zeros(1)}, "content_hash": "0" * 16}
        ckpt.update(changes)
        torch.save({k: v for k, v in ckpt.items() if v is not None}, path)
    return make


def run_checkpoint(**changes) -> Callable[[Path], None]:
    """A run folder whose checkpoint was edited by hand."""
    from autokd_dsl.training.student import FORMAT

    def make(path: Path) -> None:
        path.mkdir()
        ckpt = {"format": FORMAT, "epoch": 1, "settings": {}, "student": {}, "connectors": {}, "optimizer": {},
                "scheduler": {}, "rng": {}, "history": [], "elapsed": 0.0}
        ckpt.update(changes)
        torch.save({k: v for k, v in ckpt.items() if v is not None}, path / "checkpoint.pt")
        (path / "metrics.jsonl").write_text("", encoding="utf-8")
    return make


def search_folder(path: Path) -> None:
    """A folder holding a search store of this program."""
    from autokd_dsl.search.store import Store

    path.mkdir()
    Store(path / "search.sqlite").close()
    (path / "best.kd").write_text(KD, encoding="utf-8")


def foreign_database(path: Path) -> None:
    """Another program's SQLite database where a search store would be."""
    path.mkdir()
    db = sqlite3.connect(path / "search.sqlite")
    db.execute("CREATE TABLE notes (body TEXT)")
    db.execute("INSERT INTO notes VALUES ('mine')")
    db.commit()
    db.close()


def text_store(path: Path) -> None:
    path.mkdir()
    (path / "search.sqlite").write_text("not a database\n", encoding="utf-8")


# ---- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    kind: str  # valid, numbers, options, outputs, files-in, foreign-state, shapes, locations
    argv: tuple[str, ...]
    code: int
    message: str
    where: str = ""  # on the message's line: "FILE:LINE:COL" or CLI
    files: dict = field(default_factory=dict)
    subprocess: bool = False
    after: Callable[[Path], None] | None = None  # extra checks on the folder afterwards


TRAIN = ("train", "kd.kd", "--teacher", "resnet8", "--student", "resnet8", "--data", "digits", "--input-size",
         "1x8x8", "--epochs", "1", "--out", "run")
TEACHER = ("teacher", "resnet8", "--data", "digits", "--input-size", "1x8x8", "--epochs", "1")
SEARCH = ("search", "s.kd", "--teacher", "resnet8", "--student", "resnet8", "--input-size", "1x8x8", "--epochs", "1",
          "--budget", "2", "--out", "found")
COMPILE = ("compile", "kd.kd", "--teacher", "resnet8", "--student", "resnet8", "--input-size", "3x8x8",
           "--num-classes", "10")
EXPAND = ("expand", "f.kd", "--layers", "stage1,stage2", "--teacher", "resnet8", "--student", "resnet8",
          "--input-size", "1x8x8")
BASE = {"kd.kd": KD, "s.kd": SPACE, "f.kd": FEAT}


def compile_of(file: str, *rest: str) -> tuple[str, ...]:
    return ("compile", file, *COMPILE[2:], *rest)


def train_of(file: str, *rest: str) -> tuple[str, ...]:
    return ("train", file, *TRAIN[2:], *rest)


def _is_char_device(path: str) -> Callable[[Path], None]:
    def check(_: Path) -> None:
        assert stat.S_ISCHR(os.stat(path).st_mode), f"{path} is no longer a device"
    return check


def _holds(name: str, text: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert (folder / name).read_text(encoding="utf-8").startswith(text)
    return check


ROWS = [
    # ---- valid input that used to crash ---------------------------------------------------------------------
    Row("ops", "valid", ("ops",), 0, "adapt"),
    Row("ops-transform", "valid", ("ops", "transform"), 0, "align"),
    Row("compile-beta-times-1000", "valid", compile_of("w.kd"), 0, "class DistillerLoss",
        files={"w.kd": weight("beta * 1000")}),
    Row("compile-7-times-1e9", "valid", compile_of("w.kd"), 0, "class DistillerLoss",
        files={"w.kd": weight("7 * 1000000000")}),
    Row("check-bom", "valid", ("check", "bom.kd"), 0, "ok: 1 file", files={"bom.kd": b"\xef\xbb\xbf" + KD.encode()}),
    Row("check-flat-sum-99", "valid", ("check", "w.kd"), 0, "ok: 1 file",
        files={"w.kd": weight(" + ".join(["1"] * 99))}),
    Row("compile-writes-atomically", "valid", compile_of("kd.kd", "-o", "loss.py"), 0, "wrote loss.py",
        after=_holds("loss.py", '"""')),
    # ---- numbers: every arithmetic fault is a located error ---------------------------------------------------
    Row("overflow-product", "numbers", ("check", "w.kd"), 2, "too large", "w.kd:2:22",
        files={"w.kd": weight("1e300 * 1e300")}),
    Row("400-digit-integer", "numbers", ("check", "w.kd"), 2, "is too large", "w.kd:2:22",
        files={"w.kd": weight("1" * 400)}),
    Row("zero-to-negative-power", "numbers", ("check", "w.kd"), 2, "0 raised to a negative power", "w.kd:2:22",
        files={"w.kd": weight("0 ^ -1")}),
    Row("complex-result", "numbers", ("check", "w.kd"), 2, "no real value", "w.kd:2:22",
        files={"w.kd": weight("(-8) ^ 0.5")}),
    Row("divide-by-zero", "numbers", ("check", "w.kd"), 2, "division by zero", "w.kd:2:22",
        files={"w.kd": weight("1/0")}),
    Row("power-tower", "numbers", ("check", "w.kd"), 2, "too large", "w.kd:2:22", files={"w.kd": weight("9^9^9")}),
    Row("huge-power", "numbers", ("check", "w.kd"), 2, "too large", "w.kd:2:22",
        files={"w.kd": weight("7 ^ 1000000000")}),
    Row("divide-by-schedule", "numbers", ("check", "w.kd"), 2, "division by zero", "w.kd:2:22",
        files={"w.kd": weight("1 / warmup(5)")}),
    Row("warmup-of-zero", "numbers", ("check", "w.kd"), 2, "must be above 0", "w.kd:2:29",
        files={"w.kd": weight("warmup(0)")}),
    Row("softmax-temperature-0", "numbers", ("check", "d.kd"), 2, "`softmax`'s `t` must be above 0", "d.kd:2:23",
        files={"d.kd": one_term("logits -> softmax(0) -> kl -> 1")}),
    Row("kl-temperature-negative", "numbers", ("check", "d.kd"), 2, "`kl`'s `t` must be above 0", "d.kd:2:22",
        files={"d.kd": one_term("logits -> kl(t = -2) -> 1")}),
    Row("parameter-temperature-0", "numbers", ("check", "d.kd"), 2, "must be above 0 (a temperature) (it is 0)",
        "d.kd:2:23", files={"d.kd": "distiller d(t = 0):\n    logits -> softmax(t) -> kl -> 1\n"}),
    Row("parameter-overflow", "numbers", ("check", "d.kd"), 2, "too large", "d.kd:1:17",
        files={"d.kd": "distiller d(a = 1e300 * 1e300):\n    logits -> mse -> a\n"}),
    Row("argument-divide-by-zero", "numbers", ("check", "d.kd"), 2, "division by zero", "d.kd:2:20",
        files={"d.kd": one_term("stage3 -> pool(1/0) -> mse -> 1")}),
    Row("deep-tower", "numbers", ("check", "w.kd"), 2, "nested more than 100 levels deep", "w.kd:2:",
        files={"w.kd": weight("2^" * 150 + "1")}),
    Row("compile-divide-by-zero", "numbers", compile_of("w.kd"), 2, "division by zero", "w.kd:2:22",
        files={"w.kd": weight("1/0")}),
    Row("train-overflow", "numbers", train_of("w.kd"), 2, "too large", "w.kd:2:22",
        files={"w.kd": weight("1e300 * 1e300")}),
    Row("search-divide-by-zero", "numbers", ("search", "s0.kd", *SEARCH[2:]), 2, "division by zero", "s0.kd:2:27",
        files={"s0.kd": "space s:\n    logits -> mse -> (1 | 1/0)\n"}),
    Row("expand-divide-by-zero", "numbers", ("expand", "f0.kd", *EXPAND[2:]), 2, "division by zero", "f0.kd:2:22",
        files={"f0.kd": "distiller f:\n    stage2 -> mse -> 1/0\n"}),
    Row("fmt-power-fault", "numbers", ("fmt", "w.kd"), 2, "0 raised to a negative power", "w.kd:2:22",
        files={"w.kd": weight("0 ^ -1")}),
    # ---- options: a value outside its range is exit 2 with the accepted range, before any work ---------------
    Row("train-epochs-0", "options", (*TRAIN, "--epochs", "0"), 2, "expected a whole number >= 1", CLI),
    Row("train-lr-0", "options", (*TRAIN, "--lr", "0"), 2, "'--lr': 0 is out of range: expected a number > 0", CLI),
    Row("train-lr-nan", "options", (*TRAIN, "--lr", "nan"), 2, "`nan` is not a number > 0", CLI),
    Row("train-lr-text", "options", (*TRAIN, "--lr", "fast"), 2, "`fast` is not a number > 0", CLI),
    Row("train-batch-size-0", "options", (*TRAIN, "--batch-size", "0"), 2, "expected a whole number >= 2", CLI),
    Row("train-batch-size-1", "options", (*TRAIN, "--batch-size", "1"), 2, "expected a whole number >= 2", CLI),
    Row("train-subset-0", "options", (*TRAIN, "--train-subset", "0"), 2, "'--train-subset'", CLI),
    Row("train-seed-negative", "options", (*TRAIN, "--seed", "-1"), 2, "'--seed'", CLI),
    Row("train-input-size", "options", (*TRAIN, "--input-size", "4x8x8"), 2, "bad input size `4x8x8`", CLI),
    Row("train-unknown-data", "options", (*TRAIN, "--data", "bogus"), 2, "--data: unknown dataset `bogus`", CLI),
    Row("train-unknown-teacher", "options", (*TRAIN, "--teacher", "vgg99"), 2, "--teacher: unknown model `vgg99`",
        CLI),
    Row("train-missing-option", "options", ("train", "kd.kd", "--data", "digits"), 2, "`train` needs --teacher"),
    Row("teacher-epochs-0", "options", (*TEACHER, "--epochs", "0"), 2, "'--epochs'", CLI),
    Row("teacher-lr-negative", "options", (*TEACHER, "--lr", "-1"), 2, "expected a number > 0", CLI),
    Row("teacher-batch-size-0", "options", (*TEACHER, "--batch-size", "0"), 2, "'--batch-size'", CLI),
    Row("teacher-device", "options", (*TEACHER, "--device", "tpu"), 2, "unknown device `tpu`", CLI),
    Row("teacher-input-size", "options", (*TEACHER, "--input-size", "3x0x8"), 2, "bad input size", CLI),
    Row("teacher-unknown-model", "options", ("teacher", "resnet9", *TEACHER[2:]), 2, "unknown model `resnet9`", CLI),
    Row("search-sparse-1.5", "options", (*SEARCH, "--sparse", "1.5"), 2, "expected a number in (0, 1)", CLI),
    Row("search-sparse-0", "options", (*SEARCH, "--sparse", "0"), 2, "expected a number in (0, 1)", CLI),
    Row("search-unknown-reward", "options", (*SEARCH, "--reward", "ce+gapp"), 2, "unknown reward `ce+gapp`", CLI),
    Row("search-budget-0", "options", (*SEARCH, "--budget", "0"), 2, "'--budget'", CLI),
    Row("search-epochs-0", "options", (*SEARCH, "--epochs", "0"), 2, "'--epochs'", CLI),
    Row("search-subset-0", "options", (*SEARCH, "--subset", "0"), 2, "expected a number in (0, 1]", CLI),
    Row("search-subset-1.5", "options", (*SEARCH, "--subset", "1.5"), 2, "expected a number in (0, 1]", CLI),
    Row("search-workers-0", "options", (*SEARCH, "--workers", "0"), 2, "'--workers'", CLI),
    Row("search-final-seeds-0", "options", (*SEARCH, "--final-seeds", "0"), 2, "'--final-seeds'", CLI),
    Row("search-final-epochs-negative", "options", (*SEARCH, "--final-epochs", "-1"), 2, "'--final-epochs'", CLI),
    Row("search-c-negative", "options", (*SEARCH, "--c", "-1"), 2, "'--c'", CLI),
    Row("search-strategy", "options", (*SEARCH, "--strategy", "bogus"), 2, "unknown search strategy `bogus`", CLI),
    Row("search-rollout", "options", (*SEARCH, "--rollout", "bogus"), 2, "unknown rollout policy `bogus`", CLI),
    Row("search-root", "options", (*SEARCH, "--root", "bogus"), 2, "unknown root rule `bogus`", CLI),
    Row("search-device", "options", (*SEARCH, "--device", "tpu"), 2, "unknown device `tpu`", CLI),
    Row("search-unknown-student", "options", (*SEARCH, "--student", "resnet9"), 2, "--student: unknown model", CLI),
    Row("search-no-valid-candidate", "options", ("search", "n.kd", *SEARCH[2:]), 2, "no combination", "n.kd:2:5",
        files={"n.kd": "space n:\n    stage3 -> (kl | js) -> 1\n"}),
    Row("ops-unknown-role", "options", ("ops", "bogus"), 2, "unknown role `bogus`", CLI),
    Row("library-unknown", "options", ("library", "bogus"), 2, "no library distiller `bogus`", CLI),
    Row("layers-num-classes-0", "options", ("layers", "resnet8", "--num-classes", "0"), 2, "'--num-classes'", CLI),
    Row("layers-input-size", "options", ("layers", "resnet8", "--input-size", "5x8x8"), 2, "bad input size", CLI),
    Row("layers-unknown-model", "options", ("layers", "resnet99"), 2, "unknown model `resnet99`", CLI),
    Row("models-num-classes-0", "options", ("models", "--num-classes", "0"), 2, "'--num-classes'", CLI),
    Row("compile-num-classes-0", "options", (*COMPILE, "--num-classes", "0"), 2, "'--num-classes'", CLI),
    Row("compile-input-size", "options", (*COMPILE, "--input-size", "abc"), 2, "bad input size `abc`", CLI),
    Row("compile-unknown-teacher", "options", (*COMPILE, "--teacher", "vgg99"), 2, "--teacher: unknown model", CLI),
    Row("compile-unknown-distiller", "options", (*COMPILE, "--distiller", "nope"), 2, "has no distiller `nope`"),
    Row("expand-batch-size-1", "options", (*EXPAND, "--batch-size", "1"), 2, "'--batch-size'", CLI),
    Row("expand-seed-negative", "options", (*EXPAND, "--seed", "-1"), 2, "'--seed'", CLI),
    Row("expand-unknown-term", "options", (*EXPAND, "--term", "nope"), 2, "has no term `nope`", CLI),
    Row("expand-no-layers", "options", ("expand", "f.kd", "--layers", ",", *EXPAND[4:]), 2, "--layers needs", CLI),
    Row("check-no-files", "options", ("check",), 2, "Missing argument", CLI),
    Row("unknown-command", "options", ("chek", "kd.kd"), 2, "No such command 'chek'", CLI),
    # ---- outputs: nothing a command did not create is destroyed, no debris -----------------------------------
    Row("compile-onto-its-source", "outputs", (*COMPILE, "-o", "kd.kd"), 2, "refusing to overwrite the .kd file",
        CLI),
    Row("compile-onto-a-symlink", "outputs", (*COMPILE, "-o", "link.py"), 2, "is not a regular file", CLI,
        files={"target.py": "keep = 1\n", "link.py": link_to("target.py")}),
    Row("compile-onto-dev-null", "outputs", (*COMPILE, "-o", "/dev/null"), 2, "is not a regular file", CLI,
        after=_is_char_device("/dev/null")),
    Row("compile-into-missing-folder", "outputs", (*COMPILE, "-o", "missing/loss.py"), 2, "does not exist", CLI),
    Row("compile-into-read-only-folder", "outputs", (*COMPILE, "-o", "ro/loss.py"), 2, "is not writable", CLI,
        files={"ro": read_only_folder}),
    Row("compile-onto-a-folder", "outputs", (*COMPILE, "-o", "adir"), 2, "is a folder", CLI, files={"adir": folder}),
    Row("compile-onto-a-read-only-file", "outputs", (*COMPILE, "-o", "ro.py"), 2, "read-only", CLI,
        files={"ro.py": read_only_file("keep = 1\n")}),
    Row("expand-onto-a-kd-file", "outputs", (*EXPAND, "-o", "kd.kd"), 2, "refusing to overwrite the .kd file", CLI),
    Row("expand-into-missing-folder", "outputs", (*EXPAND, "-o", "missing/x.kd"), 2, "does not exist", CLI),
    Row("teacher-into-read-only-folder", "outputs", (*TEACHER, "--out", "ro/t.pt"), 2, "is not writable", CLI,
        files={"ro": read_only_folder}),
    Row("teacher-into-missing-folder", "outputs", (*TEACHER, "--out", "missing/t.pt"), 2, "does not exist", CLI),
    Row("teacher-onto-a-folder", "outputs", (*TEACHER, "--out", "adir"), 2, "is a folder", CLI,
        files={"adir": folder}),
    Row("train-out-is-a-file", "outputs", (*TRAIN[:-1], "afile"), 2, "is a file, not a folder", CLI,
        files={"afile": "mine\n"}),
    Row("train-out-read-only", "outputs", (*TRAIN[:-1], "ro/run"), 2, "is not writable", CLI,
        files={"ro": read_only_folder}),
    Row("search-out-is-a-file", "outputs", (*SEARCH[:-1], "afile"), 2, "is a file, not a folder", CLI,
        files={"afile": "mine\n"}),
    Row("search-out-read-only", "outputs", (*SEARCH[:-1], "ro/found"), 2, "is not writable", CLI,
        files={"ro": read_only_folder}),
    Row("fmt-read-only-file", "outputs", ("fmt", "messy.kd"), 2, "read-only",
        files={"messy.kd": read_only_file("distiller kd( t=4 ):\n  logits->softmax( t )->kl->t ^ 2\n")}),
    # ---- files in: only regular text files of a sane size are read -----------------------------------------
    Row("check-dev-zero", "files-in", ("check", "/dev/zero"), 2, "/dev/zero: not a regular file", subprocess=True),
    Row("check-fifo", "files-in", ("check", "pipe.kd"), 2, "pipe.kd: not a regular file", files={"pipe.kd": fifo},
        subprocess=True),
    Row("check-folder", "files-in", ("check", "adir"), 2, "adir: not a regular file", files={"adir": folder}),
    Row("check-missing", "files-in", ("check", "missing.kd"), 2, "missing.kd: no such file"),
    Row("check-too-large", "files-in", ("check", "big.kd"), 2, "larger than 1 MiB",
        files={"big.kd": KD + ("# padding\n" * 120_000)}),
    Row("check-binary", "files-in", ("check", "bin.kd"), 2, "file is not UTF-8 text", "bin.kd:1:1",
        files={"bin.kd": b"\xff\xfe\x00binary"}),
    Row("compile-dev-zero", "files-in", compile_of("/dev/zero"), 2, "/dev/zero: not a regular file"),
    Row("train-missing-file", "files-in", train_of("missing.kd"), 2, "missing.kd: no such file"),
    Row("train-missing-weights", "files-in", (*TRAIN, "--teacher-weights", "none.pt"), 2, "none.pt not found"),
    Row("search-folder-as-space", "files-in", ("search", "adir", *SEARCH[2:]), 2, "not a regular file",
        files={"adir": folder}),
    Row("expand-binary", "files-in", ("expand", "bin.kd", *EXPAND[2:]), 2, "not UTF-8", "bin.kd:1:1",
        files={"bin.kd": b"\xff\xfe\x00binary"}),
    Row("fmt-missing", "files-in", ("fmt", "missing.kd"), 2, "missing.kd: no such file"),
    # ---- foreign state: refused before anything is written, left untouched ----------------------------------
    Row("train-resume-into-search-folder", "foreign-state", (*TRAIN[:-1], "found", "--resume"), 2,
        "holds files that are not a training run's", CLI, files={"found": search_folder}),
    Row("search-resume-into-run-folder", "foreign-state", (*SEARCH[:-1], "run", "--resume"), 2,
        "holds other files (checkpoint.pt, metrics.jsonl) and no search store", CLI,
        files={"run": run_checkpoint()}),
    Row("search-resume-into-foreign-database", "foreign-state", (*SEARCH, "--resume"), 2,
        "is not an autokd-dsl search store", files={"found": foreign_database}),
    Row("search-resume-into-foreign-database-process", "foreign-state", (*SEARCH, "--resume"), 2,
        "is not an autokd-dsl search store", files={"found": foreign_database}, subprocess=True),
    Row("search-resume-into-text-file", "foreign-state", (*SEARCH, "--resume"), 2, "not an SQLite database",
        files={"found": text_store}),
    Row("search-again-without-resume", "foreign-state", SEARCH, 2, "already holds a search",
        files={"found": search_folder}),
    Row("train-again-without-resume", "foreign-state", TRAIN, 2, "already holds a run",
        files={"run": run_checkpoint()}),
    Row("teacher-num-classes-text", "foreign-state", (*TRAIN, "--teacher-weights", "t.pt"), 2,
        "`num_classes` holds str 'ten', not a whole number", files={"t.pt": teacher_weights(num_classes="ten")}),
    Row("teacher-state-dict-list", "foreign-state", (*TRAIN, "--teacher-weights", "t.pt"), 2,
        "`state_dict` holds list", files={"t.pt": teacher_weights(state_dict=[1, 2])}),
    Row("teacher-missing-field", "foreign-state", (*TRAIN, "--teacher-weights", "t.pt"), 2, "lack input_size",
        files={"t.pt": teacher_weights(input_size=None)}),
    Row("checkpoint-missing-settings", "foreign-state", (*TRAIN, "--resume"), 2, "lack the field `settings`",
        files={"run": run_checkpoint(settings=None)}),
    Row("checkpoint-history-not-a-list", "foreign-state", (*TRAIN, "--resume"), 2, "`history` holds dict",
        files={"run": run_checkpoint(history={"a": 1})}),
    Row("checkpoint-of-another-format", "foreign-state", (*TRAIN, "--resume"), 2,
        "is not an autokd-dsl training checkpoint", files={"run": run_checkpoint(format="autokd-dsl/teacher/1")}),
    Row("expand-edited-teacher", "foreign-state", (*EXPAND, "--teacher-weights", "t.pt"), 2,
        "`num_classes` holds str", files={"t.pt": teacher_weights(num_classes="ten")}),
    Row("search-edited-teacher", "foreign-state", (*SEARCH, "--teacher-weights", "t.pt"), 2,
        "`state_dict` holds list", files={"t.pt": teacher_weights(state_dict=[1])}),
    # ---- locations: errors about a file point into it, errors about a command-line value say so -------------
    Row("expand-unknown-layer", "locations", ("expand", "f.kd", "--layers", "stage1,stage9", *EXPAND[4:]), 2,
        "--layers: `stage9` is not a tap point of resnet8", CLI),
    Row("connector-on-batch-relation", "shapes", compile_of("bg.kd"), 2, "sized from a batch relation", "bg.kd:2:29",
        files={"bg.kd": one_term("stage3 -> batch_gram -> adapt -> mse -> 1")}),
    Row("train-connector-on-batch-relation", "shapes", train_of("bg.kd"), 2, "sized from a batch relation",
        "bg.kd:2:29", files={"bg.kd": one_term("stage3 -> batch_gram -> adapt -> mse -> 1")}),
    Row("tap-not-reached", "locations", compile_of("at.kd"), 2, "`layer1.0.relu@9` was not reached", "at.kd:2:5",
        files={"at.kd": one_term("layer1.0.relu@9 -> mse -> 1")}),
    Row("compile-unknown-tap", "locations", compile_of("t9.kd"), 2, "`stage9` is not a tap point", "t9.kd:2:5",
        files={"t9.kd": one_term("stage9 -> mse -> 1")}),
    Row("none-as-weight", "locations", ("check", "none.kd"), 2, "`none` leaves out an optional transform",
        "none.kd:2:22", files={"none.kd": weight("none", "t = 1")}),
    Row("train-kind-error", "locations", train_of("d.kd"), 2, "`kl` does not take a feature map", "d.kd:2:15",
        files={"d.kd": one_term("stage3 -> kl -> 1")}),
    Row("search-unknown-op", "locations", ("search", "u.kd", *SEARCH[2:]), 2, "unknown transform `sofmax`", "u.kd:2:15",
        files={"u.kd": "space u:\n    logits -> sofmax -> (kl | js) -> 1\n"}),
    Row("expand-kind-error", "locations", ("expand", "d.kd", *EXPAND[2:]), 2, "does not take", "d.kd:2:15",
        files={"d.kd": one_term("stage3 -> kl -> 1")}),
    Row("compile-kind-error", "locations", compile_of("d.kd"), 2, "does not take", "d.kd:2:15",
        files={"d.kd": one_term("stage3 -> kl -> 1")}),
    Row("fmt-kind-error", "locations", ("fmt", "d.kd"), 2, "does not take", "d.kd:2:15",
        files={"d.kd": one_term("stage3 -> kl -> 1")}),
]

KINDS = ("valid", "numbers", "options", "outputs", "files-in", "foreign-state", "shapes", "locations")
COMMANDS = ("check", "fmt", "ops", "library", "layers", "models", "compile", "expand", "search", "teacher", "train")


def test_the_table_covers_every_class_and_command():
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert {r.kind for r in ROWS} == set(KINDS)
    assert {r.argv[0] for r in ROWS} >= set(COMMANDS)
    for kind in ("numbers", "files-in", "locations", "outputs", "foreign-state"):  # the file-taking commands
        if kind == "outputs":
            wanted = {"compile", "expand", "teacher", "train", "search", "fmt"}
        elif kind == "foreign-state":
            wanted = {"train", "search", "expand"}
        else:
            wanted = {"compile", "expand", "search", "train", "fmt"} | ({"check"} if kind != "locations" else set())
        assert wanted <= {r.argv[0] for r in ROWS if r.kind == kind}, kind


# ---- running a row ------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed): its kind and its bytes or target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                out[rel] = ("file", path.read_bytes(), stat.S_IMODE(mode))
            else:
                out[rel] = ("dir" if stat.S_ISDIR(mode) else "other", stat.S_IFMT(mode))
    return out


def _make_files(folder: Path, files: dict) -> None:
    for name, value in {**BASE, **files}.items():
        path = folder / name
        if callable(value):
            value(path)
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value, encoding="utf-8")


def _no_work(*args, **kwargs):
    raise AssertionError("the command started work (training or a search) before its input was checked")


def _run_in_process(row: Row, folder: Path, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.chdir(folder)
    monkeypatch.setenv("AUTOKD_CACHE", str(folder / "cache"))
    for target in ("autokd_dsl.training.teacher.train_teacher", "autokd_dsl.training.student.train",
                   "autokd_dsl.search.run.search"):
        monkeypatch.setattr(target, _no_work)
    capsys.readouterr()
    code = run(list(row.argv))
    out, err = capsys.readouterr()
    return code, out + err


def _run_process(row: Row, folder: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOKD_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "autokd_dsl", *row.argv], cwd=folder, env=env, text=True,
                          capture_output=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.kind}:{r.id}" for r in ROWS])
def test_bad_input(row: Row, tmp_path: Path, monkeypatch, capsys, one_thread):
    folder = tmp_path / "work"
    folder.mkdir()
    _make_files(folder, row.files)
    before = _snapshot(folder)
    try:
        code, text = _run_process(row, folder) if row.subprocess else _run_in_process(row, folder, monkeypatch,
                                                                                       capsys)
    finally:
        for path in folder.rglob("*"):  # let pytest clean up the read-only folders
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
    assert code == row.code, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if row.message in line]
    assert lines, text
    if row.where:
        assert any(row.where in line for line in lines), text
    if row.code == 2:
        assert any(line.startswith(("error:", f"{row.where}: error:")) or ": error: " in line for line in lines), text
    after = _snapshot(folder)
    after = {k: v for k, v in after.items() if not k.startswith("cache")}
    for name, entry in before.items():
        if name.startswith("ro/") or name == "ro":
            entry = entry if entry[0] != "dir" else after.get(name)  # its mode was reset above
        assert after.get(name) == entry, f"{name} changed"
    if row.code != 0:
        assert set(after) == set(before), f"left behind: {sorted(set(after) - set(before))}"
    else:
        assert not [n for n in after if n.endswith(".tmp")], sorted(after)
    if row.after is not None:
        row.after(folder)


# ---- the weight evaluator: a property test at check and at compile -----------------------------------------


class _TookTooLong(Exception):
    pass


def _alarm(*_):
    raise _TookTooLong


def _numbers():
    return st.one_of(st.integers(0, 10**6), st.sampled_from([0, 1, 2, 9, 10**400, 7, 1000000000]),
                     st.floats(0, 1e308, allow_nan=False, allow_infinity=False), st.sampled_from([0.5, 1e300, 1e-300]))


def _number_text(value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


@st.composite
def weight_texts(draw, depth: int = 0) -> str:
    """Weight expressions over numbers and the parameters `a` and `b`, written as text."""
    if depth >= 4 or draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(_numbers().map(_number_text), st.sampled_from(["a", "b"])))
    shape = draw(st.sampled_from(["bin", "bin", "neg", "paren"]))
    if shape == "neg":
        return "-" + draw(weight_texts(depth + 1))
    if shape == "paren":
        return f"({draw(weight_texts(depth + 1))})"
    op = draw(st.sampled_from(["+", "-", "*", "/", "^"]))
    return f"{draw(weight_texts(depth + 1))} {op} {draw(weight_texts(depth + 1))}"


def _check_within(seconds: float, fn):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _outcome(text: str):
    """The checked weight's value, or the located error."""
    from autokd_dsl.lang.check import check_text
    from autokd_dsl.lang.weights import evaluate

    try:
        program = check_text(text, "p.kd")
    except KDError as err:
        return err
    block = program.blocks[0]
    params = {p.name: evaluate(p.value, {}) for p in block.params}
    return block, evaluate(block.terms[0].weight, params)


def _assert_number_or_located(outcome) -> None:
    if isinstance(outcome, KDError):
        assert outcome.line is not None and outcome.col is not None, outcome.render()
    else:
        value = outcome[1]
        assert isinstance(value, (int, float)) and math.isfinite(value)


@PROPERTY
@given(weight_texts(), _numbers(), _numbers())
def test_weights_evaluate_or_fail_located_at_check(expr: str, a, b):
    text = f"distiller p(a = {_number_text(a)}, b = -{_number_text(b)}):\n    logits -> mse -> {expr}\n"
    _assert_number_or_located(_check_within(5, lambda: _outcome(text)))


@pytest.fixture(scope="module")
def tiny_nets():
    from autokd_dsl.models import create_model

    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10), create_model("resnet8", num_classes=10)


@settings(PROPERTY, max_examples=40)
@given(weight_texts(), _numbers())
def test_weights_evaluate_or_fail_located_at_compile(tiny_nets, expr: str, a):
    from autokd_dsl.compiler.build import compile_distiller

    text = f"distiller p(a = {_number_text(a)}, b = 2):\n    logits -> mse -> {expr}\n"
    outcome = _check_within(5, lambda: _outcome(text))
    _assert_number_or_located(outcome)
    if isinstance(outcome, KDError):
        return
    block, value = outcome
    loss = _check_within(20, lambda: compile_distiller(block, *tiny_nets, input_size=(3, 8, 8)))
    # the compiled term is the weight the checker computed times the distance
    s, t = torch.randn(2, 4, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    terms = loss(**{name: s for name in loss.student_taps}, **{name: t for name in loss.teacher_taps})
    expected = value * float(((s - t) ** 2).mean())
    if abs(expected) < 1e300:
        assert math.isclose(float(terms["logits_mse"]), expected, rel_tol=1e-6, abs_tol=1e-300), (text, value)


# ---- one input size: a search's best.kd is used at the size of its search ----------------------------------


def test_best_kd_takes_the_input_size_of_its_search(tmp_path: Path):
    from autokd_dsl.options import input_size_for
    from autokd_dsl.search.store import Store

    store = Store(tmp_path / "search.sqlite")
    store.set_meta({"config": {"input_size": [1, 8, 8]}})
    store.close()
    before = (tmp_path / "search.sqlite").read_bytes()
    size, note = input_size_for(None, tmp_path / "best.kd")
    assert size == (1, 8, 8) and "as in the search in" in note
    assert input_size_for("3x16x16", tmp_path / "best.kd") == ((3, 16, 16), None)  # a given size wins
    assert input_size_for(None, ROOT / "library" / "kd.kd") == ((3, 32, 32), None)  # no search: the default
    assert (tmp_path / "search.sqlite").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "search.sqlite"]  # read only: no journal files left next to it
