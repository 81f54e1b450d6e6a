"""`autokd-dsl search`: the pieces put together (space → strategy → executor → store → report)."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
from rich.console import Console

from ..errors import KDError, did_you_mean
from ..lang import ir
from ..lang.printer import print_block
from ..progress import LOG_FILE, SearchProgress
from .driver import make_strategy
from .equivalence import CompilesOn
from .evaluate import REWARDS, Outcome, ProxyContext, ProxySettings
from .executor import make_executor
from .fidelity import run_promotions
from .mcts import MCTS_DEFAULT_C, MCTS_DEFAULT_ROLLOUT, MCTS_DEFAULT_ROOT
from .report import candidate_text, teachers_text
from .space import SearchSpace
from .store import STORE_FILE, Store, check_store


class SearchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    space_file: str
    space_name: str | None = None
    teacher: str | list[str]  # several teachers: a list, teacher1 first (part of the identity, in order)
    student: str
    teacher_weights: str | list[str] | None = None
    data: str = "digits"
    data_root: str | None = None
    input_size: tuple[int, int, int] = (3, 16, 16)
    train_subset: int | None = None
    budget: int = 48
    strategy: str = "mcts"
    c: float = MCTS_DEFAULT_C
    rollout: str = MCTS_DEFAULT_ROLLOUT
    root: str = MCTS_DEFAULT_ROOT  # how MCTS's root picks a first choice (uct or tail)
    workers: int = 1
    executor: str = "local"  # local (in-process / process pool) or ray; none of these four is part of the identity
    ray_address: str | None = None  # None: start a local Ray instance; "auto" or HOST:PORT: join a cluster
    cpus_per_candidate: float = 1.0
    gpus_per_candidate: float = 0.0
    seed: int = 0
    device: str = "cpu"  # where candidates train; not part of the search's identity
    amp: str = "off"  # candidates' training precision (off, bf16, fp16); not part of the identity either
    final_epochs: int = 0  # > 0: retrain the top candidates and KD this long and report test accuracy
    final_seeds: int = 3
    final_top: int = 3
    baselines: tuple[str, ...] = ("kd", "fitnet")  # library distillers scored next to the CE-only baseline
    fidelity: tuple[int, ...] | None = None  # epochs per rung (multi-fidelity promotion); None: one rung of epochs
    rewards: tuple[str, ...] | None = None  # one reward per rung (``--reward a,b``); None: proxy.reward at every rung
    eta: int = 3
    proxy: ProxySettings = ProxySettings()

    def identity(self) -> dict:
        """What must match for --resume to continue this search."""
        keep = ("space_name", "teacher", "student", "teacher_weights", "data", "input_size", "train_subset",
                "strategy", "c", "rollout", "seed", "fidelity", "eta")
        rewards = {"rewards": list(self.rewards)} if self.rewards else {}  # absent from stores made without it
        root = {"root": self.root} if self.root != MCTS_DEFAULT_ROOT else {}  # so are these two
        return {k: getattr(self, k) for k in keep} | {"proxy": self.proxy.key(),
                                                       "space_file": Path(self.space_file).name} | rewards | root

    @property
    def teachers(self) -> list[str]:
        return list(self.teacher) if isinstance(self.teacher, (list, tuple)) else [self.teacher]


def check_identity(identity: dict | None, cfg: SearchConfig, out: Path) -> None:
    """A stored search continues only with the settings it was started with (teachers, in order, included)."""
    wanted = json.loads(json.dumps(cfg.identity(), sort_keys=True))
    if identity is None or identity == wanted:
        return
    diff = sorted(k for k in set(identity) | set(wanted) if identity.get(k) != wanted.get(k))
    hint = "resume with the same settings, or choose another --out"
    if "teacher" in diff:
        hint = (f"it was searched with teachers {teachers_text(identity.get('teacher'))}; this run gives "
                f"{teachers_text(wanted.get('teacher'))}: " + hint)
    raise KDError(f"{out} holds a search with other settings ({', '.join(diff)}) (command-line value)", hint=hint)


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
SEARCH_FILES = {"run.json", "space.kd", LOG_FILE, "tensorboard", "best.kd", "evaluations.csv", "report.md",
                "tree.graphml", "best_reward.png", "final", "final.json"}


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
    check_identity(store.meta().get("identity"), cfg, out)
    store.set_meta({"identity": cfg.identity(), "config": cfg.model_dump(mode="json")})
    return store


CE_ONLY = "distiller ce_only:\n    ce: logits ~ labels -> ce -> 1\n"
"""The cross-entropy-only baseline every search scores: the student trained on the labels alone."""

BASELINE_LABELS = {"kd": "KD", "fitnet": "FitNet", "aver": "AVER"}


def parse_rungs(text: str | None) -> tuple[int, ...] | None:
    """``--fidelity 2,6,18`` → (2, 6, 18): increasing epoch counts; None when not given.

    >>> parse_rungs("2,6,18")
    (2, 6, 18)
    """
    if text is None or not text.strip():
        return None
    try:
        rungs = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise KDError(f"--fidelity `{text}` is not a list of epoch counts", hint="e.g. --fidelity 2,6,18") from None
    if any(r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)):
        raise KDError(f"--fidelity `{text}`: epochs per rung must be increasing and at least 1",
                      hint="e.g. --fidelity 2,6,18")
    return rungs


def rungs_of(cfg: SearchConfig) -> tuple[int, ...]:
    """Epochs per rung: ``--fidelity`` when given, else the one rung ``--epochs``."""
    return tuple(cfg.fidelity) if cfg.fidelity else (cfg.proxy.epochs,)


def parse_rewards(text: str, rungs: int) -> tuple[str, ...]:
    """``--reward`` → one reward name per rung: one name for every rung, or a comma list with one per rung.

    >>> parse_rewards("ce+gap", 2), parse_rewards("ce+gap, acc-ce", 2)
    (('ce+gap', 'ce+gap'), ('ce+gap', 'acc-ce'))
    """
    names = tuple(name.strip() for name in str(text).split(","))
    for name in names:
        if name not in REWARDS:
            raise KDError(f"unknown reward `{name}`",
                          hint=did_you_mean(name, REWARDS) or f"choose one of: {', '.join(REWARDS)}")
    if len(names) == 1:
        return names * rungs
    if len(names) != rungs:
        raise KDError(f"--reward `{text}` names {len(names)} rewards for {rungs} rung{'s' * (rungs != 1)}",
                      hint="give one reward for every rung, or one per rung of --fidelity "
                           "(e.g. --fidelity 6,18 --reward ce+gap,acc-ce)")
    return names


def rewards_of(cfg: SearchConfig) -> tuple[str, ...]:
    """The reward of each rung: ``cfg.rewards`` when given, else the proxy's reward at every rung."""
    return tuple(cfg.rewards) if cfg.rewards else (cfg.proxy.reward,) * len(rungs_of(cfg))


def rung_settings(cfg: SearchConfig) -> list[ProxySettings]:
    return [cfg.proxy.model_copy(update={"epochs": e, "reward": r}) for e, r in zip(rungs_of(cfg), rewards_of(cfg))]


def search(cfg: SearchConfig, out: Path, resume: bool, teacher, bundle, console: Console, on_row=None) -> dict:
    """Run the search; every evaluation goes to the store before the next starts.

    ``on_row(row)`` sees every candidate's store row in evaluation order (TensorBoard logging).
    """
    block = load_space(cfg.space_file, cfg.space_name)
    baselines = load_baselines(cfg.baselines, cfg.teachers)  # an unknown name fails before any training
    check_search_folder(out, resume)
    rungs, settings = rungs_of(cfg), rung_settings(cfg)
    settings_keys = [s.key() for s in settings]
    kind_valid = SearchSpace(block)
    probe = CompilesOn(teacher, cfg.teacher, cfg.student, bundle)
    unread = unread_teachers(block, len(cfg.teachers))
    space = SearchSpace(block, term_fits=probe, term_values=probe.values)
    mcts_options = {"c": cfg.c, "rollout": cfg.rollout, "root": cfg.root} if cfg.strategy == "mcts" else {}
    strategy = make_strategy(cfg.strategy, space, seed=cfg.seed, **mcts_options)
    store = open_store(out, cfg, resume)  # only once the space, the strategy and the folder are known good
    done_before = store.count()
    fidelity = (f", rungs of {'/'.join(map(str, rungs))} epochs (eta {cfg.eta})" if len(rungs) > 1
                else f", {rungs[0]} epochs each")
    if cfg.rewards:
        fidelity += f", rewards {' / '.join(cfg.rewards)}"
    console.print(f"space `{block.name}`: {kind_valid.num_levels()} choice levels, {kind_valid.size()} kind-valid "
                  f"candidates (those that do not fit the networks' shapes are pruned as the tree grows); "
                  f"strategy {cfg.strategy}, budget {cfg.budget}{fidelity}"
                  + (f", {done_before} already evaluated" if done_before else ""))
    if len(cfg.teachers) > 1:
        console.print(f"teachers: {teachers_text(cfg.teachers)}"
                      + (f"; no candidate reads teacher {', '.join(map(str, unread))} (taps without a number "
                         "read teacher 1)" if unread else ""))
    ctx = ProxyContext(kind_valid, teacher, cfg.student, bundle, cfg.proxy, teacher_name=cfg.teacher,
                       device=cfg.device, extra_taps=[b for _, b in baselines], amp=cfg.amp)
    ray_options = {"address": cfg.ray_address, "cpus_per_candidate": cfg.cpus_per_candidate,
                   "gpus_per_candidate": cfg.gpus_per_candidate} if cfg.executor == "ray" else {}
    executor = make_executor(ctx, cfg.workers, cfg.executor, **ray_options)
    progress = SearchProgress(console, cfg.budget)

    def advance(row: dict) -> None:
        if not row["rung"]:  # the bar counts candidates; promotions to later rungs are extra looks
            progress.finished(row["reward"], row["status"], candidate_text(row["kd"]))
        if on_row is not None:
            on_row(row)

    def run_jobs(items: list[tuple[ir.Block, list, str, int]], baseline: str | None = None) -> list[dict]:
        """(block, path, key, rung) → their rows: from the store, or evaluated (grouped by rung) and stored."""
        rows = [store.get(key, settings_keys[rung]) for _, _, key, rung in items]
        for rung in sorted({item[3] for item in items}):
            todo = [i for i, (r, item) in enumerate(zip(rows, items)) if r is None and item[3] == rung]
            if not todo:
                continue
            outcomes = executor.map([print_block(items[i][0]) for i in todo],
                                    None if settings[rung] == cfg.proxy else settings[rung])
            for i, outcome in zip(todo, outcomes):
                blk, path, key, _ = items[i]
                row = _row(blk, path, outcome, settings_keys[rung], key=key, rung=rung, epochs=rungs[rung],
                           baseline=baseline)
                store.add(row)
                rows[i] = store.get(key, settings_keys[rung])
        return rows

    def evaluate(jobs):
        rows = run_jobs([(space.candidate(j.path), list(j.path), j.key, j.rung) for j in jobs])
        for row in rows:
            advance(row)
        return [r["reward"] if r["status"] == "ok" else None for r in rows]

    try:
        with progress:
            if hasattr(executor, "submit") and len(rungs) == 1:
                results = _search_in_flight(strategy, space, store, settings_keys[0], executor, cfg.budget,
                                            rungs[0], advance)
            else:
                results = run_promotions(strategy, evaluate, cfg.budget, rungs, cfg.eta, batch=max(1, cfg.workers))
            scored = score_baselines(baselines, probe, run_jobs, len(rungs) - 1)
    finally:
        executor.close()
    from .report import write_outputs

    summary = write_outputs(out, store, space, strategy, cfg, scored, console)
    summary["evaluated"] = len(results)
    if cfg.final_epochs > 0:
        from .final import retrain

        picks = [(f"rank {i}", r["kd"]) for i, r in enumerate(summary["leaders"][: cfg.final_top], 1)]
        picks += [(b["label"], b["row"]["kd"]) for b in scored if b["row"] is not None]
        summary["final"] = retrain(out, picks, teacher, cfg.student, bundle, cfg.final_epochs, cfg.final_seeds,
                                   console, baselines=[b["label"] for b in scored if b["row"] is not None])
        choose_by_final(out, summary, store, cfg, scored, console)
    summary["teacher_runs"] = ctx.teacher_runs
    store.close()
    return summary


def choose_by_final(out: Path, summary: dict, store: Store, cfg: SearchConfig, scored: list[dict],
                    console: Console) -> None:
    """The final retraining is the longest look the search takes, so its winner is the retrained top candidate with
    the best mean validation accuracy (the proxy reward ranks them only by a few epochs). best.kd is rewritten when
    that is not the reward's first pick; ``summary["best"]`` becomes it."""
    from .final import final_pick
    from .report import write_best

    pick = final_pick(summary["final"])
    if pick is None:
        return
    stronger = [r for r in summary["final"] if r["baseline"] and r["val"] == r["val"] and r["val"] > pick["val"]]
    if stronger:
        names = ", ".join(f"{r['label']} ({100 * r['val']:.2f}%)" for r in stronger)
        note = (f"after the final retraining {names} has a better mean validation accuracy than every retrained "
                f"candidate (best {100 * pick['val']:.2f}%): the baseline is the stronger choice")
        console.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)
        with open(out / "report.md", "a", encoding="utf-8") as fh:
            fh.write(f"\nNote: {note}.\n")
    rank = int(pick["label"].split()[-1])
    first = next(r for r in summary["final"] if r["label"] == "rank 1")
    if rank == 1:
        console.print(f"final pick: rank 1 (validation accuracy {100 * pick['val']:.2f}% after the final retraining, "
                      "the best of the top candidates)")
        return
    best = summary["leaders"][rank - 1]
    chosen = (f"chosen by the final retraining ({cfg.final_epochs} epochs × {cfg.final_seeds} seeds): validation "
              f"accuracy {100 * pick['val']:.2f}%, the best of the top {cfg.final_top} by reward; the reward's "
              f"first pick had {100 * first['val']:.2f}%")
    write_best(out, best, store.rows(), cfg, scored, chosen_by=chosen)
    summary["best"] = best
    console.print(f"final pick: rank {rank} by reward → {out / 'best.kd'} ({chosen})")
    with open(out / "report.md", "a", encoding="utf-8") as fh:
        fh.write(f"\nbest.kd holds rank {rank} by reward: {chosen}.\n")


def _search_in_flight(strategy, space, store: Store, settings_key: str, executor, budget: int, epochs: int,
                      advance) -> list:
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
        if row["settings"] == settings_key and (row["rung"] or 0) == 0:
            path = tuple(json.loads(row["path"]))
            strategy.tell(path, reward(row))
            replayed.append(Evaluation(path, row["key"], reward(row)))
            advance(row)
    blocks: dict = {}

    def known(path):
        blocks[path] = space.candidate(path)
        row = store.get(space.key(path), settings_key)
        if row is None:
            return False, None
        del blocks[path]
        advance(row)
        return True, reward(row)

    def submit(path):
        executor.submit(path, print_block(blocks[path]))

    def wait():
        path, outcome = executor.next_done()
        key = space.key(path)
        store.add(_row(blocks.pop(path), path, outcome, settings_key, key=key, epochs=epochs))
        row = store.get(key, settings_key)
        advance(row)
        return path, reward(row)

    return replayed + run_in_flight(strategy, known, submit, wait, budget - len(replayed), executor.workers)


def check_amp(amp: str, device: str) -> None:
    """``--amp`` fits the device candidates train on: fp16 (with its gradient scaler) needs a CUDA GPU."""
    if amp == "fp16" and not str(device).startswith("cuda"):
        raise KDError(f"--amp fp16: candidates train on {device}, and fp16 autocast needs a CUDA device "
                      "(command-line value)", hint="on the CPU use --amp bf16 (CPU autocast runs in bfloat16), "
                      "or --amp off")


def check_teacher_classes(block: ir.Block, teachers, names: list[str], input_size) -> None:
    """Several teachers must predict the same classes: the error ``train`` gives, at the space's first teacher
    tap."""
    from types import SimpleNamespace

    import torch

    from ..compiler.taps import Model
    from ..compiler.teachers import check_classes

    nets = list(teachers) if isinstance(teachers, (list, tuple)) else [teachers]
    if len(nets) > 1:
        x = torch.randn(2, *input_size, device=next(nets[0].parameters()).device)
        check_classes(SimpleNamespace(teachers=[Model(n, name) for n, name in zip(nets, names)], x=x, block=block))


def unread_teachers(block: ir.Block, count: int) -> list[int]:
    """The teachers (numbered from 1) that no option of the space taps; a tap without a number is teacher 1."""
    read: set[int] = set()
    for term in block.terms:
        for tap in ir.term_taps(term):
            point = tap.teacher_point
            if point.is_labels:
                continue
            read |= set(range(1, count + 1)) if tap.each_teacher else {point.teacher_number or 1}
    return [k for k in range(1, count + 1) if k not in read]


def load_baselines(names, teachers: list[str] | None = None) -> list[tuple[str, ir.Block]]:
    """(label, distiller) of the CE-only baseline and each library distiller named (a located KDError else).

    With several ``teachers``, a single-teacher distiller (KD, FitNet) reads teacher 1, as in ``train``, and its
    label says so (``KD (library/kd.kd; teacher 1: resnet8)``); AVER (``library/aver.kd``, each teacher's soft
    targets with equal weights) is scored too, as the multi-teacher baseline.
    """
    from ..compiler.build import load_distiller
    from ..lang.check import check_text
    from ..lang.library import library_file

    several = teachers is not None and len(teachers) > 1
    out = [("CE only", check_text(CE_ONLY).blocks[0])]
    names = [n.strip().lower() for n in names]
    if several and "aver" not in names:
        names.append("aver")
    for name in names:
        if not name or name in ("ce", "ce_only"):
            continue
        block = load_distiller(library_file(name))
        label = f"{BASELINE_LABELS.get(name, name)} (library/{name}.kd"
        if several and unread_teachers(block, len(teachers)):
            label += f"; teacher 1: {teachers[0]}"
        out.append((label + ")", block))
    return out


def score_baselines(baselines, probe: CompilesOn, run_jobs, top: int) -> list[dict]:
    """Each baseline under the same proxy, or why it does not apply to this pair.

    A baseline is scored at the top rung (``row``, to compare with the leaders) and, with several rungs, at the
    lowest too (``rows[0]``, to compare with every candidate).
    """
    from .space import function_key

    scored, todo = [], []
    for label, block in baselines:
        entry = {"label": label, "row": None, "rows": {}, "reason": ""}
        scored.append(entry)
        try:
            probe.compile(block)
        except KDError as err:
            entry["reason"] = f"not applicable: {err.message}"
            continue
        key = function_key(block, probe.values)
        todo += [(entry, (block, [], key, rung)) for rung in sorted({0, top})]
    for (entry, item), row in zip(todo, run_jobs([item for _, item in todo], baseline="yes")):
        entry["rows"][item[3]] = row
        if item[3] == top:
            entry["row"] = row
    return scored


def _row(block: ir.Block, path, outcome: Outcome, settings_key: str, key: str | None = None, rung: int = 0,
         epochs: int | None = None, baseline: str | None = None) -> dict:
    return {"key": key or block.key, "settings": settings_key, "kd": print_block(block), "path": list(path),
            "reward": outcome.reward, "ce": outcome.ce, "gap": outcome.gap, "acc": outcome.acc,
            "status": outcome.status, "reason": outcome.reason, "seconds": outcome.seconds, "losses": outcome.losses,
            "baseline": int(baseline is not None), "label": block.name if baseline else None, "rung": rung,
            "epochs": epochs}


