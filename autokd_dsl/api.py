"""The Python API: ``autokd_dsl.teacher(...)``, ``autokd_dsl.train(...)`` and ``autokd_dsl.search(...)``.

Each takes a settings object (:class:`TeacherSettings`, :class:`TrainSettings`, :class:`SearchSettings`: the
command's options, validated by pydantic) and/or the same fields as keywords, and does what the command of the
same name does; the CLI and ``--config run.toml`` build the same objects::

    import autokd_dsl

    t = autokd_dsl.teacher(model="resnet20", data="digits", input_size="1x16x16", out="t.pt", device="cpu")
    result = autokd_dsl.train(file="library/kd.kd", teacher="resnet20", teacher_weights=t, student="resnet8",
                              data="digits", input_size="1x16x16", epochs=3, out="runs/kd", amp="bf16")
    result["test_accuracy"]

Under ``torchrun`` the same calls train data-parallel (rank and world size come from torchrun's environment).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from .errors import KDError
from .options import AT_LEAST_0, AT_LEAST_1, AT_LEAST_2, DENSITY, FRACTION, NON_NEGATIVE, Number

__all__ = ["SearchSettings", "TeacherSettings", "TrainSettings", "search", "teacher", "train"]


class _Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    @pydantic.field_validator("input_size", mode="before", check_fields=False)
    @classmethod
    def _size(cls, value: Any) -> Any:
        from .options import parse_input_size

        return parse_input_size(value) if isinstance(value, str) else value


class _Runtime(_Settings):
    """Where and how the run executes (see :class:`~autokd_dsl.training.runtime.Runtime`)."""

    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool | None = None
    workers: int | None = None
    tensorboard: bool = True

    def runtime(self):
        from .training.runtime import Runtime

        return Runtime(device=self.device, amp=self.amp, channels_last=self.channels_last, workers=self.workers,
                       tensorboard=self.tensorboard)


def _in(number: Number):
    """A settings field checked against the range its command-line option parses with."""
    return pydantic.AfterValidator(number)


class _Training(_Runtime):
    """What a training run (a teacher's or a student's) reads: the data, the recipe's overrides, the output."""

    data: str
    data_root: Path | None = None
    input_size: tuple[int, int, int] = (3, 32, 32)
    augment: bool | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    out: Path | None = None


class TeacherSettings(_Training):
    """``autokd-dsl teacher``: train a teacher with cross-entropy (``out`` None: into the teacher cache); a list
    of models trains each in turn (into the cache)."""

    model: str | list[str]


class TrainSettings(_Training):
    """``autokd-dsl train``: distil ``teacher`` into ``student`` with the distiller in ``file``; several teachers
    are a list (teacher1 first), with ``teacher_weights`` then one checkpoint per teacher, or None."""

    file: Path
    teacher: str | list[str]
    student: str
    distiller: str | None = None
    teacher_weights: Path | list[Path] | None = None
    train_subset: int | None = None
    resume: bool = False
    offline_teacher: bool = False


class SearchSettings(_Settings):
    """``autokd-dsl search``: search the space in ``space_file`` (see :class:`~autokd_dsl.search.run.SearchConfig`).

    Several teachers are a list (teacher1 first), ``teacher_weights`` then one checkpoint per teacher, or None.
    Numbers are checked against the ranges of the command's options (a config file's or a keyword's value too).
    """

    space_file: Path
    teacher: str | list[str]
    student: str
    space: str | None = None
    teacher_weights: Path | list[Path] | None = None
    data: str = "digits"
    data_root: Path | None = None
    input_size: tuple[int, int, int] = (3, 16, 16)
    train_subset: Annotated[int, _in(AT_LEAST_1)] | None = None
    budget: Annotated[int, _in(AT_LEAST_1)] = 48
    epochs: Annotated[int, _in(AT_LEAST_1)] = 6
    subset: Annotated[float, _in(FRACTION)] = 1.0
    entropy: bool = True
    offline_teacher: bool = True
    sparse: Annotated[float, _in(DENSITY)] | None = None
    strategy: str = "mcts"
    c: Annotated[float, _in(NON_NEGATIVE)] = 2.0  # MCTS_DEFAULT_C: UCT on rank-normalised rewards
    rollout: str = "mast"  # MCTS_DEFAULT_ROLLOUT
    root: str = "uct"  # MCTS_DEFAULT_ROOT
    workers: Annotated[int, _in(AT_LEAST_1)] = 1
    executor: str = "local"  # or "ray" (the `ray` extra): see README, Searching on a Ray cluster
    ray_address: str | None = None
    cpus_per_candidate: Annotated[float, _in(NON_NEGATIVE)] = 1.0
    gpus_per_candidate: Annotated[float, _in(NON_NEGATIVE)] = 0.0
    seed: Annotated[int, _in(AT_LEAST_0)] = 0
    device: str = "cpu"
    amp: Literal["off", "bf16", "fp16"] = "off"  # candidates' training precision
    reward: str = "ce+gap"  # a name of autokd_dsl.search.evaluate.REWARDS, or one per rung of fidelity ("a,b")
    out: Path = Path("runs/search")
    resume: bool = False
    final_epochs: Annotated[int, _in(AT_LEAST_0)] = 0
    final_seeds: Annotated[int, _in(AT_LEAST_1)] = 3
    baselines: tuple[str, ...] = ("kd", "fitnet")
    fidelity: tuple[int, ...] | None = None
    eta: Annotated[int, _in(AT_LEAST_2)] = 3
    tensorboard: bool = True

    @pydantic.field_validator("rollout")
    @classmethod
    def _rollout(cls, value: str) -> str:
        from .search.mcts import ROLLOUTS

        if value not in ROLLOUTS:
            raise KDError(f"unknown rollout policy `{value}`", hint=f"choose one of: {', '.join(ROLLOUTS)}")
        return value

    @pydantic.field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        from .search.mcts import ROOT_RULES

        if value not in ROOT_RULES:
            raise KDError(f"unknown root rule `{value}`", hint=f"choose one of: {', '.join(ROOT_RULES)}")
        return value

    @pydantic.field_validator("fidelity", mode="before")
    @classmethod
    def _rungs(cls, value: Any) -> Any:
        """Epochs per rung, as ``"2,6,18"`` or a sequence: increasing and at least 1."""
        from .search.run import parse_rungs

        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        return parse_rungs(value) if isinstance(value, str) else value


# ------------------------------------------------------------------------------------------- helpers


def _settings(model, settings, fields: dict):
    """``settings`` with ``fields`` over it, checked by ``model`` (a bad value is a KDError naming the field)."""
    from .config_file import settings_from

    if settings is not None and not isinstance(settings, model):
        raise KDError(f"expected {model.__name__}, got {type(settings).__name__}")
    if settings is not None and not fields:
        return settings
    base = settings.model_dump() if settings is not None else {}
    return settings_from(model, model.__name__.removesuffix("Settings").lower(), None, base | fields)


def plain_console(stderr: bool = False, quiet: bool = False):
    """A rich console for logs: no markup in paths, no wrapping of long lines when piped."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, markup=False, highlight=False, quiet=quiet)


def _console(console, dist):
    if not dist.main:  # one log per run: the other ranks stay quiet
        return plain_console(quiet=True)
    return console or plain_console()


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def run_folder(distiller: str, student: str) -> Path:
    """The default run folder of ``train``: ``runs/train-<distiller>-<student>``."""
    return Path("runs") / f"train-{distiller}-{slug(student)}"


def cache_dir() -> Path:
    """Where teachers are cached: $AUTOKD_CACHE, else the user cache folder."""
    return Path(os.environ.get("AUTOKD_CACHE", "~/.cache/autokd-dsl")).expanduser() / "teachers"


def obtain_teacher(arch: str, weights: Path | None, data_cfg, num_classes: int, console, *, runtime=None,
                   dist=None, device: str | None = None):
    """The teacher from ``weights``, or the cached one (trained and cached on first use)."""
    from .training.teacher import default_recipe, load_teacher, teacher_for

    if weights is None:
        weights = teacher_for(arch, data_cfg, default_recipe(arch, data_cfg.name), cache_dir(), console,
                              device=device, runtime=runtime, dist=dist)
    return load_teacher(weights, arch, num_classes, data_cfg.input_size)


def names_of(teacher: str | list[str]) -> list[str]:
    return list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]


def obtain_teachers(archs: str | list[str], weights, data_cfg, num_classes: int, console, **where):
    """:func:`obtain_teacher` for each of several teachers (a list back), or for one (the network back)."""
    names = names_of(archs)
    paths = list(weights) if isinstance(weights, (list, tuple)) else ([weights] if weights is not None else [])
    if len(set(names)) != len(names) and not paths:
        raise KDError("the same teacher is given twice", hint="each --teacher names a different architecture "
                      "(or pass --teacher-weights for each)")
    if paths and len(paths) != len(names):
        raise KDError(f"--teacher-weights is given {len(paths)} time(s) for {len(names)} teacher(s)",
                      hint="give one checkpoint per --teacher, in the same order, or none")
    nets = [obtain_teacher(arch, paths[i] if paths else None, data_cfg, num_classes, console, **where)
            for i, arch in enumerate(names)]
    return nets if isinstance(archs, (list, tuple)) and len(nets) > 1 else nets[0]


@contextmanager
def located_in(file, text: str | None = None, *, always: bool = False):
    """A :class:`KDError` with a position (any, with ``always``) raised inside gets ``file``'s text (read when
    not given), so that it prints as ``file:line:col: error: …``."""
    from .errors import SourceText

    try:
        yield
    except KDError as err:
        if err.span is None and not always:
            raise
        text = Path(file).read_text(encoding="utf-8") if text is None else text
        raise err.located(SourceText(str(file), text)) from None


def require_teachers(block, teachers: str | list[str], file) -> None:
    """A located error, before any teacher is trained, where the distiller needs a teacher not given."""
    from .compiler.teachers import require_teachers as check

    with located_in(file, always=True):
        check(block, names_of(teachers))


def fit_check(block, teachers: str | list[str], student: str, num_classes: int, input_size, file) -> None:
    """Compile the distiller onto untrained copies of the networks: a distiller that does not fit the pair (a
    missing tap, a connector after a batch relation, ...) is a located error before any teacher trains."""
    import torch

    from .compiler.build import compile_distiller
    from .models import create_model

    names = names_of(teachers)
    with torch.random.fork_rng(devices=[]):  # building the networks draws from torch's global generator
        nets = [create_model(name, num_classes=num_classes, in_chans=input_size[0]) for name in names]
        student_net = create_model(student, num_classes=num_classes, in_chans=input_size[0])
        with located_in(file):
            compile_distiller(block, nets if len(nets) > 1 else nets[0], student_net, input_size,
                              teacher_name=names if len(names) > 1 else names[0], student_name=student)


def _command(command: str | None, what: str, settings) -> str:
    return command or f"autokd_dsl.{what}({settings!r})"


# ------------------------------------------------------------------------------------------- teacher


def teacher(settings: TeacherSettings | None = None, /, *, console=None, command: str | None = None,
            **fields) -> Path:
    """Train a teacher and return its checkpoint path (the cached one when ``out`` is None)."""
    from .data import DataConfig
    from .models import create_model
    from .training.runtime import Dist
    from .training.teacher import default_recipe, teacher_for, train_teacher

    s = _settings(TeacherSettings, settings, fields)
    dist = Dist.from_env()
    console = _console(console, dist)
    data_cfg = DataConfig(name=s.data, root=s.data_root, input_size=s.input_size, augment=s.augment)
    models = names_of(s.model)
    if s.out is not None and len(models) > 1:
        raise KDError("--out names one checkpoint; with several teachers leave it out (each is cached)")
    for model in models:  # an unknown name fails before any training
        create_model(model, num_classes=10, in_chans=data_cfg.input_size[0])
    paths = []
    for model in models:
        recipe = default_recipe(model, data_cfg.name, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
                                seed=s.seed)
        if s.out is None:
            path = teacher_for(model, data_cfg, recipe, cache_dir(), console, runtime=s.runtime(), dist=dist)
        else:
            path = train_teacher(model, data_cfg, recipe, s.out, console, runtime=s.runtime(), dist=dist,
                                 command=_command(command, "teacher", s))
        console.print(f"teacher checkpoint: {path}")
        paths.append(path)
    return paths if isinstance(s.model, list) and len(paths) > 1 else paths[0]


# --------------------------------------------------------------------------------------------- train


def train(settings: TrainSettings | None = None, /, *, console=None, command: str | None = None,
          **fields) -> dict:
    """Run a full distillation; returns the contents of the run folder's ``result.json``."""
    from .compiler.build import load_distiller
    from .data import DataConfig, describe
    from .data.stream import open_data
    from .models import create_model
    from .progress import LOG_FILE, run_log
    from .training.runtime import Dist
    from .training.student import TrainConfig, check_run_folder, make_student, subset_train
    from .training.student import train as run_training
    from .training.teacher import default_recipe

    s = _settings(TrainSettings, settings, fields)
    dist = Dist.from_env()
    console = _console(console, dist)
    block = load_distiller(s.file, s.distiller)
    require_teachers(block, s.teacher, s.file)
    out = s.out or run_folder(block.name, s.student)
    check_run_folder(out, s.resume)  # a foreign folder or a run without resume fails before any work
    data_cfg = DataConfig(name=s.data, root=s.data_root, input_size=s.input_size, augment=s.augment)
    in_chans = data_cfg.input_size[0]
    for name in (*names_of(s.teacher), s.student):  # unknown names fail before any data is read or teacher trained
        create_model(name, num_classes=10, in_chans=in_chans)
    defaults = default_recipe(s.student, data_cfg.name, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
                              seed=s.seed)
    cfg = TrainConfig(**defaults.model_dump(), offline_teacher=s.offline_teacher)
    sets = open_data(data_cfg)
    if s.train_subset is not None:
        sets = subset_train(sets, s.train_subset, s.seed)
    fit_check(block, s.teacher, s.student, sets.num_classes, data_cfg.input_size, s.file)
    with run_log(console, Path(out) / LOG_FILE, _command(command, "train", s), enabled=dist.main):
        # the teacher trains with its dataset's default augmentation, whatever this run's --augment says
        teacher_cfg = data_cfg.model_copy(update={"augment": None})
        teacher_net = obtain_teachers(s.teacher, s.teacher_weights, teacher_cfg, sets.num_classes, console,
                                      runtime=s.runtime(), dist=dist)
        student_net = make_student(s.student, sets.num_classes, in_chans, s.seed)
        described = []
        for name, net in zip(names_of(s.teacher), teacher_net if isinstance(teacher_net, list) else [teacher_net]):
            t_acc = (getattr(net, "kd_teacher", None) or {}).get("test_accuracy")
            described.append(name + (f" (test {t_acc:.2%})" if isinstance(t_acc, float) else ""))
        console.print(f"distiller {block.name} ({s.file}): {' + '.join(described)}"
                      + f" -> {s.student}; {describe(sets)}"
                      + (f" (class-balanced subset, seed {s.seed})" if s.train_subset is not None else "")
                      + f"; {cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}"
                      + (f" per rank × {dist.world} ranks" if dist.world > 1 else "")
                      + f", {cfg.schedule} schedule, seed {cfg.seed}; run folder {out}")
        text = Path(s.file).read_text(encoding="utf-8")
        with located_in(s.file, text):
            return run_training(block, teacher_net, student_net, sets, cfg, out, s.resume, console,
                                cache_root=cache_dir().parent / "teacher-outputs", runtime=s.runtime(), dist=dist,
                                sources={"distiller.kd": text}, command=_command(command, "train", s),
                                options=s.model_dump(mode="json"))


# -------------------------------------------------------------------------------------------- search


def search(settings: SearchSettings | None = None, /, *, console=None, command: str | None = None,
           **fields) -> dict:
    """Search a space of distillers; returns the search's summary (``best`` is None when nothing worked).

    Several teachers are a list (teacher1 first), ``teacher_weights`` then one checkpoint per teacher or None;
    each teacher is obtained (trained and cached on first use) as ``train`` does and runs once over the proxy
    data, and every candidate compiles against all of them."""
    from .data import DataConfig, load_data
    from .progress import LOG_FILE, run_log
    from .search.evaluate import ProxySettings
    from .search.executor import check_executor
    from .search.run import (
        SearchConfig,
        check_amp,
        check_identity,
        check_search_folder,
        check_teacher_classes,
        load_baselines,
        load_space,
        parse_rewards,
    )
    from .search.run import search as run_search
    from .search.store import search_config
    from .training.runtime import resolve_device
    from .training.tracking import TENSORBOARD, Tracker, write_run_info

    s = _settings(SearchSettings, settings, fields)
    console = console or plain_console(stderr=True)
    names = names_of(s.teacher)
    teacher = names[0] if len(names) == 1 else names  # one teacher keeps the identity of earlier stores
    paths = names_of(s.teacher_weights) if s.teacher_weights is not None else []
    weights = None if not paths else str(paths[0]) if len(paths) == 1 else [str(w) for w in paths]
    device = str(resolve_device(s.device))
    check_amp(s.amp, device)
    check_executor(s.executor, s.ray_address, s.device, s.cpus_per_candidate, s.gpus_per_candidate)
    space_block = load_space(str(s.space_file), s.space)  # a bad space fails before any training
    load_baselines(s.baselines, names)
    out = Path(s.out)
    check_search_folder(out, s.resume)  # so does a foreign --out folder, before anything is written
    require_teachers(space_block, teacher, s.space_file)
    rewards = parse_rewards(s.reward, len(s.fidelity) if s.fidelity else 1)
    proxy = ProxySettings(epochs=s.epochs, subset=s.subset, entropy_sampling=s.entropy,
                          offline_teacher=s.offline_teacher, sparse_density=s.sparse, seed=s.seed,
                          reward=rewards[0])
    cfg = SearchConfig(space_file=str(s.space_file), space_name=s.space, teacher=teacher, student=s.student,
                       teacher_weights=weights, data=s.data,
                       data_root=str(s.data_root) if s.data_root else None, input_size=s.input_size,
                       budget=s.budget, train_subset=s.train_subset, strategy=s.strategy, c=s.c, rollout=s.rollout,
                       root=s.root, workers=s.workers, executor=s.executor, ray_address=s.ray_address,
                       cpus_per_candidate=s.cpus_per_candidate, gpus_per_candidate=s.gpus_per_candidate,
                       seed=s.seed, proxy=proxy, device=device, amp=s.amp, final_epochs=s.final_epochs,
                       final_seeds=s.final_seeds, baselines=tuple(s.baselines), fidelity=s.fidelity, eta=s.eta,
                       rewards=rewards if len(set(rewards)) > 1 else None)
    if s.resume:  # other teachers (or settings) than the stored search's fail before any teacher is trained
        check_identity(search_config(out, "identity"), cfg, out)
    with run_log(console, out / LOG_FILE, _command(command, "search", s)):
        data_cfg = DataConfig(name=s.data, root=s.data_root, input_size=s.input_size, seed=s.seed, augment=False,
                              train_subset=s.train_subset)
        bundle = load_data(data_cfg)
        # the teacher's data setting is the one `train` and `teacher` use, so they share the cached teacher
        teacher_cfg = DataConfig(name=s.data, root=s.data_root, input_size=s.input_size)
        teacher_net = obtain_teachers(teacher, paths or None, teacher_cfg, bundle.num_classes, console, device=device)
        text = Path(s.space_file).read_text(encoding="utf-8")
        with located_in(s.space_file, text):
            check_teacher_classes(space_block, teacher_net, names, s.input_size)
        write_run_info(out, cfg.model_dump(mode="json"), command=_command(command, "search", s), resumed=s.resume,
                       sources={"space.kd": text}, extra={"options": s.model_dump(mode="json")})
        tracker = Tracker(out / TENSORBOARD, s.tensorboard, purge_step=1)
        try:
            return run_search(cfg, out, s.resume, teacher_net, bundle, console, on_row=_candidate_logger(tracker))
        finally:
            tracker.close()


def _candidate_logger(tracker):
    """Per candidate (in evaluation order): its reward, and the best reward so far."""
    seen = {"n": 0, "best": None}

    def log(row: dict) -> None:
        seen["n"] += 1
        values = {}
        if row["status"] == "ok" and row["reward"] is not None:
            values["search/reward"] = row["reward"]
            seen["best"] = row["reward"] if seen["best"] is None else max(seen["best"], row["reward"])
        if seen["best"] is not None:
            values["search/best_reward"] = seen["best"]
        tracker.scalars(seen["n"], values)

    return log
