"""P4: does the search find something better than KD on a low-data proxy?

Fashion-MNIST at 1x16x16, the cached resnet56 teacher of `bench/kd_gain.py` (default recipe), a resnet20
student on 500 class-balanced training images. A 32-candidate MCTS search over `examples/space.kd` (proxy:
`--epochs` epochs on those 500 images, reward on the validation split), then the top 3 and KD retrained with
3 seeds for `--final-epochs` epochs: test accuracy mean ± sd. Resumable (`--out` keeps the store and runs).

Run: `python bench/search_quality.py [--budget 32] [--epochs 10] [--final-epochs 40]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--final-epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategy", default="mcts")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "search-quality")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "autokd_dsl", "search", str(ROOT / "examples" / "space.kd"), "--teacher",
           "resnet56", "--student", "resnet20", "--data", "fashion-mnist", "--input-size", "1x16x16",
           "--train-subset", "500", "--subset", "1.0", "--epochs", str(args.epochs), "--budget", str(args.budget),
           "--strategy", args.strategy, "--final-epochs", str(args.final_epochs), "--final-seeds", str(args.seeds),
           "--out", str(args.out)]
    if (args.out / "search.sqlite").exists():
        cmd.append("--resume")
    subprocess.run(cmd, check=True, cwd=ROOT)
    rows = json.loads((args.out / "final.json").read_text())
    kd = next(r for r in rows if r["label"].startswith("KD"))
    print(f"\n{args.strategy} search, {args.budget} candidates ({args.epochs} proxy epochs on 500 images), "
          f"final {args.final_epochs} epochs × {args.seeds} seeds, test accuracy %:\n")
    print("| distiller | test acc. (mean ± sd) | Δ vs KD |\n|---|---|---|")
    for r in rows:
        body = [ln.strip() for ln in r["kd"].splitlines() if ln.strip() and not ln.strip().startswith("#")]
        first = " ; ".join(body[1:])  # the terms, without the `distiller NAME:` header
        print(f"| {r['label']}: `{first}` | {100 * r['mean']:.2f} ± {100 * r['sd']:.2f} | "
              f"{100 * (r['mean'] - kd['mean']):+.2f} |")


if __name__ == "__main__":
    main()
