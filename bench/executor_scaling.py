"""P8: the Ray executor's scaling, its overhead per candidate, and the real proxy with 1 and 2 workers.

1. Scaling. A fake evaluator sleeps 1 s per candidate (no CPU); 64 candidates of a tabulated space, asked by
   MCTS through the same in-flight driver as `search --executor ray` (:func:`run_in_flight`), with 1, 2, 4 and 8
   Ray workers in flight. Efficiency at k workers = throughput(k) / (k × throughput(1)); goal >= 0.9 at 8.
2. Overhead. The same driver with a 0-second evaluator, one candidate in flight: (Ray time - in-process
   time) / candidates; goal <= 50 ms per candidate.
3. The real proxy: resnet20 (randomly initialised: only the cost matters here) → resnet8 on digits at 3x16x16,
   1 proxy epoch, random search (its asks do not depend on the results, so every run trains the same
   candidates), in-process, with Ray at 1 and 2 workers, and in-process again (the machine's load drifts);
   candidates per minute of the whole `search` call (teacher pass and shape pruning included), after an
   untimed warm-up search.

One local Ray instance with 8 logical CPUs serves all three (the 1-second sleeps use none). Worker processes are
started and given the context before any timing. The machine is shared: the script prints `uptime` before and
after.

Run: ``python bench/executor_scaling.py [--candidates 64] [--proxy-candidates 12] [--skip-proxy]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch

from autokd_dsl.search import TabulatedSpace, make_strategy
from autokd_dsl.search.executor import run_in_flight
from autokd_dsl.search.ray_executor import RayExecutor, array_bytes, pack_context, sleeping_evaluator

SPACE = (4, 4, 4, 4)  # 256 candidates: never exhausted by 64


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def drive(executor, space: TabulatedSpace, candidates: int, in_flight: int) -> float:
    """Seconds for ``candidates`` MCTS candidates through the in-flight driver and ``executor``."""
    strategy = make_strategy("mcts", space, seed=0)

    def wait():
        path, outcome = executor.next_done()
        return path, outcome.reward

    start = time.perf_counter()
    results = run_in_flight(strategy, lambda p: (False, None), lambda p: executor.submit(p, space.key(p)), wait,
                            candidates, in_flight)
    seconds = time.perf_counter() - start
    assert len(results) == candidates and len({r.key for r in results}) == candidates
    return seconds


class Direct:
    """The in-process counterpart: the evaluator called in the driver, no Ray."""

    def __init__(self, context):
        self.context, self.queue = context, []

    def submit(self, tag, text):
        self.queue.append((tag, text))

    def next_done(self):
        tag, text = self.queue.pop(0)
        return tag, sleeping_evaluator(self.context, text)


def warm(executor: RayExecutor, k: int) -> None:
    """Start k worker processes and give each the context (a 2 s sleep each, all at once)."""
    executor.ray.get([executor.task.remote([executor.ray.put({"seconds": 2.0})], sleeping_evaluator, "warm", 1)
                      for _ in range(k)])


def scaling(candidates: int) -> None:
    space = TabulatedSpace(SPACE)
    print(f"\n## 1. Scaling: {candidates} candidates, a fake evaluator sleeping 1 s (no CPU), MCTS asking\n")
    print("| workers | seconds | candidates/s | efficiency = throughput ÷ (k × one worker) |")
    print("|---:|---:|---:|---:|")
    base = None
    for k in (1, 2, 4, 8):
        executor = RayExecutor({"seconds": 1.0}, k, fn=sleeping_evaluator)
        warm(executor, 8)
        seconds = drive(executor, space, candidates, k)
        executor.close()
        rate = candidates / seconds
        base = rate if base is None else base
        print(f"| {k} | {seconds:.2f} | {rate:.3f} | {rate / (k * base):.3f} |", flush=True)


def overhead(candidates: int) -> None:
    space = TabulatedSpace(SPACE)
    print(f"\n## 2. Overhead per candidate: {candidates} candidates, a 0-second evaluator, one in flight\n")
    local = min(drive(Direct({"seconds": 0.0}), space, candidates, 1) for _ in range(3))
    executor = RayExecutor({"seconds": 0.0}, 1, fn=sleeping_evaluator)
    warm(executor, 1)
    remote = min(drive(executor, space, candidates, 1) for _ in range(3))
    eight = RayExecutor({"seconds": 0.0}, 8, fn=sleeping_evaluator)
    remote8 = min(drive(eight, space, candidates, 8) for _ in range(3))
    executor.close()
    eight.close()
    print("| driver | seconds (best of 3) | ms per candidate |")
    print("|---|---:|---:|")
    print(f"| in-process | {local:.3f} | {1000 * local / candidates:.2f} |")
    print(f"| Ray, 1 in flight | {remote:.3f} | {1000 * remote / candidates:.2f} |")
    print(f"| Ray, 8 in flight | {remote8:.3f} | {1000 * remote8 / candidates:.2f} |")
    print(f"\noverhead per candidate, Ray (1 in flight) - in-process: {1000 * (remote - local) / candidates:.2f} ms "
          f"(goal <= 50 ms)")


def proxy(candidates: int) -> None:
    from rich.console import Console

    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.models import create_model
    from autokd_dsl.search.evaluate import ProxySettings
    from autokd_dsl.search.run import SearchConfig, search

    root = Path(__file__).resolve().parents[1]
    size = (3, 16, 16)
    bundle = load_data(DataConfig(name="digits", input_size=size))
    torch.manual_seed(0)
    teacher = create_model("resnet20", num_classes=10, in_chans=3).eval()
    print(f"\n## 3. The real proxy: resnet20 → resnet8 on digits at 3x16x16, 1 epoch, {candidates} candidates "
          f"(random search, seed 0), {len(bundle.train.images)} training images\n")
    print("| executor | workers | seconds | candidates/min | ÷ in-process |")
    print("|---|---:|---:|---:|---:|")
    def run(kind: str, workers: int, budget: int) -> float:
        cfg = SearchConfig(space_file=str(root / "examples" / "space.kd"), teacher="resnet20", student="resnet8",
                           input_size=size, budget=budget, strategy="random", workers=workers, executor=kind,
                           baseline=None, proxy=ProxySettings(epochs=1))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = search(cfg, Path(out), False, teacher, bundle, Console(quiet=True))
            seconds = time.perf_counter() - start
        assert summary["rows"] == budget
        return seconds

    run("local", 1, 2)  # not timed: the process's one-time costs (imports, first compilations)
    base = None
    for kind, workers in (("local", 1), ("ray", 1), ("ray", 2), ("local", 1)):
        seconds = run(kind, workers, candidates)
        rate = 60 * candidates / seconds
        base = rate if base is None else base
        print(f"| {kind} | {workers} | {seconds:.1f} | {rate:.2f} | {rate / base:.2f} |", flush=True)
    from autokd_dsl.search.evaluate import ProxyContext
    from autokd_dsl.search.run import load_space
    from autokd_dsl.search.space import SearchSpace

    ctx = ProxyContext(SearchSpace(load_space(str(root / "examples" / "space.kd"), None)), teacher, "resnet8",
                       bundle, ProxySettings(epochs=1), teacher_name="resnet20")
    print(f"\nthe context put once into the object store: {array_bytes(pack_context(ctx)) / 2**20:.1f} MiB of arrays "
          f"(teacher activations and data), shared by every worker on a node")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--proxy-candidates", type=int, default=12)
    parser.add_argument("--skip-proxy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    print(f"# P8 executor scaling (ray {ray.__version__}, {os.cpu_count()} cores)\n\nbefore: {uptime()}")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        scaling(args.candidates)
        overhead(args.candidates)
        if not args.skip_proxy:
            proxy(args.proxy_candidates)
    finally:
        ray.shutdown()
    print(f"\nafter: {uptime()}")


if __name__ == "__main__":
    main()
