"""The search command: a space of distillers in, `best.kd` and a report out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import values
from .app import command, option_value, plain_console
from .params import (
    AT_LEAST_0,
    AT_LEAST_1,
    PROXY_INPUT_SIZE,
    Data,
    DataRoot,
    Device,
    InputSize,
    Number,
    Seed,
    Student,
    Teacher,
    TeacherWeights,
    TrainSubset,
)

FRACTION = Number(float, 0, 1, low_open=True)  # (0, 1]
DENSITY = Number(float, 0, 1, low_open=True, high_open=True)  # (0, 1): a density of 1 is a dense student


@command(source="space_file")
def search(
    space_file: Path = typer.Argument(..., help="The .kd file holding a `space` block."),
    teacher: Teacher = ...,
    student: Student = ...,
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
    offline: bool = typer.Option(True, "--offline-teacher/--live-teacher",
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
    space_name: Optional[str] = typer.Option(None, "--space", help="Which space of the file."),
    out: Path = typer.Option(Path("runs/search"), "--out", help="Output folder (store, best.kd, report)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search stored in --out."),
    final_epochs: int = typer.Option(0, "--final-epochs", help="Retrain the top 3 and KD this long (test accuracy).",
                                     parser=AT_LEAST_0),
    final_seeds: int = typer.Option(3, "--final-seeds", help="Seeds for the final retraining.",
                                    parser=AT_LEAST_1),
) -> None:
    """Search a space of distillers with MCTS (or random / evolution) and write the best as best.kd."""
    from ..api import SearchSettings
    from ..api import search as run_search
    from ..errors import KDError, did_you_mean
    from ..files import check_output_folder
    from ..search.driver import STRATEGIES
    from ..search.executor import check_executor
    from ..search.run import check_search_folder, load_space
    from ..search.space import SearchSpace
    from ..training.tracking import command_line

    size, _ = values.input_size(input_size)
    values.data_config(name=data, root=data_root, input_size=size, seed=seed, augment=False,
                       train_subset=train_subset)
    values.models(size[0], teacher=teacher, student=student)
    if rollout not in ("mast", "random"):
        raise KDError(f"unknown rollout policy `{rollout}` (command-line value)", hint="choose mast or random")
    if strategy.strip().lower() not in STRATEGIES:
        raise KDError(f"unknown search strategy `{strategy}` (command-line value)",
                      hint=did_you_mean(strategy, STRATEGIES) or f"choose one of: {', '.join(STRATEGIES)}")
    check_output_folder(out)
    values.device(device)
    with option_value("--executor"):
        check_executor(executor, ray_address, device, cpus_per_candidate, gpus_per_candidate)
    SearchSpace(load_space(str(space_file), space_name))  # a bad space fails before any training
    check_search_folder(out, resume)  # so does a foreign --out folder, before anything is written
    settings = SearchSettings(space_file=space_file, teacher=teacher, student=student, space=space_name,
                              teacher_weights=teacher_weights, data=data, data_root=data_root, input_size=size,
                              train_subset=train_subset, budget=budget, epochs=epochs, subset=subset,
                              entropy=entropy, offline_teacher=offline, sparse=sparse, strategy=strategy, c=c,
                              rollout=rollout, workers=workers, executor=executor, ray_address=ray_address,
                              cpus_per_candidate=cpus_per_candidate, gpus_per_candidate=gpus_per_candidate,
                              seed=seed, device=device, out=out, resume=resume,
                              final_epochs=final_epochs, final_seeds=final_seeds)
    summary = run_search(settings, console=plain_console(stderr=True), command=command_line())
    if summary["best"] is None:
        raise typer.Exit(1)
