"""Search efficiency: evaluations needed to reach the top 1% of synthetic tables and of a table of measured rewards.

The space is a :class:`autokd_dsl.search.testing.TabulatedSpace` shaped like a distiller search space
(6 choice levels with 3, 6, 6, 5, 4 and 4 options, and a few exclusions between options of different levels,
like kind-validity pruning). Its reward table is synthetic and *structured*: each level contributes an
additive effect per option (N(0, 1)), every pair of levels contributes an interaction term per option pair
(N(0, 0.3^2)), and every cell gets independent noise (N(0, 0.3^2)); the table is drawn from a fixed numpy
seed (``--table-seed``). The top 1% is the best ``ceil(0.01 * size)`` legal candidates. A second, *gated*
table (:meth:`TabulatedSpace.gated`, 2x6x6x5x4x4) gives each first-level option its own scaled and shifted
structured subtable, so the branch with the higher mean need not hold the best candidates (as with the
logits and last-stage branches of the Auto-KD space); it is reported the same way.

For each strategy (MCTS, random search, regularized evolution; all with the product defaults) and each of
``--seeds`` search seeds, the search runs until it first evaluates a top-1% candidate; the table reports the
median (and mean) count over seeds, and the ratios of the medians MCTS/random and evolution/random (lower
is better; the target is MCTS/random <= 0.5). Random search's median in every ratio is taken over 2,000 seeds
(``RANDOM_REFERENCE_SEEDS``), so that a ratio carries only the sampling noise of the strategy measured; the ratio
over random's median on the same few seeds is printed next to it.

A third table holds *measured* rewards (``bench/data/measured_rewards.csv``, written by ``bench/measured_table.py``):
every candidate of a sub-space of ``examples/space.kd`` scored once by a cheap real proxy; paths that compute the
same loss share a content key (as in the product's search, which never proposes a key twice) and the top 1% counts
distinct keys; rejected candidates count as evaluations that never hit. It is reported when the file exists
(``--measured PATH``).

Run: ``python bench/search_efficiency.py [--seeds 20] [--table-seed 0] [--measured PATH] [--spread 30]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autokd_dsl.search import TabulatedSpace, make_strategy
from autokd_dsl.search.testing import ListedSpace

MEASURED = Path(__file__).resolve().parent / "data" / "measured_rewards.csv"


def measured_space(path: Path) -> ListedSpace:
    """The table of measured rewards (``bench/measured_table.py``): ``path`` (dot-joined option indices), ``key``,
    ``status``, ``reward``."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        rows = [(tuple(int(o) for o in r["path"].split(".")), r["key"],
                 float(r["reward"]) if r["status"] == "ok" and r["reward"] else None) for r in csv.DictReader(fh)]
    return ListedSpace(rows)

OPTION_COUNTS = (3, 6, 6, 5, 4, 4)
FORBID = (
    ((0, 0), (3, 4)),  # e.g. logits knowledge cannot use a feature-map distance
    ((0, 2), (5, 0)),
    ((1, 5), (2, 5)),
    ((3, 1), (4, 3)),
)
INTERACTION = 0.3
NOISE = 0.3
STRATEGY_NAMES = ("mcts", "random", "evolution")


def bench_space(table_seed: int, option_counts: Sequence[int] = OPTION_COUNTS) -> TabulatedSpace:
    forbid = FORBID if tuple(option_counts) == OPTION_COUNTS else ()
    return TabulatedSpace.synthetic(option_counts, table_seed, interaction=INTERACTION, noise=NOISE, forbid=forbid)


def evals_to_target(strategy: Any, space: TabulatedSpace, threshold: float, cap: int, batch: int = 1) -> int:
    """Evaluations until the first candidate with reward >= threshold (cap+1 if never).

    With ``batch > 1`` the strategy is asked ``batch`` paths before any of them is told (as with parallel
    workers); the count is the hit's position in ask order.
    """
    count = 0
    while count < cap:
        paths = []
        for _ in range(batch):
            path = strategy.ask()
            if path is None:
                break
            paths.append(path)
        if not paths:
            break
        for path in paths:
            count += 1
            reward = space.reward(path)
            if reward is not None and reward >= threshold:
                return count
            strategy.tell(path, reward)
    return cap + 1


def run(
    name: str, space: TabulatedSpace, seeds: Sequence[int], threshold: float, batch: int = 1, **kw: Any
) -> list[int]:
    cap = space.size()
    return [
        evals_to_target(make_strategy(name, space, seed, **kw), space, threshold, cap, batch) for seed in seeds
    ]


GATED_COUNTS = (2, 6, 6, 5, 4, 4)
EARLIER_MCTS = {"c": 0.15, "fpu": 0.0, "max_weight": 0.0, "rollout": "random", "tail_z": None, "mast_context": 0,
                "expand": "random"}
"""The first product defaults (mean-value UCT, uniform rollouts), shown for comparison."""
THOMPSON = {"rollout": "thompson"}
"""The product defaults with Thompson rollouts (``--rollout thompson``)."""
TAIL_ROOT = {"root": "tail"}
"""The product defaults with the tail rule at the root (``--root tail``)."""


RANDOM_REFERENCE_SEEDS = 2000
"""Random search's median over this many seeds is the reference of every ratio: with only the searches' own 20
seeds, the ratio carries random's sampling noise too (its median over seeds 0-19 on the gated table is 51.5, over
2,000 seeds 66)."""


def random_median(space: Any, threshold: float, seeds: int = RANDOM_REFERENCE_SEEDS) -> float:
    """Random search's median evaluations to the threshold over ``seeds`` seeds: the reference of every ratio."""
    return statistics.median(run("random", space, range(seeds), threshold))


def report(title: str, space: Any, seeds: Sequence[int], batch: int,
           reference_seeds: int = RANDOM_REFERENCE_SEEDS) -> dict[str, float]:
    threshold = space.top_threshold(0.01)
    scored = {space.key(p) for p in space.paths() if space.reward(p) is not None}
    print(f"\n### {title}: {space.size()} legal paths, {len(scored)} distinct scored candidates; top 1% = best "
          f"{max(1, -(-len(scored) // 100))} (reward >= {threshold:.3f})\n")
    print(f"{'strategy':<24} {'median':>8} {'mean':>8} {'min':>6} {'max':>6} {'time/run':>10}")
    rows = [(name, name, 1, {}) for name in STRATEGY_NAMES]
    rows += [(f"{name} b={batch}", name, batch, {}) for name in ("mcts", "evolution")]
    rows += [("mcts, earlier defaults", "mcts", 1, EARLIER_MCTS), ("mcts, thompson rollouts", "mcts", 1, THOMPSON),
             ("mcts, tail root", "mcts", 1, TAIL_ROOT)]
    medians: dict[str, float] = {}
    for title_, name, b, kw in rows:
        start = time.perf_counter()
        counts = run(name, space, seeds, threshold, batch=b, **kw)
        elapsed = (time.perf_counter() - start) / len(seeds)
        medians[title_] = statistics.median(counts)
        print(f"{title_:<24} {medians[title_]:>8.1f} {statistics.mean(counts):>8.1f} {min(counts):>6d} "
              f"{max(counts):>6d} {elapsed * 1000:>8.1f}ms")
    rnd = medians["random reference"] = random_median(space, threshold, reference_seeds)
    print(f"\nrandom search's median over {reference_seeds} seeds: {rnd:.1f} (over the {len(seeds)} seeds "
          f"above: {medians['random']:.1f}); every ratio below divides by the {reference_seeds}-seed median")
    print(f"\nMCTS / random      = {medians['mcts'] / rnd:.2f}   (target <= 0.5; over random's {len(seeds)}-seed "
          f"median: {medians['mcts'] / medians['random']:.2f})")
    print(f"evolution / random = {medians['evolution'] / rnd:.2f}")
    print(f"with {batch} asks in flight (virtual loss): MCTS / random = {medians[f'mcts b={batch}'] / rnd:.2f}, "
          f"evolution / random = {medians[f'evolution b={batch}'] / rnd:.2f}")
    print(f"earlier MCTS defaults (mean-value UCT c=0.15, uniform rollouts) / random = "
          f"{medians['mcts, earlier defaults'] / rnd:.2f}")
    print(f"MCTS with Thompson rollouts (--rollout thompson) / random = {medians['mcts, thompson rollouts'] / rnd:.2f}")
    print(f"MCTS with the tail root (--root tail) / random = {medians['mcts, tail root'] / rnd:.2f}")
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="search seeds per strategy (default 20)")
    parser.add_argument("--table-seed", type=int, default=0, help="numpy seed of the synthetic tables")
    parser.add_argument("--batch", type=int, default=8, help="asks in flight for the batched rows (default 8)")
    parser.add_argument("--measured", type=Path, default=MEASURED, help="table of measured rewards (CSV)")
    parser.add_argument("--spread", type=int, default=0, metavar="K",
                        help="also give MCTS ÷ random over K more synthetic tables of each kind (table seeds after "
                             "the tuning ones: 7 .. 6+K), as a distribution")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    print(f"evaluations to the first top-1% candidate, {args.seeds} search seeds (0..{args.seeds - 1}), "
          f"table seed {args.table_seed}; interaction sd {INTERACTION}, noise sd {NOISE}")
    report(f"structured table {'x'.join(map(str, OPTION_COUNTS))} with {len(FORBID)} exclusions (the P3 table)",
           bench_space(args.table_seed), seeds, args.batch)
    report(f"gated table {'x'.join(map(str, GATED_COUNTS))}",
           TabulatedSpace.gated(GATED_COUNTS, args.table_seed, interaction=INTERACTION, noise=NOISE), seeds,
           args.batch)
    if args.measured.exists():
        table = measured_space(args.measured)
        report(f"measured table {args.measured.name} ({table.size()} candidates of a sub-space of examples/space.kd, "
               f"{sum(table.reward(p) is None for p in table.paths())} rejected)", table, seeds, args.batch)
    else:
        print(f"\n(no measured table at {args.measured})")
    if args.spread:
        spread(args.spread, seeds)
    return 0


def spread(k: int, seeds: Sequence[int]) -> None:
    """MCTS ÷ random (medians over ``seeds``) on ``k`` gated and ``k`` structured tables that were neither tuned on
    (table seeds 1-6) nor reported (0): how often the goal holds on a fresh table of each kind, for the default MCTS,
    with Thompson rollouts and with the tail root; a run is stuck when it needs more than 5x random search's median."""
    print(f"\n### MCTS ÷ random over {k} more tables of each kind (table seeds 7..{6 + k})\n")
    print(f"{'table kind':<24} {'median':>7} {'geomean':>8} {'max':>6} {'<= 0.5':>8} {'stuck runs':>11}")
    for kind in ("gated", "structured"):
        variants = {"mcts": {}, "thompson": THOMPSON, "tail root": TAIL_ROOT}
        ratios: dict[str, list[float]] = {title: [] for title in variants}
        stuck = dict.fromkeys(ratios, 0)
        for t in range(7, 7 + k):
            space = (TabulatedSpace.gated(GATED_COUNTS, t, interaction=INTERACTION, noise=NOISE) if kind == "gated"
                     else bench_space(t))
            threshold = space.top_threshold(0.01)
            rnd = random_median(space, threshold)
            for title, kw in variants.items():
                counts = run("mcts", space, seeds, threshold, **kw)
                ratios[title].append(statistics.median(counts) / rnd)
                stuck[title] += sum(c > 5 * rnd for c in counts)
        for title, rs in ratios.items():
            geo = math.exp(statistics.mean(math.log(r) for r in rs))
            print(f"{kind + ('' if title == 'mcts' else ', ' + title):<24} {statistics.median(rs):>7.2f} {geo:>8.2f} "
                  f"{max(rs):>6.2f} {sum(r <= 0.5 for r in rs):>4d}/{k} {stuck[title]:>7d}/{k * len(seeds)}")


if __name__ == "__main__":
    raise SystemExit(main())
