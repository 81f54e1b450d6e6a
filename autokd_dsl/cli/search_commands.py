"""The search command: a space of distillers in, `best.kd` and a report out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import values
from .app import command, plain_console
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
    workers: int = typer.Option(1, "--workers", help="Evaluate this many candidates at once (processes).",
                                parser=AT_LEAST_1),
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
    from ..data import DataConfig, load_data
    from ..errors import KDError, did_you_mean
    from ..files import check_output_folder
    from ..search.evaluate import ProxySettings
    from ..search.core import STRATEGIES
    from ..search.run import SearchConfig, check_search_folder, load_space
    from ..search.space import SearchSpace
    from ..search.run import search as run
    from ..training.teacher import obtain_teacher

    console = plain_console(stderr=True)
    size, _ = values.input_size(input_size)
    data_cfg = values.data_config(name=data, root=data_root, input_size=size, seed=seed, augment=False,
                                  train_subset=train_subset)
    values.models(size[0], teacher=teacher, student=student)
    if rollout not in ("mast", "random"):
        raise KDError(f"unknown rollout policy `{rollout}` (command-line value)", hint="choose mast or random")
    if strategy.strip().lower() not in STRATEGIES:
        raise KDError(f"unknown search strategy `{strategy}` (command-line value)",
                      hint=did_you_mean(strategy, STRATEGIES) or f"choose one of: {', '.join(STRATEGIES)}")
    check_output_folder(out)
    values.device(device)
    SearchSpace(load_space(str(space_file), space_name))  # a bad space fails before any training
    check_search_folder(out, resume)  # so does a foreign --out folder, before anything is written
    proxy = ProxySettings(epochs=epochs, subset=subset, entropy_sampling=entropy, offline_teacher=offline,
                          sparse_density=sparse, seed=seed)
    cfg = SearchConfig(space_file=str(space_file), space_name=space_name, teacher=teacher, student=student,
                       teacher_weights=str(teacher_weights) if teacher_weights else None, data=data,
                       data_root=str(data_root) if data_root else None, input_size=size, budget=budget,
                       train_subset=train_subset,
                       strategy=strategy, c=c, rollout=rollout, workers=workers, seed=seed, proxy=proxy, device=device,
                       final_epochs=final_epochs, final_seeds=final_seeds)
    bundle = load_data(data_cfg)
    # the teacher's data setting is the one `train` and `teacher` use, so they share the cached teacher
    teacher_cfg = DataConfig(name=data, root=data_root, input_size=size)
    teacher_net = obtain_teacher(teacher, teacher_weights, teacher_cfg, bundle.num_classes, console)
    summary = run(cfg, out, resume, teacher_net, bundle, console)
    if summary["best"] is None:
        raise typer.Exit(1)
