"""Every run folder keeps a plain-text log of what the command printed: search, train and teacher runs."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

import autokd_dsl
from autokd_dsl.data import DataConfig
from autokd_dsl.errors import KDError
from autokd_dsl.progress import LOG_FILE, SearchProgress, run_log
from autokd_dsl.training.teacher import Recipe, run_folder, train_teacher

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
KD = ROOT / "library" / "kd.kd"
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def quiet() -> Console:
    return Console(file=io.StringIO(), soft_wrap=True)


def log_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines[:3]
    return [line[9:] for line in lines]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "t.pt"
    return train_teacher("resnet8", DataConfig(name="digits", input_size=(1, 8, 8)),
                         Recipe(epochs=2, schedule="cosine"), out, quiet())


def test_teacher_run_folder_holds_its_log(teacher_file) -> None:
    lines = log_lines(run_folder(teacher_file) / LOG_FILE)
    assert lines[0].startswith("started: training teacher resnet8")
    assert [ln.split()[2] for ln in lines if ln.startswith("teacher epoch")] == ["1/2", "2/2"]
    assert any(ln.startswith("teacher resnet8: test accuracy") for ln in lines) and lines[-1] == "done"


def test_train_log_has_every_epoch_and_how_the_run_ended(teacher_file, tmp_path) -> None:
    out = tmp_path / "run"
    options = dict(file=KD, teacher="resnet8", teacher_weights=teacher_file, student="resnet8", data="digits",
                   input_size="1x8x8", train_subset=100, out=out, device="cpu", tensorboard=False)
    console = quiet()
    autokd_dsl.train(epochs=2, console=console, command="autokd-dsl train library/kd.kd …", **options)
    lines = log_lines(out / LOG_FILE)
    assert lines[0] == "started: autokd-dsl train library/kd.kd …" and lines[-1] == "done"
    assert any(ln.startswith("distiller kd (") for ln in lines)
    epochs = [ln for ln in lines if re.match(r"epoch \d+/2 ", ln)]
    assert len(epochs) == 2 and "soft" in epochs[0]
    assert "\x1b" not in (out / LOG_FILE).read_text()
    shown = console.file.getvalue()  # the log holds what the console showed, line for line
    assert all(ln in shown for ln in lines[1:-1])
    # a resume with other settings stops inside the run: appended to the same log, with the reason
    with pytest.raises(KDError, match="different settings"):
        autokd_dsl.train(epochs=3, resume=True, console=quiet(), **options)
    again = log_lines(out / LOG_FILE)
    assert again[:len(lines)] == lines and again[len(lines)].startswith("started")
    assert again[-1].startswith("stopped: ") and "different settings" in again[-1]


@pytest.mark.slow
def test_search_log_names_each_candidate(teacher_file, tmp_path) -> None:
    space = tmp_path / "s.kd"
    space.write_text("space s:\n    ce: logits ~ labels -> ce -> 1\n"
                     "    kd: stage3 -> (mse | l1) -> (1 | 5)\n")
    out = tmp_path / "search"
    autokd_dsl.search(space_file=space, teacher="resnet8", teacher_weights=teacher_file, student="resnet8",
                      data="digits", input_size="1x8x8", epochs=1, subset=0.2, budget=3, baselines=["kd"],
                      out=out, tensorboard=False, console=quiet())
    lines = log_lines(out / LOG_FILE)
    candidates = [ln for ln in lines if ln.startswith("candidate ")]
    assert len(candidates) == 3
    for n, line in enumerate(candidates, 1):  # readable candidates, not hashes
        assert line.startswith(f"candidate {n}/3: ") and "kd: stage3 -> " in line
    assert any("leaderboard" in ln for ln in lines) and any(ln.startswith("best reward") for ln in lines)
    assert lines[-1] == "done"


def test_a_live_bar_leaves_one_plain_line_per_candidate(tmp_path) -> None:
    """On a terminal the bar redraws in place; the log gets each finished candidate once, and no escapes."""
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    path = tmp_path / LOG_FILE
    with run_log(console, path, "search"), SearchProgress(console, total=2) as bar:
        bar.finished(-0.5, "ok", "kd: logits -> softmax(c) -> kl -> 1")
        bar.finished(None, "rejected", "kd: stage3 -> mse -> 1")
    assert "\x1b" in console.file.getvalue()  # the terminal did get the live bar
    text = path.read_text()
    assert "\x1b" not in text
    assert log_lines(path) == ["started: search", "candidate 1/2: reward -0.5000 (best -0.5000)  kd: logits -> "
                               "softmax(c) -> kl -> 1", "candidate 2/2: rejected (best -0.5000)  kd: stage3 -> mse "
                               "-> 1", "done"]


def test_nested_logs_both_get_the_inner_lines_and_the_console_is_restored(tmp_path) -> None:
    console = quiet()
    own = console.print
    with run_log(console, tmp_path / "outer.txt", "outer"):
        console.print("before")
        with pytest.raises(KeyboardInterrupt), run_log(console, tmp_path / "inner.txt", "inner"):
            console.print("inside")
            raise KeyboardInterrupt
        console.print("after")
    assert log_lines(tmp_path / "inner.txt") == ["started: inner", "inside", "interrupted"]
    # the inner run's printed lines reach the outer log too; its start and end marks are its own
    assert log_lines(tmp_path / "outer.txt") == ["started: outer", "before", "inside", "after", "done"]
    assert console.print == own and "print" not in vars(console)
    console.print("not logged")
    assert "not logged" not in (tmp_path / "outer.txt").read_text()


def test_a_run_that_fails_before_writing_anything_leaves_nothing(tmp_path) -> None:
    console = quiet()
    with pytest.raises(KDError), run_log(console, tmp_path / "new" / "run" / LOG_FILE, "doomed"):
        console.print("loading the teacher")
        raise KDError("teacher checkpoint is truncated")
    assert list(tmp_path.iterdir()) == []
    # once the run has written something of its own, the log stays and says why the run stopped
    with pytest.raises(KDError), run_log(console, tmp_path / "run" / LOG_FILE, "kept"):
        (tmp_path / "run" / "run.json").write_text("{}")
        raise KDError("teacher checkpoint is truncated")
    assert log_lines(tmp_path / "run" / LOG_FILE) == ["started: kept", "stopped: teacher checkpoint is truncated"]
