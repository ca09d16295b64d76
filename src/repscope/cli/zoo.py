"""``repscope models``, ``repscope datasets``, ``repscope layers``: the offline zoo."""

from __future__ import annotations

import click

from repscope.cli._common import echo_json, json_option, print_table


@click.command()
@json_option
def models(as_json: bool) -> None:
    """List the offline models repscope can load, and whether each is installed."""
    from repscope.zoo import list_models

    infos = list_models()
    if as_json:
        echo_json([i.to_dict() for i in infos])
        return
    rows = [
        (i.name, i.kind, "yes" if i.available else f"no: {i.missing}", i.description)
        for i in infos
    ]
    print_table(rows, ["model", "kind", "available", "description"], title="Models")


@click.command()
@json_option
def datasets(as_json: bool) -> None:
    """List the offline datasets and whether their files are present."""
    from repscope.zoo import list_datasets

    infos = list_datasets()
    if as_json:
        echo_json([i.to_dict() for i in infos])
        return
    rows = [
        (i.name, i.modality, "yes" if i.available else f"no: {i.missing}", i.description)
        for i in infos
    ]
    print_table(rows, ["dataset", "modality", "available", "description"], title="Datasets")


@click.command()
@click.argument("model")
@json_option
def layers(model: str, as_json: bool) -> None:
    """List the layer names (module paths) of a zoo MODEL that `extract` accepts."""
    from repscope.extract import list_layers
    from repscope.zoo import load_model

    names = list_layers(load_model(model))
    if as_json:
        echo_json(names)
        return
    for n in names:
        click.echo(n)


COMMANDS = [models, datasets, layers]
