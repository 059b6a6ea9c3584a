"""Options and helpers shared by several commands (no heavy imports)."""

from __future__ import annotations

import click

from s2mlp_cli.errors import UnknownModelError
from s2mlp_cli.zoo import Card, get_card

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout.")


def resolve_card(name: str, param_hint: str = "VARIANT") -> Card:
    """A card by name or alias; an unknown name is a usage error (exit 2) naming the closest cards."""
    try:
        return get_card(name)
    except UnknownModelError as e:
        raise click.BadParameter(str(e), param_hint=param_hint) from e
