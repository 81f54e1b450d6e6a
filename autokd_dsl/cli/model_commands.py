"""Commands about models: layers (tap points) and models (the zoo)."""

from __future__ import annotations

import typer

from . import values
from .app import command, plain_console
from .params import AT_LEAST_1, INPUT_SIZE, InputSize, NumClasses


@command()
def layers(
    model: str = typer.Argument(..., help="A zoo name, timm:NAME or package.module:factory."),
    input_size: InputSize = INPUT_SIZE,
    num_classes: NumClasses = 100,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List a model's tap points: module paths, output shapes, call counts and aliases."""
    import json

    from ..compiler.taps import aliases, list_layers
    size, _ = values.input_size(input_size)
    net = values.model("MODEL", model, num_classes, size[0])
    rows = list_layers(net, size)
    if as_json:
        payload = {"model": model, "input_size": list(size), "aliases": aliases(net),
                   "layers": [{"name": r.name, "type": r.type, "shape": list(r.shape) if r.shape else None,
                               "calls": r.calls, "aliases": list(r.aliases)} for r in rows]}
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.table import Table

    table = Table("tap", "module", "output (per sample)", "calls", "aliases", title=f"{model} at {input_size}")
    for r in rows:
        shape = "×".join(map(str, r.shape)) if r.shape else "-"
        table.add_row(r.name, r.type, shape, str(r.calls), ", ".join(r.aliases))
    console = plain_console()
    console.print(table)
    console.print("aliases: " + ", ".join(f"{a} = {s}" for a, s in aliases(net).items()))


@command("models")
def models_cmd(
    num_classes: int = typer.Option(100, "--num-classes", help="Classes of the parameter count.",
                                    parser=AT_LEAST_1),
) -> None:
    """List the model zoo: names, families and parameter counts (timm:NAME and package.module:factory work too)."""
    from rich.table import Table

    from ..models import ZOO, count_parameters, create_model, list_models

    table = Table("model", "family", f"params ({num_classes} classes)")
    for name in list_models():
        params = count_parameters(create_model(name, num_classes=num_classes))
        table.add_row(name, ZOO[name][0], f"{params / 1e6:.2f}M")
    console = plain_console()
    console.print(table)
    console.print("also: timm:NAME (any timm model, random weights) and package.module:factory (your own)")
