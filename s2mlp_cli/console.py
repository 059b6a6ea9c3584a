"""One place for terminal output: results to stdout, everything else to stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

# Piped output is not cut to 80 columns: tables stay whole in files and logs.
_piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
out = Console(soft_wrap=True, width=160 if _piped else None)
err = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable result on stdout, with no rich markup or wrapping."""
    from s2mlp_cli.report import finite

    sys.stdout.write(json.dumps(finite(data), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def info(message: str) -> None:
    err.print(message, highlight=False)
