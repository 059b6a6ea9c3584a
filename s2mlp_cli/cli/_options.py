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


def check_amp(device: str, amp: str) -> None:
    """fp16 autocast on the CPU is a usage error (exit 2), caught before any model is built."""
    if amp == "fp16" and device == "cpu":
        raise click.BadParameter(
            "fp16 autocast is for the GPU; use --amp bf16 or none on the CPU", param_hint="--amp"
        )
