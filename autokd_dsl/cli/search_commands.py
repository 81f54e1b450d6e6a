"""The search command: a space of distillers in, `best.kd` and a report out."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import values
from .app import command, option_value, plain_console
from .params import (
    AT_LEAST_0,
    AT_LEAST_1,
    PROXY_INPUT_SIZE,
    Config,
    Data,
    DataRoot,
    Device,
    InputSize,
    Number,
    Seed,
    TeacherWeights,
    Tensorboard,
    TrainSubset,
    settings,
)

FRACTION = Number(float, 0, 1, low_open=True)  # (0, 1]
DENSITY = Number(float, 0, 1, low_open=True, high_open=True)  # (0, 1): a density of 1 is a dense student


@command(source="space_file")
def search(
    ctx: typer.Context,
    space_file: Optional[Path] = typer.Argument(None, help="The .kd file holding a `space` block."),
    teacher: Optional[List[str]] = typer.Option(None, "--teacher", help="Teacher architecture; repeat for several."),
    student: Optional[str] = typer.Option(None, "--student", help="Student architecture."),
    teacher_weights: TeacherWeights = None,
    data: Data = "digits",
    data_root: DataRoot = None,
    input_size: InputSize = PROXY_INPUT_SIZE,
    train_subset: TrainSubset = None,
    budget: int = typer.Option(48, "--budget", help="Candidates to evaluate.", parser=AT_LEAST_1),
    epochs: int = typer.Option(6, "--epochs", help="Proxy training epochs per candidate.", parser=AT_LEAST_1),
    subset: float = typer.Option(1.0, "--subset", help="Fraction of the training split used by the proxy, in "
                                 "(0, 1] (below 1: drawn by teacher entropy).", parser=FRACTION),
    entropy: bool = typer.Option(True, "--entropy/--uniform", help="Draw the subset by teacher entropy."),
    offline_teacher: bool = typer.Option(True, "--offline-teacher/--live-teacher",
                                         help="Cache teacher outputs once (default) or run the teacher per batch."),
    sparse: Optional[float] = typer.Option(None, "--sparse", help="Train a sparse student at this density, in "
                                           "(0, 1).", parser=DENSITY),
    strategy: str = typer.Option("mcts", "--strategy", help="mcts, random or evolution."),
    c: float = typer.Option(0.7, "--c", help="UCT exploration constant (on min-max normalised rewards), >= 0.",
                            parser=Number(float, 0)),
    rollout: str = typer.Option("mast", "--rollout", help="MCTS rollout policy: mast (guided by the mean reward "
                                                        "of each choice) or random (uniform)."),
    workers: int = typer.Option(1, "--workers", help="Evaluate this many candidates at once (processes, or "
                                "Ray tasks in flight with --executor ray).", parser=AT_LEAST_1),
    executor: str = typer.Option("local", "--executor", help="local (in-process or a process pool) or ray "
                                                            "(the `ray` extra; a local instance or a cluster)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: auto (the cluster "
                                              "this machine joined) or HOST:PORT; default: start a local instance."),
    cpus_per_candidate: float = typer.Option(1.0, "--cpus-per-candidate", help="Ray: CPUs each candidate holds.",
                                             parser=Number(float, 0)),
    gpus_per_candidate: float = typer.Option(0.0, "--gpus-per-candidate", help="Ray: GPUs each candidate holds "
                                             "(fractional: 0.25 packs four candidates on one device).",
                                             parser=Number(float, 0)),
    seed: Seed = 0,
    device: Device = "cpu",
    space: Optional[str] = typer.Option(None, "--space", help="Which space of the file."),
    out: Path = typer.Option(Path("runs/search"), "--out", help="Output folder (store, best.kd, report)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search stored in --out."),
    final_epochs: int = typer.Option(0, "--final-epochs", help="Retrain the top 3 and every baseline this long (test "
                                     "accuracy).",
                                     parser=AT_LEAST_0),
    final_seeds: int = typer.Option(3, "--final-seeds", help="Seeds for the final retraining.",
                                    parser=AT_LEAST_1),
    baselines: str = typer.Option("kd,fitnet", "--baselines", help="Library distillers scored under the same proxy "
                                  "next to the CE-only baseline (comma-separated)."),
    fidelity: Optional[str] = typer.Option(None, "--fidelity", help="Epochs per rung, e.g. 2,6,18: every candidate "
                                           "at the first, the best 1/eta promoted (ASHA)."),
    eta: int = typer.Option(3, "--eta", help="Promotion rate of --fidelity: the best 1/eta go on (at least 2).",
                            parser=Number(int, 2)),
    tensorboard: Tensorboard = True,
    config: Config = None,
) -> None:
    """Search a space of distillers with MCTS (or random / evolution) and write the best as best.kd."""
    options = {k: v for k, v in locals().items() if k not in ("ctx", "config")}
    from ..api import SearchSettings
    from ..api import search as run_search
    from ..errors import KDError, did_you_mean
    from ..files import check_output_folder
    from ..search.driver import STRATEGIES
    from ..search.executor import check_executor
    from ..search.run import check_search_folder, load_baselines, load_space, parse_rungs
    from ..search.space import SearchSpace
    from ..training.tracking import command_line

    values.input_size(input_size)  # a bad value fails as a command-line value, before the settings are built
    options.update(teacher=values.one_or_list(teacher), teacher_weights=values.one_or_list(teacher_weights))
    with option_value("--fidelity"):
        options.update(fidelity=parse_rungs(fidelity, eta),
                       baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()))
    s = settings(SearchSettings, "search", ctx, config, options)
    values.data_config(name=s.data, root=s.data_root, input_size=s.input_size, seed=s.seed, augment=False,
                       train_subset=s.train_subset)
    values.models(s.input_size[0], teacher=s.teacher, student=s.student)
    if s.rollout not in ("mast", "random"):
        raise KDError(f"unknown rollout policy `{s.rollout}` (command-line value)", hint="choose mast or random")
    if s.strategy.strip().lower() not in STRATEGIES:
        raise KDError(f"unknown search strategy `{s.strategy}` (command-line value)",
                      hint=did_you_mean(s.strategy, STRATEGIES) or f"choose one of: {', '.join(STRATEGIES)}")
    check_output_folder(s.out)
    values.device(s.device)
    with option_value("--executor"):
        check_executor(s.executor, s.ray_address, s.device, s.cpus_per_candidate, s.gpus_per_candidate)
    SearchSpace(load_space(str(s.space_file), s.space))  # a bad space fails before any training
    with option_value("--baselines"):
        load_baselines(s.baselines)
    check_search_folder(s.out, s.resume)  # so does a foreign --out folder, before anything is written
    summary = run_search(s, console=plain_console(stderr=True), command=command_line())
    if summary["best"] is None:
        raise typer.Exit(1)
