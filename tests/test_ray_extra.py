"""What runs whether or not Ray is installed: the error naming the extra, the option checks, the in-flight driver."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `import ray` fails in this child, as it would where the extra is not installed
NO_RAY = "import sys; sys.modules['ray'] = None; from autokd_dsl.cli import main; sys.argv[0] = 'autokd-dsl'; main()"


def _search(tmp_path, *extra):
    return subprocess.run([sys.executable, "-c", NO_RAY, "search", str(ROOT / "examples" / "space.kd"), "--teacher",
                           "resnet8", "--student", "resnet8", "--input-size", "1x8x8", "--out", str(tmp_path / "run"),
                           *extra], capture_output=True, text=True, cwd=ROOT)


def test_executor_ray_without_ray_names_the_extra(tmp_path):
    proc = _search(tmp_path, "--executor", "ray")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs Ray" in proc.stderr and 'pip install -e ".[ray]"' in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_ray_options_need_the_ray_executor(tmp_path):
    proc = _search(tmp_path, "--gpus-per-candidate", "0.25")
    assert proc.returncode == 2 and "need --executor ray" in proc.stderr and "Traceback" not in proc.stderr
    bad = _search(tmp_path, "--executor", "dask")
    assert bad.returncode == 2 and "unknown executor `dask`" in bad.stderr
    assert not (tmp_path / "run").exists()


def test_in_flight_driver_keeps_k_candidates_pending_and_tells_in_arrival_order():
    from autokd_dsl.search import TabulatedSpace, make_strategy
    from autokd_dsl.search.executor import run_in_flight

    space = TabulatedSpace.synthetic((3, 4, 4), seed=0)
    strategy = make_strategy("mcts", space, seed=0)
    running, pending_seen, told = [], [], []

    def submit(path):
        running.append(path)
        pending_seen.append(len(strategy.pending))

    def wait():  # the newest candidate finishes first: arrival order is not ask order
        path = running.pop()
        told.append(path)
        return path, space.reward(path)

    results = run_in_flight(strategy, lambda path: (False, None), submit, wait, budget=20, in_flight=4)
    assert [r.path for r in results] == told and len({r.key for r in results}) == 20
    assert max(pending_seen) == 4 and pending_seen[:4] == [1, 2, 3, 4]  # four asked before the first result
    assert strategy.pending == [] and strategy.num_told == 20
    # with one in flight, the asks and tells are those of the batch driver with batch=1
    from autokd_dsl.search import run_search

    one = run_in_flight(make_strategy("mcts", space, seed=0), lambda p: (False, None), running.append,
                        lambda: (lambda p: (p, space.reward(p)))(running.pop()), budget=20, in_flight=1)
    batch = run_search(make_strategy("mcts", space, seed=0), lambda ps: [space.reward(p) for p in ps], 20, batch=1)
    assert [r.key for r in one] == [r.key for r in batch]


def test_known_results_are_told_without_running():
    from autokd_dsl.search import TabulatedSpace, make_strategy
    from autokd_dsl.search.executor import run_in_flight

    space = TabulatedSpace((2, 3))
    memo = {"0-0": 0.5, "1-2": None}
    ran, submitted = [], []

    def submit(path):
        ran.append(path)
        submitted.append(space.key(path))

    results = run_in_flight(make_strategy("random", space, seed=1),
                            lambda path: (space.key(path) in memo, memo.get(space.key(path))), submit,
                            lambda: (lambda p: (p, space.reward(p)))(ran.pop()), budget=6, in_flight=2)
    assert len(results) == 6 and sorted(submitted) == ["0-1", "0-2", "1-0", "1-1"]  # the memo's two never ran
    rewards = {r.key: r.reward for r in results}
    assert rewards["1-2"] is None and rewards["0-0"] == 0.5 and set(rewards) == {space.key(p) for p in space.paths()}
