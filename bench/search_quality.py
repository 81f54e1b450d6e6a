"""P4: does the search beat what a user would have tried by hand (KD and FitNet)?

One search seed per run (`--seed`): the default search (`autokd-dsl search` with its default proxy and
promotion settings; `--search-args` adds flags) over `examples/space.kd` on Fashion-MNIST at 1x16x16, the cached
resnet56 teacher of `bench/kd_gain.py`, a resnet20 student on 500 class-balanced training images. Then the
top 3 candidates, KD and FitNet (the library files) are retrained `--final-epochs` epochs with `--final-seeds`
seeds each and tested on the test split: mean ± sd, and the differences to KD and FitNet. The winner is what
`autokd-dsl search --final-epochs E --final-seeds K` writes to best.kd: of the retrained top candidates, the one with
the best mean validation accuracy (the reward's first pick, rank 1, is reported too). The goal for each search
seed: the winner ≥ KD + 1.0 point and ≥ FitNet − 0.3.

It also prints the search's wall time next to the time it would take to train every applicable library
distiller fully (one `--final-epochs` run each, at the mean time of this run's final trainings).

Resumable: `--out`/seed<k> keeps the search store and the final runs. Run for seeds 0, 1 and 2:
`python bench/search_quality.py --seed 0` (then `--seed 1`, `--seed 2`).
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]


def top_candidates(db: Path, n: int) -> list[tuple[str, float, str]]:
    """The best ``n`` evaluated candidates (not baselines): (kd text, reward, key). Where the store keeps rungs,
    a candidate counts at its highest rung, and candidates that reached a higher rung rank first."""
    con = sqlite3.connect(db)
    cols = {r[1] for r in con.execute("PRAGMA table_info(evaluations)")}
    rung = "rung" if "rung" in cols else "0"
    rows = con.execute(f"SELECT key, kd, reward, {rung} FROM evaluations "
                       "WHERE status = 'ok' AND baseline = 0").fetchall()
    con.close()
    best: dict[str, tuple] = {}
    for key, kd, reward, r in rows:
        if key not in best or (r, reward) > (best[key][3], best[key][2]):
            best[key] = (key, kd, reward, r)
    ranked = sorted(best.values(), key=lambda row: (row[3], row[2]), reverse=True)
    return [(kd, reward, key) for key, kd, reward, _ in ranked[:n]]


def search(args, out: Path) -> float:
    """Run (or resume) the search; its wall time in seconds, summed over the runs that made it."""
    times_file = out / "search_seconds.json"
    if (out / "best.kd").exists() and times_file.exists():
        return sum(json.loads(times_file.read_text()))
    cmd = [sys.executable, "-m", "autokd_dsl", "search", str(ROOT / "examples" / "space.kd"), "--teacher",
           args.teacher, "--student", args.student, "--data", args.data, "--input-size", args.input_size,
           "--train-subset", str(args.train_subset), "--seed", str(args.seed), "--out", str(out),
           *shlex.split(args.search_args)]
    if (out / "search.sqlite").exists():
        cmd.append("--resume")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    times = json.loads(times_file.read_text()) if times_file.exists() else []
    times.append(time.perf_counter() - start)
    times_file.write_text(json.dumps(times))
    return sum(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="the search seed")
    ap.add_argument("--final-epochs", type=int, default=40)
    ap.add_argument("--final-seeds", type=int, default=3)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--input-size", default="1x16x16")
    ap.add_argument("--train-subset", type=int, default=500)
    ap.add_argument("--search-args", default="", help="more `autokd-dsl search` flags, e.g. \"--budget 32\"")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "search-quality")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out / f"seed{args.seed}"
    search_seconds = search(args, out)

    from autokd_dsl.api import obtain_teacher
    from autokd_dsl.compiler.build import compile_distiller, load_distiller
    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.errors import KDError
    from autokd_dsl.lang.library import library_dir
    from autokd_dsl.models import create_model
    from autokd_dsl.options import parse_input_size
    from autokd_dsl.search.final import final_pick, retrain

    size = parse_input_size(args.input_size)
    # the data and teacher exactly as `autokd-dsl search` loads them
    bundle = load_data(DataConfig(name=args.data, input_size=size, seed=args.seed, augment=False,
                                  train_subset=args.train_subset))
    quiet = Console(file=io.StringIO())
    teacher = obtain_teacher(args.teacher, None, DataConfig(name=args.data, input_size=size), bundle.num_classes, quiet)
    top = top_candidates(out / "search.sqlite", args.top)
    picks = [(f"rank {i}", kd) for i, (kd, _, _) in enumerate(top, 1)]
    picks += [(name, (library_dir() / f"{name.lower()}.kd").read_text(encoding="utf-8")) for name in ("KD", "FitNet")]
    start = time.perf_counter()
    rows = retrain(out, picks, teacher, args.student, bundle, args.final_epochs, args.final_seeds, quiet,
                   baselines=["KD", "FitNet"])
    run_seconds = [json.loads(p.read_text())["seconds"] for p in (out / "final").glob("*/result.json")]
    per_run = statistics.mean(run_seconds) if run_seconds else time.perf_counter() - start

    student = create_model(args.student, bundle.num_classes, size[0])
    applicable = []
    for path in sorted(library_dir().glob("*.kd")):
        try:
            compile_distiller(load_distiller(path), teacher, student, size)
            applicable.append(path.stem)
        except KDError:
            pass
    by = {r["label"]: r for r in rows}
    kd, fitnet = by["KD"]["mean"], by["FitNet"]["mean"]
    rewards = {f"rank {i}": reward for i, (_, reward, _) in enumerate(top, 1)}
    print(f"\nsearch seed {args.seed}: {args.data} {args.input_size}, {args.teacher} → {args.student} on "
          f"{args.train_subset} images; default search{' ' + args.search_args if args.search_args else ''}; "
          f"final {args.final_epochs} epochs × {args.final_seeds} seeds, test accuracy %:\n")
    print("| distiller (CE term omitted) | proxy reward | val. acc. | test acc. (mean ± sd) | Δ vs KD | Δ vs FitNet |\n"
          "|---|---:|---:|---|---:|---:|")
    for r in rows:
        terms = [ln.strip() for ln in r["kd"].splitlines()
                 if ln.strip() and not ln.strip().startswith(("#", "distiller ")) and "~ labels" not in ln]
        reward = f"{rewards[r['label']]:.3f}" if r["label"] in rewards else "—"
        print(f"| {r['label']}: `{' ; '.join(terms)}` | {reward} | {100 * r['val']:.2f} | "
              f"{100 * r['mean']:.2f} ± {100 * r['sd']:.2f} | "
              f"{100 * (r['mean'] - kd):+.2f} | {100 * (r['mean'] - fitnet):+.2f} |")
    pick = final_pick(rows)
    win = pick["mean"] if pick is not None else float("nan")
    first = by["rank 1"]["mean"] if "rank 1" in by else float("nan")
    print(f"\nwinner: {pick['label'] if pick else '-'} (best validation accuracy of the retrained top {args.top}); "
          f"the reward's first pick (rank 1) − KD = {100 * (first - kd):+.2f}, "
          f"− FitNet = {100 * (first - fitnet):+.2f}")
    print(f"winner − KD = {100 * (win - kd):+.2f} (goal ≥ +1.0: {'met' if win - kd >= 0.01 else 'missed'}); "
          f"winner − FitNet = {100 * (win - fitnet):+.2f} "
          f"(goal ≥ −0.3: {'met' if win - fitnet >= -0.003 else 'missed'})")
    print(f"search wall time {search_seconds:.0f} s; training the {len(applicable)} applicable library distillers "
          f"fully (one {args.final_epochs}-epoch run each at {per_run:.0f} s) would take "
          f"{len(applicable) * per_run:.0f} s")


if __name__ == "__main__":
    main()
