"""The `s2mlp` command: a thin root group whose commands are imported only when run.

Nothing here imports torch, timm or torchvision, so `s2mlp --help` answers in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from s2mlp_cli import __version__
from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.errors import Interrupted, PartialResult, S2MLPError, Terminated

# name -> "module:attribute", in the order `--help` lists them
COMMANDS = {
    "list": "s2mlp_cli.cli.list_cmd:list_command",
    "info": "s2mlp_cli.cli.info_cmd:info_command",
    "pull": "s2mlp_cli.cli.pull_cmd:pull_command",
    "push": "s2mlp_cli.cli.push_cmd:push_command",
    "eval": "s2mlp_cli.cli.eval_cmd:eval_command",
    "bench": "s2mlp_cli.cli.bench_cmd:bench_command",
    "train": "s2mlp_cli.cli.train_cmd:train_command",
    "cache": "s2mlp_cli.cli.cache_cmd:cache_command",
    "doctor": "s2mlp_cli.cli.doctor_cmd:doctor_command",
    "demo": "s2mlp_cli.cli.demo_cmd:demo_command",
    "predict": "s2mlp_cli.cli.predict_cmd:predict_command",
    "export": "s2mlp_cli.cli.export_cmd:export_command",
}


# the commands that may reach the Hub (weights, configs, publishing)
HUB_COMMANDS = {"pull", "push", "eval", "bench", "train", "predict", "export"}


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP unwind the stack (and exit 143 / 129) instead of killing
    the process where it stands. Only the main thread may set handlers; elsewhere they keep theirs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, unwind) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class LazyGroup(click.Group):
    """Imports a command's module on first use, and turns expected failures into one-line errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in HUB_COMMANDS and os.environ.get("HF_ENDPOINT") and ctx.resilient_parsing is False:
            from s2mlp_cli.sources.places import endpoint

            endpoint()  # a broken HF_ENDPOINT is one line, before huggingface_hub reads it at import
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> Any:
        for stream in (sys.stdout, sys.stderr):  # a name no encoding can print is escaped, not fatal
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        from s2mlp_cli.console import fit_width  # here, not at import: `s2mlp --help` loads no rich

        fit_width()
        try:
            with _signals_unwind():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except PartialResult as e:  # the command printed what finished (and it was written)
            from s2mlp_cli.console import info

            info(
                f"stopped by {signal.Signals(e.signum).name}: {e.kept} kept"
                + (f", written to {e.written}" if e.written else "")
            )
            ctx.exit(128 + e.signum)
        except Terminated as e:  # every `finally` has run: temporary files are gone
            click.echo(
                f"Error: stopped by {signal.Signals(e.signum).name}; nothing half-written was kept", err=True
            )
            ctx.exit(128 + e.signum)
        except KeyboardInterrupt:
            click.echo("Error: stopped by Ctrl-C (SIGINT); nothing half-written was kept", err=True)
            ctx.exit(130)
        except Interrupted as e:  # the job put its work somewhere safe first, and says where
            step = "; continue with the same command and --resume" if e.next_step == "resume" else ""
            click.echo(f"Error: stopped by {signal.Signals(e.signum).name}; {e.kept}{step}", err=True)
            ctx.exit(128 + e.signum)
        except S2MLPError as e:
            raise to_click(e, ctx.invoked_subcommand) from e
        except Exception as e:
            if os.environ.get("S2MLP_DEBUG"):
                raise
            message = str(e).splitlines()[0] if str(e) else ""
            raise click.ClickException(
                f"unexpected {type(e).__name__}: {message} (set S2MLP_DEBUG=1 for the traceback)"
            ) from e


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="s2mlp")
def main() -> None:
    """S²-MLPv2 model zoo: fetch verified weights, evaluate on ImageNet, benchmark against peers.

    \b
    Examples:
      s2mlp list
      s2mlp info medium
      s2mlp info vip_s7 --json
      s2mlp pull mixer_b16_224
      s2mlp push medium --weights model_best.pth.tar --repo me/s2mlpv2-medium
      s2mlp eval --variant mixer_b16_224 --data /imagenet/val
      s2mlp bench --variant small --compare vip,gfnet
      s2mlp train --variant small --data /imagenet --output runs/s2mlpv2-small
      s2mlp doctor
    """
