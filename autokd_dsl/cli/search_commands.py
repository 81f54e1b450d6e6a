"""The search command: a space of distillers in, `best.kd` and a report out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import values
from .app import command, option_value, plain_console
from .params import (
    AT_LEAST_0,
    AT_LEAST_1,
    AT_LEAST_2,
    DENSITY,
    FRACTION,
    NON_NEGATIVE,
    PROXY_INPUT_SIZE,
    Config,
    Data,
    DataRoot,
    Device,
    InputSize,
    Seed,
    TeacherWeights,
    Tensorboard,
    TrainSubset,
    option,
    settings,
)

# the search's own options, by flag: the help text (ranges are checked by the settings model's ranges, shared with
# autokd_dsl.api.SearchSettings)
_HELP = dict(line.split(": ", 1) for line in """\
--teacher: Teacher architecture; repeat for several (teacher1, teacher2, … in this order).
--student: Student architecture.
--budget: Candidates to evaluate.
--epochs: Proxy training epochs per candidate.
--subset: Fraction of the training split used by the proxy, in (0, 1] (below 1: drawn by teacher entropy).
--sparse: Train a sparse student at this density, in (0, 1).
--strategy: mcts, random or evolution.
--c: UCT exploration constant (on rewards normalised by their rank among those told), >= 0.
--rollout: MCTS rollout policy: mast (guided by the mean reward of each choice), random (uniform) or thompson \
(a sampled additive model of the reward over the choices).
--root: How MCTS's root picks the first choice (the tap): uct (as every node, with 1.5 x c) or tail (in half of the \
asks, the first choice whose next candidate most probably beats the best so far).
--workers: Evaluate this many candidates at once (processes, or Ray tasks in flight with --executor ray).
--executor: local (in-process or a process pool) or ray (the `ray` extra; a local instance or a cluster).
--ray-address: With --executor ray: auto (the cluster this machine joined) or HOST:PORT; default: start a local \
instance.
--cpus-per-candidate: Ray: CPUs each candidate holds.
--gpus-per-candidate: Ray: GPUs each candidate holds (fractional: 0.25 packs four candidates on one device).
--amp: Candidates train in mixed precision: bf16, fp16 (CUDA only, with a gradient scaler) or off.
--space: Which space of the file.
--out: Output folder (store, best.kd, report).
--resume: Continue the search stored in --out.
--final-epochs: Retrain the top 3 and every baseline this long (test accuracy); best.kd becomes the top \
candidate with the best validation accuracy after it.
--final-seeds: Seeds for the final retraining.
--baselines: Library distillers scored under the same proxy next to the CE-only baseline (comma-separated); \
with several teachers AVER (library/aver.kd) too.
--fidelity: Epochs per rung, e.g. 2,6,18: every candidate at the first, the best 1/eta promoted (ASHA).
--reward: What the proxy scores: ce+gap (default), ce, ce+0.1gap, kl (to the teacher), acc or acc-ce; with \
--fidelity one per rung may be given (e.g. ce+gap,acc-ce).
--eta: Promotion rate of --fidelity: the best 1/eta go on (at least 2).
""".splitlines())


def _opt(flag: str, click_type=None):
    return option(flag, help=_HELP[flag], click_type=click_type)


@command(source="space_file")
def search(
    ctx: typer.Context,
    space_file: Path | None = typer.Argument(None, help="The .kd file holding a `space` block."),
    teacher: Annotated[list[str] | None, _opt("--teacher")] = None,
    student: Annotated[str | None, _opt("--student")] = None,
    teacher_weights: TeacherWeights = None,
    data: Data = "digits",
    data_root: DataRoot = None,
    input_size: InputSize = PROXY_INPUT_SIZE,
    train_subset: TrainSubset = None,
    budget: Annotated[int, _opt("--budget", AT_LEAST_1)] = 48,
    epochs: Annotated[int, _opt("--epochs", AT_LEAST_1)] = 6,
    subset: Annotated[float, _opt("--subset", FRACTION)] = 1.0,
    entropy: bool = typer.Option(True, "--entropy/--uniform", help="Draw the subset by teacher entropy."),
    offline_teacher: bool = typer.Option(True, "--offline-teacher/--live-teacher",
                                         help="Cache teacher outputs once (default) or run the teacher per batch."),
    sparse: Annotated[float | None, _opt("--sparse", DENSITY)] = None,
    strategy: Annotated[str, _opt("--strategy")] = "mcts",
    c: Annotated[float, _opt("--c", NON_NEGATIVE)] = 2.0,
    rollout: Annotated[str, _opt("--rollout")] = "mast",
    root: Annotated[str, _opt("--root")] = "uct",
    workers: Annotated[int, _opt("--workers", AT_LEAST_1)] = 1,
    executor: Annotated[str, _opt("--executor")] = "local",
    ray_address: Annotated[str | None, _opt("--ray-address")] = None,
    cpus_per_candidate: Annotated[float, _opt("--cpus-per-candidate", NON_NEGATIVE)] = 1.0,
    gpus_per_candidate: Annotated[float, _opt("--gpus-per-candidate", NON_NEGATIVE)] = 0.0,
    seed: Seed = 0,
    device: Device = "cpu",
    amp: Annotated[str, _opt("--amp")] = "off",
    space: Annotated[str | None, _opt("--space")] = None,
    out: Annotated[Path, _opt("--out")] = Path("runs/search"),
    resume: Annotated[bool, _opt("--resume")] = False,
    final_epochs: Annotated[int, _opt("--final-epochs", AT_LEAST_0)] = 0,
    final_seeds: Annotated[int, _opt("--final-seeds", AT_LEAST_1)] = 3,
    baselines: Annotated[str, _opt("--baselines")] = "kd,fitnet",
    fidelity: Annotated[str | None, _opt("--fidelity")] = None,
    eta: Annotated[int, _opt("--eta", AT_LEAST_2)] = 3,
    reward: Annotated[str, _opt("--reward")] = "ce+gap",
    tensorboard: Tensorboard = True,
    config: Config = None,
) -> None:
    """Search a space of distillers with MCTS (or random / evolution) and write the best as best.kd."""
    options = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    from ..api import SearchSettings, names_of
    from ..api import search as run_search
    from ..errors import KDError, did_you_mean
    from ..files import check_output_folder
    from ..search.driver import STRATEGIES
    from ..search.executor import check_executor
    from ..search.run import check_amp, check_search_folder, load_baselines, load_space, parse_rewards
    from ..search.space import SearchSpace
    from ..training.runtime import resolve_device
    from ..training.tracking import command_line

    values.input_size(input_size)  # a bad value fails as a command-line value, before the settings are built
    options.update(teacher=values.one_or_list(teacher), teacher_weights=values.one_or_list(teacher_weights))
    options.update(baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()))
    s = settings(SearchSettings, "search", ctx, config, options)
    values.data_config(name=s.data, root=s.data_root, input_size=s.input_size, seed=s.seed, augment=False,
                       train_subset=s.train_subset)
    values.models(s.input_size[0], teacher=s.teacher, student=s.student)
    if s.strategy.strip().lower() not in STRATEGIES:
        raise KDError(f"unknown search strategy `{s.strategy}` (command-line value)",
                      hint=did_you_mean(s.strategy, STRATEGIES) or f"choose one of: {', '.join(STRATEGIES)}")
    with option_value("--reward"):
        parse_rewards(s.reward, len(s.fidelity) if s.fidelity else 1)
    check_output_folder(s.out)
    values.device(s.device)
    with option_value("--amp"):
        check_amp(s.amp, str(resolve_device(s.device)))
    with option_value("--executor"):
        check_executor(s.executor, s.ray_address, s.device, s.cpus_per_candidate, s.gpus_per_candidate)
    SearchSpace(load_space(str(s.space_file), s.space))  # a bad space fails before any training
    with option_value("--baselines"):
        load_baselines(s.baselines, names_of(s.teacher))
    check_search_folder(s.out, s.resume)  # so does a foreign --out folder, before anything is written
    summary = run_search(s, console=plain_console(stderr=True), command=command_line())
    if summary["best"] is None:
        raise typer.Exit(1)
