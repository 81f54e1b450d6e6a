"""Does the bigger default space make a candidate slower? Seconds per candidate, old space against new.

Draws `--candidates` candidates (seeded, uniformly down the tree, shape-pruned on the two networks) from the
previous default space (stage3 | logits, no connector; embedded below) and as many from `examples/space.kd`, and
evaluates them interleaved (old, new, old, …) with the product's proxy evaluator, so both see the same machine
load: resnet110 → resnet20 on digits at 3x16x16, the cached teacher of the README's main command, `--epochs`
proxy epochs on all training images. Prints the median seconds per candidate of each space and their ratio.

Run: `python bench/space_cost.py [--candidates 8] [--epochs 1]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from rich.console import Console

from autokd_dsl.api import cache_dir
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_term
from autokd_dsl.search.evaluate import ProxyContext, ProxySettings, evaluate
from autokd_dsl.search.run import CompilesOn
from autokd_dsl.search.space import SearchSpace
from autokd_dsl.training.teacher import default_recipe, load_teacher, teacher_for

ROOT = Path(__file__).resolve().parents[1]
OLD = """space autokd:
    ce: logits ~ labels -> ce -> 1
    kd: stage3 | logits
      -> (none | spatial_attention | channel_attention | mask(0.65) | dropout(0.1))
      -> (none | pool(2) | pool(4) | patches(2) | patches(4))
      -> (none | batch_gram | channel_gram | softmax(hw) | softmax(c) | normalize(c) | normalize(hw) | minmax)
      -> (l1 | mse | smooth_l1 | kl | cosine | pearson)
      -> (0.1 | 0.5 | 1 | 5 | 10 | 20 | 50)
"""


def draw(space: SearchSpace, n: int, rng: random.Random) -> list:
    out, seen = [], set()
    while len(out) < n:
        path = ()
        while len(path) < space.num_levels():
            path += (rng.choice(space.options(path)),)
        block = space.candidate(path)
        if block.key not in seen:
            seen.add(block.key)
            out.append(block)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data_cfg = DataConfig(name="digits", input_size=(3, 16, 16), augment=False)
    bundle = load_data(data_cfg)
    teacher_cfg = DataConfig(name="digits", input_size=(3, 16, 16))
    path = teacher_for("resnet110", teacher_cfg, default_recipe("resnet110", "digits"), cache_dir(), Console())
    teacher = load_teacher(path, "resnet110", bundle.num_classes, data_cfg.input_size)
    fits = CompilesOn(teacher, "resnet110", "resnet20", bundle)
    new_text = (ROOT / "examples" / "space.kd").read_text(encoding="utf-8")
    spaces = {name: SearchSpace(check_text(text).blocks[0], term_fits=fits) for name, text in
              (("old", OLD), ("new", new_text))}
    rng = random.Random(args.seed)
    drawn = {name: draw(space, args.candidates, rng) for name, space in spaces.items()}
    settings = ProxySettings(epochs=args.epochs)
    ctx = {name: ProxyContext(SearchSpace(check_text(text).blocks[0]), teacher, "resnet20", bundle, settings,
                              teacher_name="resnet110") for name, text in (("old", OLD), ("new", new_text))}
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(args.candidates):
        for name in ("old", "new"):
            block = drawn[name][i]
            out = evaluate(block, ctx[name])
            seconds[name].append(out.seconds)
            print(f"{name} {out.seconds:6.2f} s  {out.status:8s} {print_term(block.terms[-1]).strip()}", flush=True)
    old, new = statistics.median(seconds["old"]), statistics.median(seconds["new"])
    print(f"\n{args.candidates} candidates per space, {args.epochs} proxy epoch(s) on {len(bundle.train)} images, "
          f"interleaved: median {old:.2f} s (previous space) and {new:.2f} s (examples/space.kd) per candidate; "
          f"new ÷ old = {new / old:.2f}")


if __name__ == "__main__":
    main()
