"""Proxy fidelity: does the search's reward order candidates as full training does?

Fashion-MNIST at 1x16x16, the resnet56 teacher of `bench/kd_gain.py` (trained once and cached), a resnet20
student on 500 class-balanced training images (the same 500 for every run). Candidates: the library distillers
that apply (`--library`), a cross-entropy-only baseline, and `--space-candidates` candidates drawn (seeded) from
`examples/space.kd`. Each candidate is

- scored by the product's proxy (`autokd_dsl.search.evaluate`: probe, train, score) at every rung of
  `--rungs` (epochs; each rung is its own proxy run of that length, as a search with `--epochs E` runs it),
  with proxy seed 0 and again with seed 1 (the noise of the proxy);
- trained `--epochs` (40) epochs with the same recipe as `bench/kd_gain.py` and tested on the 10 000 test
  images, with seed 0 and then seed 1 (the second seed in order of reward, so the leaders get it first).

From the validation pass of each proxy run it keeps the parts of every reward variant: validation
cross-entropy, the feature gap, validation accuracy, and KL(teacher ‖ student) on the validation images.
It prints Spearman ρ between each reward variant and test accuracy, per rung, over all candidates, over a
tuning half and a held-out half (a seeded split), and over the best third by reward; the top-pick regret; and
the proxy's noise (the two seeds of one candidate) against the spread between candidates.

Everything is cached in `--out`/results.json as it finishes (and the 40-epoch runs in `--out`/final/), so a
killed run resumes without repeating work. 1 torch thread.

Run: `python bench/proxy_fidelity.py [--space-candidates 13] [--rungs 2,6,18] [--phase all]`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from kd_gain import fixed_val
from rich.console import Console

from autokd_dsl.api import cache_dir
from autokd_dsl.compiler.build import compile_distiller, load_distiller
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.errors import KDError
from autokd_dsl.lang import ir
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.library import library_dir
from autokd_dsl.lang.printer import print_term
from autokd_dsl.models import create_model
from autokd_dsl.search import evaluate as proxy
from autokd_dsl.search.space import SearchSpace, Slot
from autokd_dsl.training.student import TrainConfig, make_student, subset_train, train
from autokd_dsl.training.teacher import default_recipe, load_teacher, teacher_for

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = "distiller scratch:\n    ce: logits ~ labels -> ce -> 1\n"
LIBRARY = "kd,fitnet,at,sp,pkt,nst,cwd,dist,dkd,rkd,vid,pkd"
# reward variants: the product's rewards (`autokd-dsl search --reward NAME`), by name; the default first
VARIANTS = {name: proxy.REWARDS[name].value for name in
            [proxy.DEFAULT_REWARD, *(n for n in proxy.REWARDS if n != proxy.DEFAULT_REWARD)]}


# ---- results cache ----------------------------------------------------------------------------------------


class Results:
    """results.json: {"proxy": {id: {seed: {rung: parts}}}, "final": {id: {seed: test accuracy}}}."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"proxy": {}, "final": {}, "candidates": {}}

    def get(self, *keys):
        node = self.data
        for k in keys:
            node = node.get(str(k)) if isinstance(node, dict) else None
            if node is None:
                return None
        return node

    def put(self, value, *keys) -> None:
        node = self.data
        for k in keys[:-1]:
            node = node.setdefault(str(k), {})
        node[str(keys[-1])] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


# ---- candidates -------------------------------------------------------------------------------------------


def candidates(args, teacher, bundle) -> dict[str, ir.Block]:
    """Library distillers that fit the pair, the CE-only baseline, and seeded draws from the space; a candidate
    fits when it compiles and passes the product's probe (every term finite, varying, and teaching the student),
    as a search would require before training it."""
    out = {"scratch": check_text(SCRATCH, "<scratch>").blocks[0]}
    space_file = ROOT / "examples" / "space.kd"
    space = SearchSpace(check_text(space_file.read_text(encoding="utf-8"), str(space_file)).blocks[0])
    library = {name: load_distiller(library_dir() / f"{name}.kd") for name in args.library.split(",")}
    probe_ctx = proxy.ProxyContext(space, teacher, args.student, subset_train(bundle, 64, 0),
                                   proxy.ProxySettings(epochs=min(int(r) for r in args.rungs.split(","))),
                                   teacher_name=args.teacher,
                                   extra_taps=list(library.values()))

    def why_not(block) -> str:
        torch.manual_seed(0)
        student = create_model(args.student, bundle.num_classes, args.input[0])
        try:
            loss = compile_distiller(block, teacher, student, args.input)
        except KDError as err:
            return err.message
        return proxy._Runner(student, loss, probe_ctx, block).probe()

    for name, block in library.items():
        reason = why_not(block)
        if reason:
            print(f"skipped {name}: {reason}", flush=True)
            continue
        out[name] = block
    rng, seen, tries = random.Random(args.seed), {b.key for b in out.values()}, 0
    drawn = 0
    while drawn < args.space_candidates and tries < 50 * args.space_candidates:
        tries += 1
        path = ()
        while len(path) < space.num_levels():
            path += (rng.choice(space.options(path)),)
        block = space.candidate(path)
        if block.key in seen:
            continue
        if why_not(block):
            continue
        seen.add(block.key)
        out[f"space-{block.key[:8]}"] = block
        drawn += 1
    return out


def term_text(block: ir.Block) -> str:
    terms = [print_term(t).strip() for t in block.terms if not any(tap.teacher_point.is_labels for tap in t.taps)]
    return "; ".join(terms) or "cross-entropy only"


class _AllTaps:
    """The `space` argument of ProxyContext: every tap of every candidate (the teacher is run once for them)."""

    def __init__(self, blocks):
        taps = {tap for b in blocks for t in b.terms for tap in t.taps}
        self.slots = [[Slot("tap", tuple(sorted(taps, key=lambda t: t.key)), 0, None)]]


# ---- one proxy run, with every reward's parts --------------------------------------------------------------


def proxy_run(block: ir.Block, ctx) -> dict:
    """The product's proxy (compile, probe, train) and a validation pass keeping CE, gap, accuracy and KL."""
    start = time.perf_counter()
    torch.manual_seed(ctx.settings.seed)
    student = create_model(ctx.student_name, num_classes=ctx.num_classes, in_chans=ctx.input_size[0])
    loss = compile_distiller(block, ctx.teacher, student, ctx.input_size, teacher_name=ctx.teacher_name,
                             student_name=ctx.student_name)
    runner = proxy._Runner(student, loss, ctx, block)  # with the block: the probe checks every term
    reason = runner.probe()
    if reason or runner.train() is None:
        return {"status": "rejected", "reason": reason or "non-finite during training",
                "seconds": time.perf_counter() - start}
    parts = runner.score()  # validation CE, gap, accuracy and KL(teacher ‖ student), as the product computes them
    return {"status": "ok", **parts, "seconds": time.perf_counter() - start}


# ---- statistics ------------------------------------------------------------------------------------------


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def test_accuracy(res: Results, cid: str) -> float | None:
    accs = [v for v in (res.get("final", cid) or {}).values()]
    return statistics.mean(accs) if accs else None


def reward(res: Results, cid: str, variant: str, rung: int, seed: int = 0) -> float | None:
    parts = res.get("proxy", cid, seed, rung)
    if not parts:
        return None
    return VARIANTS[variant](parts) if parts["status"] == "ok" else -1e9


# A scorer orders the candidates as a search would: `variant@rung` (every candidate trained that long, ranked by
# that reward), or a ladder `a@r1>b@r2`: every candidate ranked by reward a after r1 epochs, the best 1/ETA of them
# promoted to r2 epochs and ranked there by reward b, above every candidate not promoted, as
# `autokd-dsl search --fidelity r1,r2 --reward a,b --eta 3` ranks them (here promotion is synchronous: the best
# third of all candidates, where the search promotes as results arrive).
ETA = 3


def parse_scorer(text: str) -> list[tuple[str, int]]:
    steps = [(v, int(r)) for v, _, r in (part.strip().rpartition("@") for part in text.split(">"))]
    if len(steps) > 2 or any(v not in VARIANTS for v, _ in steps):
        raise SystemExit(f"bad scorer `{text}`: give `variant@rung` or `variant@rung>variant@rung`")
    return steps


def scorer_cost(text: str) -> float:
    """Proxy epochs per candidate."""
    steps = parse_scorer(text)
    return steps[0][1] + (steps[1][1] / ETA if len(steps) > 1 else 0.0)


def scores(res: Results, ids: list[str], scorer: str, seed: int = 0) -> dict[str, float]:
    """Candidate → a value in the scorer's order (larger is better); candidates without a proxy result left out."""
    steps = parse_scorer(scorer)
    (v0, r0), later = steps[0], steps[1:]
    base = {c: reward(res, c, v0, r0, seed) for c in ids}
    base = {c: x for c, x in base.items() if x is not None}
    if not later:
        return base
    (v1, r1), = later
    promoted = sorted((c for c in base if base[c] > -1e8), key=lambda c: -base[c])[: len(base) // ETA]
    top = {c: reward(res, c, v1, r1, seed) for c in promoted}
    top = {c: x for c, x in top.items() if x is not None}
    order = sorted(base, key=lambda c: (c in top, top[c] if c in top else base[c]))
    return {c: float(i) for i, c in enumerate(order)}


def rho(res: Results, ids: list[str], scorer: str) -> tuple[float, int]:
    got = scores(res, ids, scorer)
    pairs = [(got[c], test_accuracy(res, c)) for c in ids if c in got and test_accuracy(res, c) is not None]
    if len(pairs) < 3:
        return float("nan"), len(pairs)
    return spearman([a for a, _ in pairs], [b for _, b in pairs]), len(pairs)


def table(res: Results, ids: list[str], rungs: list[int], label: str) -> None:
    print(f"\nSpearman ρ(reward, test accuracy), {label} ({len(ids)} candidates):\n")
    print("| reward | " + " | ".join(f"{r} ep" for r in rungs) + " |\n|---|" + "---:|" * len(rungs))
    for v in VARIANTS:
        cells = []
        for r in rungs:
            value, n = rho(res, ids, f"{v}@{r}")
            cells.append(f"{value:.2f} (n={n})" if n >= 3 else "—")
        print(f"| {v} | " + " | ".join(cells) + " |")


def ladders(rungs: list[int]) -> list[str]:
    """Every two-rung ladder that ends at the top rung."""
    return [f"{a}@{r}>{b}@{rungs[-1]}" for r in rungs[:-1] for a in VARIANTS for b in VARIANTS]


def ladder_table(res: Results, rungs: list[int], tune: list[str], held: list[str], ids: list[str]) -> None:
    top = rungs[-1]
    print(f"\nLadders (eta {ETA}): rank by the row's reward, promote the best third to {top} epochs and rank those "
          f"by the column's reward; ρ over the tuning half / held-out half / all\n")
    print("| promote by | " + " | ".join(f"then {b}@{top}" for b in VARIANTS) + " |\n|---|"
          + "---:|" * len(VARIANTS))
    for r in rungs[:-1]:
        for a in VARIANTS:
            cells = []
            for b in VARIANTS:
                got = [rho(res, part, f"{a}@{r}>{b}@{top}")[0] for part in (tune, held, ids)]
                cells.append(" / ".join(f"{x:.2f}" for x in got))
            print(f"| {a}@{r} | " + " | ".join(cells) + " |")


def top_stats(res: Results, ids: list[str], scorer: str) -> tuple[float, float, str, float]:
    """ρ over the best third by the scorer, top-pick regret, the first pick, and its test accuracy."""
    got = scores(res, ids, scorer)
    scored = sorted([(got[c], test_accuracy(res, c), c) for c in ids if c in got
                     and test_accuracy(res, c) is not None], key=lambda s: -s[0])
    top = scored[: max(3, math.ceil(len(scored) / 3))]
    value = spearman([s[0] for s in top], [s[1] for s in top])
    regret = 100 * (max(s[1] for s in top) - top[0][1]) if top else float("nan")
    return value, regret, top[0][2] if top else "", 100 * top[0][1] if top else float("nan")


def noise(res: Results, ids: list[str], variant: str, rung: int) -> tuple[float, float, int]:
    """Mean |difference| between the two proxy seeds of one candidate, and the sd of rewards across candidates
    (candidates scored and not rejected under both seeds)."""
    pairs = [(reward(res, c, variant, rung, 0), reward(res, c, variant, rung, 1)) for c in ids]
    # a candidate rejected under either seed (its reward is the -1e9 floor) has no noise to measure
    diffs = [abs(a - b) for a, b in pairs if a is not None and b is not None and min(a, b) > -1e8]
    spread = [reward(res, c, variant, rung) for c in ids if (reward(res, c, variant, rung) or -1e9) > -1e8]
    sd = statistics.stdev(spread) if len(spread) > 1 else float("nan")
    return (statistics.mean(diffs) if diffs else float("nan")), sd, len(diffs)


def describe(scorer: str) -> str:
    steps = parse_scorer(scorer)
    if len(steps) == 1:
        return f"{steps[0][0]}, {steps[0][1]} ep"
    return f"{steps[0][0]} at {steps[0][1]} ep, best third to {steps[1][1]} ep by {steps[1][0]}"


def report(res: Results, ids: list[str], rungs: list[int], split_seed: int, default: str | None) -> None:
    names = res.data.get("candidates", {})
    print("\n| candidate | distillation term | " + " | ".join(f"reward {r} ep" for r in rungs)
          + " | test acc % (seeds) |\n|---|---|" + "---:|" * (len(rungs) + 1))
    today = next(iter(VARIANTS))
    for c in sorted(ids, key=lambda c: -(test_accuracy(res, c) or 0)):
        rs = [reward(res, c, today, r) for r in rungs]
        cells = ["—" if x is None else ("rejected" if x < -1e8 else f"{x:.3f}") for x in rs]
        accs = res.get("final", c) or {}
        acc = test_accuracy(res, c)
        acc_text = "—" if acc is None else f"{100 * acc:.2f} ({len(accs)})"
        print(f"| {c} | `{names.get(c, '')}` | " + " | ".join(cells) + f" | {acc_text} |")
    table(res, ids, rungs, "all candidates")
    shuffled = sorted(ids)
    random.Random(split_seed).shuffle(shuffled)
    tune, held = sorted(shuffled[: len(ids) // 2]), sorted(shuffled[len(ids) // 2:])
    table(res, tune, rungs, "tuning half")
    table(res, held, rungs, "held-out half")
    if len(rungs) > 1:
        ladder_table(res, rungs, tune, held, ids)
    best = default
    if best is None:  # choose on the tuning half among one-rung rewards and ladders: the highest ρ, then the cheapest
        options = [f"{v}@{r}" for v in VARIANTS for r in rungs] + (ladders(rungs) if len(rungs) > 1 else [])
        found = {k: rho(res, tune, k) for k in options}
        found = {k: value for k, (value, n) in found.items() if n >= 3 and not math.isnan(value)}
        best = max(found, key=lambda k: (round(found[k], 2), -scorer_cost(k))) if found else None
    if best is None:
        return
    print(f"\nchosen on the tuning half: {describe(best)} ({scorer_cost(best):g} proxy epochs per candidate)")
    print("\n| reward, rung | epochs per candidate | ρ held-out | ρ all | ρ best third (all) | regret (points) | "
          "first pick (test %) |\n|---|---:|---:|---:|---:|---:|---|")
    shown = [best, *(f"{today}@{r}" for r in rungs)]
    if len(rungs) > 1:
        shown.append(f"{today}@{rungs[len(rungs) // 2]}>acc-ce@{rungs[-1]}")
    for k in dict.fromkeys(shown):
        rho_h, _ = rho(res, held, k)
        rho_a, n = rho(res, ids, k)
        if n < 3:
            continue
        rho_t, regret, pick, pick_acc = top_stats(res, ids, k)
        print(f"| {describe(k)} | {scorer_cost(k):g} | {rho_h:.2f} | {rho_a:.2f} | {rho_t:.2f} | {regret:.2f} | "
              f"{pick} ({pick_acc:.2f}) |")
    print("\nproxy noise: mean |reward(seed 0) − reward(seed 1)| of one candidate against the sd of rewards "
          "across candidates\n\n| reward | rung | noise | spread (sd) | noise ÷ spread | candidates with 2 seeds |"
          "\n|---|---:|---:|---:|---:|---:|")
    for v in dict.fromkeys([parse_scorer(best)[-1][0], today]):
        for r in rungs:
            n, sd, k = noise(res, ids, v, r)
            if k:
                print(f"| {v} | {r} | {n:.4f} | {sd:.4f} | {n / sd:.2f} | {k} |")


# ---- main -----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", default=LIBRARY)
    ap.add_argument("--space-candidates", type=int, default=13)
    ap.add_argument("--rungs", default="2,6,18")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--subset", type=int, default=500)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--input-size", default="1x16x16")
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--seed", type=int, default=0, help="draws from the space")
    ap.add_argument("--split-seed", type=int, default=0, help="the tuning / held-out split")
    ap.add_argument("--phase", default="all", help="all, or a comma list of proxy0, final0, proxy1, final1, "
                                                   "report (report only prints what the cache holds)")
    ap.add_argument("--default", default=None, help="report this `variant@rung` (or ladder `a@r1>b@r2`) as the "
                                                    "default instead of choosing one on the tuning half")
    ap.add_argument("--out", type=Path, default=Path("runs/proxy_fidelity"))
    args = ap.parse_args()
    args.input = tuple(int(x) for x in args.input_size.split("x"))
    torch.set_num_threads(1)
    rungs = [int(r) for r in args.rungs.split(",")]
    phases = ["proxy0", "final0", "proxy1", "final1"] if args.phase == "all" else args.phase.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    res = Results(args.out / "results.json")
    log = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)

    data_cfg = DataConfig(name=args.data, input_size=args.input)  # as bench/kd_gain.py: the same cached teacher
    t_path = teacher_for(args.teacher, data_cfg, default_recipe(args.teacher, data_cfg.name), cache_dir(), log)
    full = load_data(data_cfg)
    teacher = load_teacher(t_path, args.teacher, full.num_classes, args.input)
    train_500 = subset_train(fixed_val(full, args.val_size), args.subset, 0)  # one image subset for everything
    final_bundle = subset_train(fixed_val(full, 200), args.subset, 0)  # test accuracy only: a small val split
    blocks = candidates(args, teacher, full)
    for cid, block in blocks.items():
        if res.get("candidates", cid) is None:
            res.put(term_text(block), "candidates", cid)
    ids = list(blocks)
    log.print(f"{len(ids)} candidates: {', '.join(ids)}")
    start = time.perf_counter()

    contexts = {}

    def context(seed: int, rung: int):
        if (seed, rung) not in contexts:
            settings = proxy.ProxySettings(epochs=rung, subset=1.0, seed=seed)
            contexts[(seed, rung)] = proxy.ProxyContext(_AllTaps(blocks.values()), teacher, args.student, train_500,
                                                        settings, teacher_name=args.teacher)
        return contexts[(seed, rung)]

    def do_proxy(seed: int):
        for cid in ids:
            for rung in rungs:
                if res.get("proxy", cid, seed, rung) is None:
                    ctx = context(seed, rung)
                    parts = proxy_run(blocks[cid], ctx)
                    res.put(parts, "proxy", cid, seed, rung)
                    log.print(f"proxy seed {seed} {rung:2d} ep {cid:16s} {parts.get('ce', float('nan')):.4f} CE "
                              f"{parts.get('acc', float('nan')):.3f} acc ({parts['seconds']:.0f}s, "
                              f"{time.perf_counter() - start:.0f}s in all)")

    def do_final(seed: int, which: list[str]):
        quiet = Console(file=io.StringIO(), soft_wrap=True)
        for cid in which:
            if res.get("final", cid, seed) is not None:
                continue
            cfg = TrainConfig(epochs=args.epochs, lr=0.05, batch_size=64, schedule="cosine", seed=seed,
                              offline_teacher=True)
            student = make_student(args.student, full.num_classes, args.input[0], seed)
            t0 = time.perf_counter()
            result = train(blocks[cid], teacher, student, final_bundle, cfg, args.out / "final" / cid / f"seed{seed}",
                           resume=True, console=quiet, cache_root=cache_dir().parent / "teacher-outputs")
            res.put(result["test_accuracy"], "final", cid, seed)
            log.print(f"final seed {seed} {cid:16s} test {result['test_accuracy']:.2%} "
                      f"({time.perf_counter() - t0:.0f}s, {time.perf_counter() - start:.0f}s in all)")

    today = next(iter(VARIANTS))
    for phase in phases:
        if phase == "proxy0":
            do_proxy(0)
        elif phase == "proxy1":
            do_proxy(1)
        elif phase == "final0":
            do_final(0, ids)
        elif phase == "final1":  # best first by today's reward at the middle rung: the leaders get 2 seeds first
            mid = rungs[len(rungs) // 2]
            do_final(1, sorted(ids, key=lambda c: -(reward(res, c, today, mid) or -1e9)))
    print(f"\n{args.data} {args.input_size}; teacher {args.teacher} (test {teacher.kd_teacher['test_accuracy']:.2%}); "
          f"student {args.student} on {args.subset} class-balanced training images; proxy rewards on "
          f"{len(train_500.val)} validation images, rungs {args.rungs} epochs; "
          f"test accuracy after {args.epochs} epochs "
          f"(SGD lr 0.05, cosine) on the {len(full.test)} test images, mean over the seeds run.")
    report(res, ids, rungs, args.split_seed, args.default)
    print(f"\n{time.perf_counter() - start:.0f} s this run")


if __name__ == "__main__":
    main()
