"""`s2mlp push`: publish a variant's weights to the Hub in one commit, with a config and a model card."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from s2mlp_cli.cli._options import json_option, resolve_card
from s2mlp_cli.console import out, print_json


@click.command("push")
@click.argument("variant")
@click.option(
    "--weights", required=True, metavar="FILE", help="Checkpoint to publish (.safetensors, .pth, ...)."
)
@click.option("--repo", required=True, metavar="OWNER/NAME", help="Hub repository (created if missing).")
@click.option("--revision", metavar="BRANCH", help="Branch to commit to (default main; created if missing).")
@click.option(
    "--private", is_flag=True, help="Create the repository private (an existing one is left as is)."
)
@click.option("--eval", "eval_result", metavar="RESULT.json", help="`s2mlp eval --output` file for the card.")
@click.option(
    "--bench", "bench_result", metavar="RESULT.json", help="`s2mlp bench --output` file for the card."
)
@json_option
def push_command(
    variant: str,
    weights: str,
    repo: str,
    revision: str | None,
    private: bool,
    eval_result: str | None,
    bench_result: str | None,
    as_json: bool,
) -> None:
    """Publish weights so that `s2mlp pull VARIANT --repo OWNER/NAME` and timm's `hf-hub:` load them.

    The file must load strictly into VARIANT (read safely; never unpickles code). One commit adds
    model.safetensors, a timm config.json (the card's eval transform) and a README.md model card with
    the variant, paper, counts, transform, the file's sha256, and the tables of the result files given
    (nothing else is claimed). Prints the commit and sha256: the pin a zoo card needs.

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT points elsewhere than huggingface.co.

    \b
    Examples:
      s2mlp push medium --weights out/model_best.pth.tar --repo me/s2mlpv2-medium
      s2mlp push small --weights w.safetensors --repo me/s2mlpv2-small --eval eval.json --bench bench.json
    """
    from s2mlp_cli.publish import PushOptions, push

    card = resolve_card(variant)
    opts = PushOptions(card.name, weights, repo, revision, private, eval_result, bench_result, not as_json)
    done = push(opts)
    if as_json:
        print_json(done)
        return
    table = Table(
        title=f"s2mlp push: {done['variant']} -> {done['repo']}@{done['revision']}", show_header=False
    )
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("commit", Text(done["commit"]))
    table.add_row("sha256", Text(done["sha256"]))
    table.add_row("size", f"{done['size'] / 2**20:.1f} MiB")
    table.add_row("files", Text(", ".join(done["files"])))
    table.add_row("url", Text(done["commit_url"]))
    out.print(table)
    pin = done["pin"]
    out.print(
        Text(
            f"card pin: weights.repo {pin['repo']}, weights.revision {pin['revision']}, "
            f"weights.sha256 {pin['sha256']}"
        )
    )
