"""What a run folder records besides its results: TensorBoard scalars and the run's provenance.

``run.json`` holds the full command line, the resolved settings, the package versions and the git commit of
the source tree (when it is a git checkout); the distiller's ``.kd`` source sits next to it. TensorBoard event
files go to ``tensorboard/`` (``tensorboard --logdir runs``)::

    tracker = Tracker(out / "tensorboard", enabled=True)
    tracker.scalars(epoch, {"loss/total": 0.7, "accuracy/val": 0.91, "lr": 0.05})
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ..files import write_text

TENSORBOARD = "tensorboard"
RUN_INFO = "run.json"
PACKAGES = ("autokd-dsl", "torch", "torchvision", "timm", "numpy", "pydantic", "lark", "tensorboard")


class Tracker:
    """TensorBoard scalars, written only when ``enabled`` (rank 0 of a run with ``--tensorboard``).

    ``purge_step``: on resume, events a killed run logged after its last checkpoint are dropped.
    """

    def __init__(self, folder: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), …]}`` from the TensorBoard event files in ``folder`` (tensorboard's reader).

    Later files win for a step logged twice (a resumed run).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ------------------------------------------------------------------------------------------ provenance


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    import torch  # its build tag (+cu130, +cpu) says which kernels ran

    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    return out


def git_commit(folder: Path | None = None) -> dict | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``folder`` (this package), or None."""
    folder = folder or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
        if sha.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def command_line(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The command as typed (``autokd-dsl train …``; under torchrun ``torchrun --nproc_per_node N -m autokd_dsl …``).

    >>> command_line(["/x/autokd_dsl/__main__.py", "train", "a b.kd"], {"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"})
    "torchrun --nproc_per_node 2 -m autokd_dsl train 'a b.kd'"
    """
    argv = list(sys.argv if argv is None else argv)
    env = os.environ if env is None else env
    if argv and argv[0].endswith(("__main__.py", "autokd-dsl")):
        argv[0] = "autokd-dsl"
    if int(env.get("WORLD_SIZE", 1)) > 1 and argv and argv[0] == "autokd-dsl":
        argv = ["torchrun", "--nproc_per_node", env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]), "-m", "autokd_dsl",
                *argv[1:]]
    return shlex.join(argv)


def write_run_info(out: Path, settings: Mapping[str, Any], *, sources: Mapping[str, str] | None = None,
                   command: str | None = None, extra: Mapping[str, Any] | None = None, resumed: bool = False) -> None:
    """Write ``run.json`` and the source files; a resume appends its command to ``resumes`` and keeps the rest."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_INFO
    entry = {"command": command or command_line(), "time": datetime.datetime.now(datetime.timezone.utc)
             .isoformat(timespec="seconds"), "host": platform.node(), "pid": os.getpid()}
    if resumed and path.is_file():
        info = json.loads(path.read_text(encoding="utf-8"))
        info.setdefault("resumes", []).append(entry | dict(extra or {}))
    else:
        info = {**entry, "settings": dict(settings), "versions": package_versions(), "git": git_commit(),
                "sources": sorted(sources or {}), **dict(extra or {})}
        for name, text in (sources or {}).items():
            (out / name).write_text(text, encoding="utf-8")
    write_text(path, json.dumps(info, indent=2, default=str) + "\n")
