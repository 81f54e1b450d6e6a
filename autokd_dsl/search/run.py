"""`autokd-dsl search`: the pieces put together (space → strategy → executor → store → report)."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
from rich.console import Console

from ..errors import KDError
from ..lang import ir
from ..lang.printer import print_block
from ..progress import SearchProgress
from .driver import make_strategy, run_search
from .evaluate import Outcome, ProxyContext, ProxySettings
from .executor import make_executor
from .mcts import MCTS_DEFAULT_C
from .space import SearchSpace
from .store import STORE_FILE, Store, check_store


class SearchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    space_file: str
    space_name: str | None = None
    teacher: str
    student: str
    teacher_weights: str | None = None
    data: str = "digits"
    data_root: str | None = None
    input_size: tuple[int, int, int] = (3, 16, 16)
    train_subset: int | None = None
    budget: int = 48
    strategy: str = "mcts"
    c: float = MCTS_DEFAULT_C
    rollout: str = "mast"
    workers: int = 1
    executor: str = "local"  # local (in-process / process pool) or ray; none of these four is part of the identity
    ray_address: str | None = None  # None: start a local Ray instance; "auto" or HOST:PORT: join a cluster
    cpus_per_candidate: float = 1.0
    gpus_per_candidate: float = 0.0
    seed: int = 0
    device: str = "cpu"  # where candidates train; not part of the search's identity
    final_epochs: int = 0  # > 0: retrain the top candidates and KD this long and report test accuracy
    final_seeds: int = 3
    final_top: int = 3
    baseline: str | None = "kd"
    proxy: ProxySettings = ProxySettings()

    def identity(self) -> dict:
        """What must match for --resume to continue this search."""
        keep = ("space_name", "teacher", "student", "teacher_weights", "data", "input_size", "train_subset",
                "strategy", "c", "rollout", "seed")
        return {k: getattr(self, k) for k in keep} | {"proxy": self.proxy.key(), "space_file": Path(self.space_file).name}


class CompilesOn:
    """Shape check for :class:`SearchSpace`: does a distiller compile on this teacher and a fresh student?"""

    def __init__(self, teacher, teacher_name: str, student_name: str, bundle):
        from ..models import create_model

        self.teacher, self.teacher_name, self.student_name = teacher, teacher_name, student_name
        self.input_size = tuple(bundle.train.images.shape[1:])
        device = next(teacher.parameters()).device
        self.student = create_model(student_name, num_classes=bundle.num_classes, in_chans=self.input_size[0])
        self.student.to(device)

    def __call__(self, block: ir.Block) -> bool:
        from ..compiler.build import compile_distiller

        try:
            compile_distiller(block, self.teacher, self.student, self.input_size, teacher_name=self.teacher_name,
                              student_name=self.student_name)
        except KDError:
            return False
        return True


def load_space(path: str, name: str | None) -> ir.Block:
    from ..lang.check import check_file

    program = check_file(path)
    spaces = [b for b in program.blocks if b.kind == "space"]
    if name:
        block = program.block(name)
        if block is None or block.kind != "space":
            raise KDError(f"{path} has no space `{name}`", hint="its spaces: " + (", ".join(b.name for b in spaces)
                                                                                 or "none"))
        return block
    if len(spaces) != 1:
        raise KDError(f"{path} holds {len(spaces)} spaces", hint="a search needs one `space NAME:` block; "
                      "pick one with --space" if spaces else "write a `space NAME:` block with alternatives")
    return spaces[0]


# what a search folder may hold besides its store (written before the store or after the search)
SEARCH_FILES = {"run.json", "space.kd", "tensorboard", "best.kd", "evaluations.csv", "report.md", "tree.graphml",
                "best_reward.png", "final", "final.json"}


def check_search_folder(out: Path, resume: bool) -> None:
    """Refuse, before anything is written, an --out folder that holds another program's files or a search
    without --resume; a store file is only read (a foreign one is left untouched)."""
    db = Path(out) / STORE_FILE
    if db.exists() or db.is_symlink():
        check_store(db)
        if not resume:
            raise KDError(f"{out} already holds a search", hint="pass --resume to continue it, or choose another "
                          "--out")
    elif Path(out).is_dir():
        foreign = sorted(p.name for p in Path(out).iterdir() if p.name not in SEARCH_FILES)
        if foreign:
            raise KDError(f"--out {out} (command-line value) holds other files ({', '.join(foreign[:3])}) and no "
                          "search store", hint="a search writes into a new or empty folder, or resumes its own: "
                          "choose another --out")


def open_store(out: Path, cfg: SearchConfig, resume: bool) -> Store:
    db = out / STORE_FILE
    check_search_folder(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(db)
    identity = store.meta().get("identity")
    wanted = json.loads(json.dumps(cfg.identity(), sort_keys=True))
    if identity is not None and identity != wanted:
        diff = sorted(k for k in set(identity) | set(wanted) if identity.get(k) != wanted.get(k))
        raise KDError(f"{out} holds a search with other settings ({', '.join(diff)})",
                      hint="resume with the same settings, or choose another --out")
    store.set_meta({"identity": cfg.identity(), "config": cfg.model_dump(mode="json")})
    return store


def search(cfg: SearchConfig, out: Path, resume: bool, teacher, bundle, console: Console, on_row=None) -> dict:
    """Run the search; every evaluation goes to the store before the next starts.

    ``on_row(row)`` sees every candidate's store row in evaluation order (TensorBoard logging).
    """
    block = load_space(cfg.space_file, cfg.space_name)
    check_search_folder(out, resume)
    kind_valid = SearchSpace(block)
    space = SearchSpace(block, term_fits=CompilesOn(teacher, cfg.teacher, cfg.student, bundle))
    mcts_options = {"c": cfg.c, "rollout": cfg.rollout} if cfg.strategy == "mcts" else {}
    strategy = make_strategy(cfg.strategy, space, seed=cfg.seed, **mcts_options)
    store = open_store(out, cfg, resume)  # only once the space, the strategy and the folder are known good
    settings_key = cfg.proxy.key()
    done_before = store.count()
    console.print(f"space `{block.name}`: {kind_valid.num_levels()} choice levels, {kind_valid.size()} kind-valid "
                  f"candidates (those that do not fit the networks' shapes are pruned as the tree grows); "
                  f"strategy {cfg.strategy}, budget {cfg.budget}" + (f", {done_before} already evaluated"
                                                                     if done_before else ""))
    ctx = ProxyContext(kind_valid, teacher, cfg.student, bundle, cfg.proxy, teacher_name=cfg.teacher,
                       device=cfg.device)
    ray_options = {"address": cfg.ray_address, "cpus_per_candidate": cfg.cpus_per_candidate,
                   "gpus_per_candidate": cfg.gpus_per_candidate} if cfg.executor == "ray" else {}
    executor = make_executor(ctx, cfg.workers, cfg.executor, **ray_options)
    progress = SearchProgress(console, cfg.budget)

    def advance(row: dict) -> None:
        progress.finished(row["reward"], row["status"], row["key"][:8])
        if on_row is not None:
            on_row(row)

    def evaluate(paths):
        blocks = [space.candidate(p) for p in paths]
        rows = [store.get(b.key, settings_key) for b in blocks]
        todo = [i for i, r in enumerate(rows) if r is None]
        outcomes = executor.map([print_block(blocks[i]) for i in todo]) if todo else []
        for i, outcome in zip(todo, outcomes):
            row = _row(blocks[i], paths[i], outcome, settings_key)
            store.add(row)
            rows[i] = row
        for row in rows:
            advance(row)
        return [r["reward"] if r["status"] == "ok" else None for r in rows]

    try:
        with progress:
            if hasattr(executor, "submit"):
                results = _search_in_flight(strategy, space, store, settings_key, executor, cfg.budget, advance)
            else:
                results = run_search(strategy, evaluate, cfg.budget, batch=max(1, cfg.workers))
            baseline = _baseline(cfg, ctx, store, settings_key, executor, console)
    finally:
        executor.close()
    from .report import write_outputs

    summary = write_outputs(out, store, space, strategy, cfg, baseline, console)
    summary["evaluated"] = len(results)
    if cfg.final_epochs > 0:
        from .final import retrain

        top = [r for r in sorted(store.rows(), key=lambda r: -(r["reward"] or -1e30)) if r["status"] == "ok"]
        picks = [(f"rank {i} ({r['key'][:8]})", r["kd"]) for i, r in enumerate(top[: cfg.final_top], 1)]
        if baseline is not None:
            picks.append(("KD (library/kd.kd)", baseline["kd"]))
        summary["final"] = retrain(out, picks, teacher, cfg.student, bundle, cfg.final_epochs, cfg.final_seeds,
                                   console)
    summary["teacher_runs"] = ctx.teacher_runs
    store.close()
    return summary


def _search_in_flight(strategy, space, store: Store, settings_key: str, executor, budget: int, advance) -> list:
    """Up to ``executor.workers`` candidates run at once; each result goes to the store as it arrives.

    The store is the single source of truth: on --resume its rows are told to the strategy first (they count
    against the budget), so no finished candidate is trained again, whatever order results arrived in before.
    """
    from . import Evaluation
    from .executor import run_in_flight

    def reward(row):
        return row["reward"] if row["status"] == "ok" else None

    replayed = []
    for row in store.rows():
        if row["settings"] == settings_key:
            path = tuple(json.loads(row["path"]))
            strategy.tell(path, reward(row))
            replayed.append(Evaluation(path, row["key"], reward(row)))
            advance(row)
    blocks: dict = {}

    def known(path):
        blocks[path] = space.candidate(path)
        row = store.get(blocks[path].key, settings_key)
        if row is None:
            return False, None
        del blocks[path]
        advance(row)
        return True, reward(row)

    def submit(path):
        executor.submit(path, print_block(blocks[path]))

    def wait():
        path, outcome = executor.next_done()
        row = _row(blocks.pop(path), path, outcome, settings_key)
        store.add(row)
        advance(row)
        return path, reward(row)

    return replayed + run_in_flight(strategy, known, submit, wait, budget - len(replayed), executor.workers)


def _row(block: ir.Block, path, outcome: Outcome, settings_key: str, baseline: int = 0) -> dict:
    return {"key": block.key, "settings": settings_key, "kd": print_block(block), "path": list(path),
            "reward": outcome.reward, "ce": outcome.ce, "gap": outcome.gap, "status": outcome.status,
            "reason": outcome.reason, "seconds": outcome.seconds, "losses": outcome.losses, "baseline": baseline}


def _baseline(cfg: SearchConfig, ctx, store: Store, settings_key: str, executor, console) -> dict | None:
    """KD (the library file) under the same proxy settings, for the report."""
    if not cfg.baseline:
        return None
    from ..compiler.build import load_distiller
    from ..lang.library import library_file

    block = load_distiller(library_file(cfg.baseline))
    row = store.get(block.key, settings_key)
    if row is None:
        outcome = executor.map([print_block(block)])[0]
        row = _row(block, [], outcome, settings_key, baseline=1)
        store.add(row)
    return row
