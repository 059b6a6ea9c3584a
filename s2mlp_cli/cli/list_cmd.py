"""`s2mlp list`: the zoo at a glance."""

from __future__ import annotations

import click

from s2mlp_cli import families
from s2mlp_cli.cli._options import json_option, static_env
from s2mlp_cli.console import out, print_json
from s2mlp_cli.report import FitTable
from s2mlp_cli.sources import status
from s2mlp_cli.zoo import cards


def _row(card) -> dict:
    return {
        "name": card.name,
        "family": card.family,
        "aliases": list(card.aliases),
        "params_m": round(card.params / 1e6, 2),
        "gmacs": card.gmacs,
        "input_size": card.preprocess.input_size,
        "paper_top1": card.paper.get("top1"),
        "weights": status(card),
    }


@click.command("list")
@click.option("--family", help=f"Only this family ({', '.join(families.names())}).")
@json_option
def list_command(family: str | None, as_json: bool) -> None:
    """List the model zoo: params, GMACs, input size, the paper's top-1 and weight status.

    The weights column says "pulled" for variants whose verified weights are already here.

    \b
    Examples:
      s2mlp list
      s2mlp list --family vip
      s2mlp list --json
    """
    ordered = sorted(cards().values(), key=lambda c: (families.names().index(c.family), c.params))
    rows = [_row(c) for c in ordered if family is None or c.family == family]
    if family is not None and not rows:
        raise click.BadParameter(
            f"no cards of family {family!r}; families: {', '.join(families.names())}", param_hint="--family"
        )
    if as_json:
        print_json({"env": static_env(), "results": rows})
        return
    columns = [
        ("name", lambda r: r["name"]),
        ("params M", lambda r: f"{r['params_m']:.2f}"),
        ("GMACs", lambda r: f"{r['gmacs']:.2f}"),
        ("top-1", lambda r: "-" if r["paper_top1"] is None else f"{r['paper_top1']:.1f}%"),
        ("weights", lambda r: r["weights"]),
        ("input", lambda r: str(r["input_size"])),
        ("family", lambda r: r["family"]),
        ("alias", lambda r: r["aliases"][0] if r["aliases"] else ""),
    ]
    align = {"weights": "left", "family": "left", "alias": "left"}
    table = FitTable("s2mlp model zoo (top-1: the paper's)", columns, rows, keep=("weights",), align=align)
    out.print(table)
