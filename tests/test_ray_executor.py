"""`search --executor ray`: the same rows as in-process, a killed worker's candidate retried, a killed driver resumed.

One local Ray instance (2 CPUs) serves the whole module; the CLI runs connect to it with --ray-address.
"""

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from autokd_dsl.search.evaluate import Outcome  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPACE = ("space s:\n    ce: logits ~ labels -> ce -> 1\n"
         "    kd: stage3 -> (patches(4) | none) -> (mse | l1) -> (1 | 5 | 10000000)\n")
# resnet8's stage3 is 2x2 at 8x8 inputs: pool(2) would be `none` (one function, one key), pool(1) is not
WIDER = ("space s:\n    ce: logits ~ labels -> ce -> 1\n"
         "    kd: stage3 -> (none | pool(1)) -> (mse | l1 | cosine) -> (1 | 5)\n")


def _env():
    """For drivers started here: this process's environment once Ray is up (it holds Ray's auth mode)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def cluster():
    """One local instance for every test here (Ray takes seconds to start); its address for other drivers."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake evaluators below go by value
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    from rich.console import Console

    from autokd_dsl.data import DataConfig
    from autokd_dsl.training.teacher import Recipe, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "t.pt"
    return train_teacher("resnet8", DataConfig(name="digits", input_size=(1, 8, 8)),
                         Recipe(epochs=1, schedule="cosine"), out, Console(quiet=True))


def _cmd(space: Path, out: Path, ckpt: Path, budget: int, *extra):
    return [sys.executable, "-m", "autokd_dsl", "search", str(space), "--teacher", "resnet8", "--student",
            "resnet8", "--teacher-weights", str(ckpt), "--data", "digits", "--input-size", "1x8x8", "--epochs",
            "1", "--subset", "0.2", "--seed", "0", "--budget", str(budget), "--out", str(out), *extra]


def _rows(db: Path, baseline: int = 0):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT key, status, reward, kd, reason FROM evaluations WHERE baseline = ? ORDER BY seq",
                           (baseline,)).fetchall()
    finally:
        con.close()


# ---- fake evaluators (sent to the workers by value) -----------------------------------------------------------


def whoami(context, text):
    """Which worker process ran the candidate, which context object it saw, whether that was mapped read-only."""
    blob = context["blob"]
    return Outcome(float(blob[:4].sum()), "ok", json.dumps({"pid": os.getpid(), "ctx": id(context),
                                                            "writeable": bool(blob.flags.writeable)}))


def nap(context, text):
    """Sleep as many seconds as the text says."""
    time.sleep(float(text))
    return Outcome(float(text), "ok")


def killing(log: str, once: str, always: str, context, text):
    """The real evaluation, except that the worker running `once` dies on its first try and `always` every time."""
    from autokd_dsl.search.executor import _evaluate_text

    lines = [line.strip() for line in text.splitlines()]
    tries = sum(1 for line in Path(log).read_text().splitlines() if json.loads(line)["text"] == text) \
        if Path(log).exists() else 0
    with open(log, "a") as fh:
        fh.write(json.dumps({"text": text, "pid": os.getpid()}) + "\n")
    if always in lines or (once in lines and tries == 0):
        os.kill(os.getpid(), signal.SIGKILL)
    return _evaluate_text(context, text)


# ---- tests ----------------------------------------------------------------------------------------------------


def test_context_goes_to_the_object_store_once_and_is_shared(cluster):
    import numpy as np

    from autokd_dsl.search.ray_executor import RayExecutor

    executor = RayExecutor({"blob": np.arange(1 << 20, dtype=np.float32)}, 2, fn=whoami)
    try:
        outcomes = executor.map([f"candidate {i}" for i in range(12)])
    finally:
        executor.close()
    assert ray.is_initialized()  # the executor joined the running instance and left it running
    seen = [json.loads(o.reason) for o in outcomes]
    assert [o.reward for o in outcomes] == [6.0] * 12
    contexts = {}
    for s in seen:
        contexts.setdefault(s["pid"], set()).add(s["ctx"])
    assert all(len(ids) == 1 for ids in contexts.values()), contexts  # unpacked once per worker, then kept
    assert not any(s["writeable"] for s in seen)  # numpy mapped from the object store, not a private copy


def test_results_come_back_in_the_order_they_finish(cluster):
    from autokd_dsl.search.ray_executor import RayExecutor

    executor = RayExecutor(None, 2, fn=nap)
    try:
        assert executor.map(["1", "1"]) == [Outcome(1.0, "ok")] * 2  # two workers are up before the race starts
        executor.submit("slow", "3")
        executor.submit("fast", "0.0")
        assert executor.in_flight == 2
        assert [executor.next_done()[0], executor.next_done()[0]] == ["fast", "slow"]
        assert executor.next_done() is None
    finally:
        executor.close()


def test_ray_search_gives_the_in_process_rows(cluster, teacher_ckpt, tmp_path):
    space = tmp_path / "s.kd"
    space.write_text(SPACE)
    local = subprocess.run(_cmd(space, tmp_path / "local", teacher_ckpt, 5), capture_output=True, text=True,
                           cwd=ROOT, env=_env())
    assert local.returncode == 0, local.stderr
    remote = subprocess.run(_cmd(space, tmp_path / "ray", teacher_ckpt, 5, "--executor", "ray", "--ray-address",
                                 cluster), capture_output=True, text=True, cwd=ROOT, env=_env())
    assert remote.returncode == 0, remote.stderr
    for baseline in (0, 1):
        a, b = (_rows(tmp_path / "local" / "search.sqlite", baseline),
                _rows(tmp_path / "ray" / "search.sqlite", baseline))
        assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == (5 if baseline == 0 else 3)  # CE, KD, FitNet
        assert [r[2] is None for r in b] == [r[2] is None for r in a]
        assert [r[2] for r in b if r[2] is not None] == pytest.approx([r[2] for r in a if r[2] is not None],
                                                                      rel=1e-4, abs=1e-6)
    assert {r[1] for r in _rows(tmp_path / "ray" / "search.sqlite")} == {"ok", "rejected"}


def test_a_killed_worker_is_retried_and_a_candidate_killing_two_is_rejected(cluster, teacher_ckpt, tmp_path,
                                                                           monkeypatch):
    from rich.console import Console

    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.search import run as run_module
    from autokd_dsl.search.evaluate import ProxySettings
    from autokd_dsl.search.ray_executor import RayExecutor
    from autokd_dsl.training.teacher import load_teacher

    log = tmp_path / "tries.jsonl"
    once, always = "kd: stage3 -> l1 -> 5", "kd: stage3 -> mse -> 5"
    fn = functools.partial(killing, str(log), once, always)
    monkeypatch.setattr(run_module, "make_executor",
                        lambda ctx, workers, kind, **options: RayExecutor(ctx, workers, fn=fn, **options))
    (tmp_path / "s.kd").write_text(SPACE)
    bundle = load_data(DataConfig(name="digits", input_size=(1, 8, 8)))
    teacher = load_teacher(teacher_ckpt, "resnet8", 10, (1, 8, 8))
    cfg = run_module.SearchConfig(space_file=str(tmp_path / "s.kd"), teacher="resnet8", student="resnet8",
                                  input_size=(1, 8, 8), budget=6, workers=2, executor="ray", ray_address=cluster,
                                  baselines=(), proxy=ProxySettings(epochs=1, subset=0.2))
    summary = run_module.search(cfg, tmp_path / "out", False, teacher, bundle, Console(quiet=True))
    rows = _rows(tmp_path / "out" / "search.sqlite")
    assert len(rows) == 6 == len({r[0] for r in rows}) and summary["rows"] == 6  # every candidate once
    by_line = {r[3].strip().splitlines()[-1].strip(): r for r in rows}
    assert by_line[once][1] == "ok" and by_line[once][2] is not None  # retried elsewhere and finished
    assert by_line[always][1] == "rejected" and "killed two workers" in by_line[always][4]
    tries = [json.loads(line) for line in log.read_text().splitlines()]
    for line, count in ((once, 2), (always, 2)):
        mine = [t for t in tries if line in [x.strip() for x in t["text"].splitlines()]]
        assert len(mine) == count and len({t["pid"] for t in mine}) == count  # a fresh worker each time
    others = [t for t in tries if not {once, always} & {x.strip() for x in t["text"].splitlines()}]
    # the four other candidates and the CE-only baseline: nothing else ran twice
    assert len(others) == 5 and len({t["text"] for t in others}) == 5


DRIVER = """
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from rich.console import Console
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.search import run as run_module
from autokd_dsl.search.evaluate import ProxySettings
from autokd_dsl.search.executor import _evaluate_text
from autokd_dsl.search.ray_executor import RayExecutor
from autokd_dsl.training.teacher import load_teacher

space, ckpt, out, address, log, resume = sys.argv[1:]

def logged(context, text):
    with open(log, "a") as fh:
        fh.write(json.dumps({"text": text}) + "\\n")
    return _evaluate_text(context, text)

run_module.make_executor = lambda ctx, workers, kind, **options: RayExecutor(ctx, workers, fn=logged, **options)
cfg = run_module.SearchConfig(space_file=space, teacher="resnet8", student="resnet8", input_size=(1, 8, 8),
                              budget=9, workers=2, executor="ray", ray_address=address, baselines=(),
                              proxy=ProxySettings(epochs=1, subset=0.2))
run_module.search(cfg, Path(out), resume == "1", load_teacher(ckpt, "resnet8", 10, (1, 8, 8)),
                  load_data(DataConfig(name="digits", input_size=(1, 8, 8))), Console(quiet=True))
"""


def test_a_killed_driver_resumes_with_every_row_once(cluster, teacher_ckpt, tmp_path):
    (tmp_path / "s.kd").write_text(WIDER)
    (tmp_path / "driver.py").write_text(DRIVER)
    out, log = tmp_path / "out", tmp_path / "evaluated.jsonl"
    args = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "s.kd"), str(teacher_ckpt), str(out), cluster,
            str(log)]
    proc = subprocess.Popen(args + ["0"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db, n = out / "search.sqlite", 0
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and n < 3:
        time.sleep(0.1)
        if db.exists():
            try:
                n = len(_rows(db))
            except sqlite3.Error:
                n = 0
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(db)
    assert 3 <= len(before) < 9
    resumed = subprocess.run(args + ["1"], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after = _rows(db)
    assert len(after) == 9 and len({r[0] for r in after}) == 9  # the budget, every row once
    assert after[: len(before)] == before  # finished rows kept as they were
    runs = [json.loads(line)["text"] for line in log.read_text().splitlines()]
    assert all(runs.count(r[3]) == 1 for r in before)  # no finished candidate trained again
    assert all(r[3] in runs for r in after)
