"""`s2mlp doctor`: whether this machine can produce honest numbers."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table
from rich.text import Text

from s2mlp_cli.cli._options import json_option
from s2mlp_cli.console import out, print_json
from s2mlp_cli.runtime import DEVICES


@click.command("doctor")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@json_option
def doctor_command(device: str, as_json: bool) -> None:
    """Check this machine before trusting its numbers: versions (torch, CUDA, driver, cuDNN, NCCL,
    Triton), devices, memory and bf16, TF32, a compiler for --compile, CPU load and steal, GPU clocks and
    other processes, and a few-second self-check (device output = CPU output; timing = wall clock).

    Each check has a verdict and, when it is not ok, the next step. Exit 1 when a check fails.

    \b
    Examples:
      s2mlp doctor
      s2mlp doctor --device cuda --json
    """
    from s2mlp_cli.bench.doctor import run

    doc = run(device)
    if as_json:
        print_json(doc)
    else:
        table = Table(title=f"s2mlp doctor ({doc['device']})", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("check", "verdict", "value", "next step"):
            table.add_column(name, overflow="fold")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in doc["checks"]:
            verdict = Text(c["verdict"], style=colour[c["verdict"]])
            table.add_row(Text(c["check"]), verdict, Text(str(c["value"])), Text(c["next_step"]))
        out.print(table)
    if doc["failed"]:
        raise click.ClickException(f"{len(doc['failed'])} check(s) failed: {', '.join(doc['failed'])}")
