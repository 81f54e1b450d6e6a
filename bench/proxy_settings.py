"""What each proxy setting buys: rank fidelity against a long run, and time per candidate.

Fixed candidates (drawn once, seeded, from `examples/space.kd`) are scored by a reference proxy (all training
images, `--ref-epochs` epochs) and by cheaper variants that change one setting at a time: fewer epochs, a
training subset drawn by teacher entropy or uniformly, a sparse student. For each variant it prints the
Spearman correlation of its rewards with the reference rewards and the median seconds per candidate. A setting
earns its place when it buys time without losing much rank fidelity (or, for entropy sampling, keeps more of it
than the uniform subset of the same size). Digits at 3x16x16, the cached teacher of `autokd-dsl search`.

Run: `python bench/proxy_settings.py [--candidates 10] [--teacher resnet56] [--student resnet20]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from rich.console import Console

from autokd_dsl.api import cache_dir
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.lang.check import check_text
from autokd_dsl.search.evaluate import ProxyContext, ProxySettings, evaluate
from autokd_dsl.search.space import SearchSpace
from autokd_dsl.training.teacher import default_recipe, load_teacher, teacher_for


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(xs):
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        r = [0.0] * len(xs)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--ref-epochs", type=int, default=8)
    args = ap.parse_args()
    data_cfg = DataConfig(name="digits", input_size=(3, 16, 16), augment=False)
    bundle = load_data(data_cfg)
    path = teacher_for(args.teacher, data_cfg, default_recipe(args.teacher, "digits"), cache_dir(), Console())
    teacher = load_teacher(path, args.teacher, bundle.num_classes, data_cfg.input_size)
    space = SearchSpace(check_text(open("examples/space.kd").read()).blocks[0])
    rng = random.Random(0)
    blocks = []
    while len(blocks) < args.candidates:
        p = ()
        while len(p) < space.num_levels():
            p += (rng.choice(space.options(p)),)
        if space.candidate(p).key not in {b.key for b in blocks}:
            blocks.append(space.candidate(p))
    variants = {
        f"reference: {args.ref_epochs} epochs, all images": ProxySettings(epochs=args.ref_epochs, subset=1.0),
        "6 epochs, all images (default)": ProxySettings(epochs=6, subset=1.0),
        "2 epochs, all images": ProxySettings(epochs=2, subset=1.0),
        "1 epoch, all images": ProxySettings(epochs=1, subset=1.0),
        "2 epochs, 50% by entropy": ProxySettings(epochs=2, subset=0.5),
        "2 epochs, 50% uniform": ProxySettings(epochs=2, subset=0.5, entropy_sampling=False),
        "2 epochs, 25% by entropy": ProxySettings(epochs=2, subset=0.25),
        "2 epochs, 25% uniform": ProxySettings(epochs=2, subset=0.25, entropy_sampling=False),
        "2 epochs, 50% by entropy, sparse 0.5": ProxySettings(epochs=2, subset=0.5, sparse_density=0.5),
    }
    results = {}
    for name, settings in variants.items():
        ctx = ProxyContext(space, teacher, args.student, bundle, settings, teacher_name=args.teacher)
        rewards, times = [], []
        for block in blocks:
            start = time.perf_counter()
            out = evaluate(block, ctx)
            times.append(time.perf_counter() - start)
            rewards.append(out.reward if out.reward is not None else -10.0)
        results[name] = (rewards, statistics.median(times))
        print(f"done: {name}", flush=True)
    ref = next(iter(results.values()))[0]
    print(f"\n{len(blocks)} candidates from examples/space.kd, {args.teacher} → {args.student}, digits 3x16x16\n")
    print("| proxy | Spearman ρ vs reference | s / candidate |\n|---|---:|---:|")
    for name, (rewards, secs) in results.items():
        print(f"| {name} | {spearman(rewards, ref):.2f} | {secs:.2f} |")


if __name__ == "__main__":
    main()
