"""A table of measured rewards: every candidate of a sub-space of `examples/space.kd`, scored once by a real proxy.

The sub-space is `bench/data/measured_space.kd` (a few hundred candidates after kind and shape pruning). Each
candidate is scored by the product's proxy evaluator on a cheap setting: resnet20 teacher → resnet8 student on
the embedded digits data at 3x8x8, 1 epoch on all 1,294 training images, reward on the validation split. The
rows go to `bench/data/measured_rewards.csv` as they finish, so a killed run resumes where it stopped (rows
already there are kept and not re-run). Search strategies can then be compared on real rewards without
training anything (`bench/search_efficiency.py`).

Columns: `path` (the option index chosen at each level of the sub-space, joined by dots; indices into each
level's full option list, in source order), `key` (the candidate's content key, as the search computes it:
candidates that compute the same loss share it, and one row's scores), `status` (ok or rejected), `reward`, `ce`
(validation cross-entropy), `gap` (feature gap), `seconds`, `reason` (why it was rejected), `term` (the
distillation term as `.kd` text).

A second table, for tuning search strategies on real rewards other than the reported ones, comes from the same
sub-space on other data: `--data fashion-mnist --train-subset 1300` (1x8x8, a class-balanced subset of about the
digits' size; the teacher trains on the whole split) writes `bench/data/measured_rewards_fashion_mnist.csv`. Two more,
kept out of tuning to check a tuned strategy on real rewards, came from `--train-subset 2600` and from `--epochs 2`
(`--out bench/data/measured_rewards_fashion_mnist_2600.csv`, `…_2ep.csv`).

Run: `python bench/measured_table.py [--data digits] [--train-subset N] [--limit N] [--epochs 1] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from rich.console import Console

from autokd_dsl.api import cache_dir
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.lang.printer import print_term
from autokd_dsl.search.evaluate import ProxyContext, ProxySettings, evaluate
from autokd_dsl.search.run import CompilesOn, load_space
from autokd_dsl.search.space import SearchSpace
from autokd_dsl.training.teacher import default_recipe, load_teacher, teacher_for

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "bench" / "data" / "measured_space.kd"
FIELDS = ["path", "key", "status", "reward", "ce", "gap", "seconds", "reason", "term"]
TEACHER, STUDENT, SIDE = "resnet20", "resnet8", 8
CHANNELS = {"digits": 3, "fashion-mnist": 1}


def load_table(path: Path) -> dict[str, dict]:
    """The rows written so far, by path."""
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(CHANNELS), default="digits")
    ap.add_argument("--train-subset", type=int, default=None, help="class-balanced training images (default: all)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default bench/data/measured_rewards.csv (digits), measured_rewards_<data>.csv otherwise")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="stop after this many new rows")
    args = ap.parse_args()
    if args.out is None:
        suffix = "" if args.data == "digits" else "_" + args.data.replace("-", "_")
        args.out = ROOT / "bench" / "data" / f"measured_rewards{suffix}.csv"
    torch.set_num_threads(1)
    shape = (CHANNELS[args.data], SIDE, SIDE)
    data_cfg = DataConfig(name=args.data, input_size=shape, augment=False, train_subset=args.train_subset)
    bundle = load_data(data_cfg)
    ckpt = teacher_for(TEACHER, data_cfg, default_recipe(TEACHER, args.data), cache_dir(), Console(stderr=True))
    teacher = load_teacher(ckpt, TEACHER, bundle.num_classes, shape)
    block = load_space(str(SPACE), None)
    probe = CompilesOn(teacher, TEACHER, STUDENT, bundle)
    space = SearchSpace(block, term_fits=probe, term_values=probe.values)  # keyed as the search keys them
    paths = list(space.paths())
    ctx = ProxyContext(space, teacher, STUDENT, bundle, ProxySettings(epochs=args.epochs), teacher_name=TEACHER)
    done = load_table(args.out)
    new = args.out.exists()
    print(f"{SPACE.relative_to(ROOT)}: {len(paths)} candidates after kind and shape pruning; "
          f"{len(done)} already in {args.out.name}", flush=True)
    by_key = {row["key"]: row for row in done.values()}  # paths of one function share its key and its row
    start, count = time.perf_counter(), 0
    with args.out.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if not new:
            writer.writeheader()
        for path in paths:
            text = ".".join(map(str, path))
            if text in done or (args.limit is not None and count >= args.limit):
                continue
            cand, key = space.candidate(path), space.key(path)
            row = by_key.get(key)
            if row is None:
                out = evaluate(cand, ctx)
                row = by_key[key] = {
                    "key": key, "status": out.status, "reward": "" if out.reward is None else f"{out.reward:.6f}",
                    "ce": "" if out.ce is None else f"{out.ce:.6f}", "gap": "" if out.gap is None else f"{out.gap:.6f}",
                    "seconds": f"{out.seconds:.2f}", "reason": out.reason}
            writer.writerow(row | {"path": text, "term": print_term(cand.terms[-1]).strip()})
            f.flush()
            count += 1
            if count % 25 == 0:
                print(f"{count} new rows, {time.perf_counter() - start:.0f} s", flush=True)
    table = load_table(args.out)
    ok = [float(r["reward"]) for r in table.values() if r["status"] == "ok"]
    print(f"{len(table)} rows ({len(ok)} ok, {len(table) - len(ok)} rejected) in {args.out}; "
          f"this run: {count} new rows in {time.perf_counter() - start:.0f} s"
          + (f"; reward range {min(ok):.4f} to {max(ok):.4f}" if ok else ""))


if __name__ == "__main__":
    main()
