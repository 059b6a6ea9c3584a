"""Options and helpers shared by several commands (no heavy imports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from s2mlp_cli.cli._errors import say
from s2mlp_cli.console import out, print_json, warn
from s2mlp_cli.errors import UnknownModelError
from s2mlp_cli.runtime import AMP, DEVICES
from s2mlp_cli.zoo import Card, get_card

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout.")


def resolve_card(name: str, param_hint: str = "VARIANT") -> Card:
    """A card by name or alias; an unknown name is a usage error (exit 2) naming the closest cards."""
    try:
        return get_card(name)
    except UnknownModelError as e:
        raise click.BadParameter(say(e, None), param_hint=param_hint) from e


def split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def run_options(what: str) -> Callable[[Callable], Callable]:
    """The options eval and bench share: device, math mode, memory format, compile, outputs."""
    options = [
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option("--amp", type=click.Choice(AMP), default="none", show_default=True),
        click.option(
            "--channels-last", is_flag=True, help="Channels-last memory format for model and input."
        ),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile each model."),
        click.option(
            "--tf32", is_flag=True, help="Allow TF32 matmuls on the GPU (off by default, and said so)."
        ),
        click.option("--output", help=f"Also write the {what} (.json, .csv or .md), atomically."),
        json_option,
    ]

    def decorate(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def show(doc: dict[str, Any], as_json: bool, tables: Callable[[dict], list[Any]]) -> None:
    """The result: JSON, or the tables; its warnings on stderr either way."""
    for message in doc.get("warnings", []):
        warn(message)
    if as_json:
        print_json(doc)
        return
    for part in tables(doc):
        out.print(part)


def static_env() -> dict[str, Any]:
    """The `env` of a command that runs no model (list, pull): what s2mlp and which cards answered."""
    from s2mlp_cli.version import __version__
    from s2mlp_cli.zoo import zoo_dir

    return {"s2mlp": __version__, "zoo": str(zoo_dir())}
