"""Commands that turn a distiller into another artefact: compile (a loss module) and expand (a `.kd` file)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import values
from .app import command, plain_console
from .params import (
    BatchSize,
    Data,
    DataRoot,
    DistillerName,
    FileInputSize,
    NumClasses,
    OutFile,
    Seed,
    Student,
    Teacher,
    TeacherWeights,
)


@command("compile", source="file")
def compile_cmd(
    file: Path = typer.Argument(..., help="The .kd file holding the distiller."),
    teacher: Teacher = ...,
    student: Student = ...,
    distiller: DistillerName = None,
    input_size: FileInputSize = None,
    num_classes: NumClasses = 100,
    out: OutFile = None,
) -> None:
    """Compile a distiller into a standalone PyTorch loss module (imports only torch)."""
    from ..compiler.build import load_distiller
    from ..files import check_output_file, write_text

    size, note = values.input_size(input_size, file)
    if out is not None:
        check_output_file(out)
    block = load_distiller(file, distiller)
    if note:
        typer.echo(note, err=True)

    import torch

    from ..api import require_teachers
    from ..compiler.build import compile_distiller
    from ..compiler.emit import emit

    require_teachers(block, list(teacher), file)
    torch.manual_seed(0)
    t_nets = [values.model("--teacher", name, num_classes, size[0]) for name in teacher]
    s_net = values.model("--student", student, num_classes, size[0])
    one = len(teacher) == 1
    loss = compile_distiller(block, t_nets[0] if one else t_nets, s_net, size,
                             teacher_name=teacher[0] if one else list(teacher), student_name=student)
    text = emit(loss, teacher=teacher[0] if one else list(teacher), student=student, input_size=size,
                num_classes=num_classes)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_text(out, text)
    typer.echo(f"wrote {out}: distiller `{block.name}`, terms {', '.join(loss.term_names)}, "
               f"{sum(p.numel() for p in loss.parameters())} connector parameters", err=True)


@command(source="file")
def expand(
    file: Path = typer.Argument(..., help="The .kd file holding the distiller (e.g. a search's best.kd)."),
    layers_: str | None = typer.Option(None, "--layers", help="Comma-separated tap points, e.g. "
                                                              "stage1,stage2,stage3."),
    teachers_: str | None = typer.Option(None, "--teachers", help="Comma-separated teachers to apply the term "
                                                                 "to, e.g. resnet56,wrn_40_2 (the first is "
                                                                 "the one the term was found with)."),
    teacher: Teacher | None = None,
    student: Student = ...,
    teacher_weights: TeacherWeights = None,
    term: str | None = typer.Option(None, "--term", help="Which term to expand (default: the first one "
                                                        "tapped at a single feature point)."),
    distiller: DistillerName = None,
    data: Data = "digits",
    data_root: DataRoot = None,
    input_size: FileInputSize = None,
    batch_size: BatchSize = 64,
    seed: Seed = 0,
    out: OutFile = None,
    device: str = typer.Option("cpu", "--device", help="Where the batch runs: cpu, cuda, cuda:N or mps."),
) -> None:
    """Apply one term at several layers and/or to several teachers, with training-free weights set on one batch."""
    from ..compiler.build import load_distiller
    from ..files import check_output_file, write_text

    size, note = values.input_size(input_size, file)
    data_cfg = values.data_config(name=data, root=data_root, input_size=size)
    if out is not None:
        check_output_file(out)
    values.device(device)
    console = plain_console(stderr=True)
    if note:
        console.print(note)
    block = load_distiller(file, distiller)
    from ..errors import KDError

    over_teachers = [t.strip() for t in (teachers_ or "").split(",") if t.strip()]
    if over_teachers and teacher:
        raise KDError("give the teachers either with --teachers A,B (applying the term to each) or with --teacher")
    archs = over_teachers or list(teacher or [])
    if not archs:
        raise KDError("expand needs a teacher", hint="--teacher T, or --teachers A,B to apply the term to each")
    if layers_ is None and len(over_teachers) < 2:
        raise KDError("expand needs --layers, or --teachers with two or more teachers",
                      hint="e.g. --layers stage1,stage2,stage3 or --teachers resnet56,wrn_40_2")
    points = [p.strip() for p in layers_.split(",") if p.strip()] if layers_ is not None else None

    import torch

    from ..api import obtain_teachers, require_teachers
    from ..data import load_data
    from ..multilayer import check_layers, expand_layers, pick_term
    from ..training.runtime import resolve_device
    from ..training.student import make_student

    # a bad term, model or layer list fails before any teacher is loaded or trained
    pick_term(block, points, term)
    if not over_teachers:
        require_teachers(block, archs, file)
    nets = {name: values.model(option, name, 10, size[0])
            for option, name in [*(("--teacher", a) for a in archs), ("--student", student)]}
    if points is not None:
        check_layers(points, nets)

    bundle = load_data(data_cfg)
    teacher_net = obtain_teachers(archs if len(archs) > 1 else archs[0], teacher_weights or None, data_cfg,
                                  bundle.num_classes, console)
    student_net = make_student(student, bundle.num_classes, data_cfg.input_size[0], seed)
    pick = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    torch.manual_seed(seed)  # learnable connectors start from the same weights each time
    dev = resolve_device(device)
    for net in teacher_net if isinstance(teacher_net, list) else [teacher_net]:
        net.to(dev)
    student_net.to(dev)
    result, info = expand_layers(block, points, teacher_net, student_net, bundle.train.images[pick].to(dev),
                                 bundle.train.labels[pick].to(dev), term,
                                 teacher_name=archs if len(archs) > 1 else archs[0], student_name=student,
                                 over_teachers=bool(over_teachers))
    from ..lang.printer import print_block

    text = print_block(result)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text(out, text)
    console.print(f"term `{info['term']}`: unweighted loss {info['original']:.4g}; "
                  + ("per copy " if info["teachers"] else "per layer ")
                  + ", ".join(f"{k} {v:.4g}" for k, v in info["layers"].items())
                  + (f"; wrote {out}" if out is not None else ""))
