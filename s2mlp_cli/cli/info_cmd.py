"""`s2mlp info VARIANT`: one whole zoo card."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from s2mlp_cli.cli._options import json_option, resolve_card
from s2mlp_cli.console import out, print_json


def _fmt(value) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "-"
    return str(value)


@click.command("info")
@click.argument("variant")
@json_option
def info_command(variant: str, as_json: bool) -> None:
    """Show a zoo card: architecture, preprocessing, weight source, counts, paper numbers and peers.

    \b
    Examples:
      s2mlp info medium
      s2mlp info s2mlpv2_small --json
    """
    card = resolve_card(variant)
    data = card.to_dict()
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{card.name}: {card.description}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for section, value in data.items():
        if isinstance(value, dict):
            for key, sub in value.items():
                table.add_row(f"{section}.{key}", Text(_fmt(sub)))
        elif section not in ("description",):
            table.add_row(section, Text(_fmt(value)))
    out.print(table)
