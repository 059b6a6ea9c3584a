"""`s2mlp pull`: verified weights from the Hugging Face Hub, or imported from a downloaded file."""

from __future__ import annotations

import re

import click

from s2mlp_cli.cli._errors import say
from s2mlp_cli.cli._options import json_option, resolve_card, static_env
from s2mlp_cli.console import out, print_json
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.sources.places import REPO_ID
from s2mlp_cli.zoo import Card

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _repo(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not REPO_ID.match(value):
        raise click.BadParameter(f"expected OWNER/NAME (letters, digits, - _ .), got {value!r}")
    return value


def _filename(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parts = value.split("/")
    if not value or value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts):
        raise click.BadParameter(f"expected a path inside the repository, got {value!r}")
    return value


@click.command("pull")
@click.argument("variants", nargs=-1, metavar="VARIANT...")
@click.option("--all", "pull_all", is_flag=True, help="Every variant whose weights are on the Hub.")
@click.option(
    "--repo",
    metavar="ORG/NAME",
    callback=_repo,
    help="Another Hub repository (e.g. your own S²-MLPv2 weights).",
)
@click.option("--revision", metavar="REV", help="Branch, tag or commit in the repository.")
@click.option(
    "--filename", metavar="FILE", callback=_filename, help="File in the repository (default: the card's)."
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, path_type=str),
    metavar="FILE",
    help="Import a checkpoint you downloaded by hand (official .pth/.pth.tar or .safetensors).",
)
@click.option("--sha256", metavar="HEX", help="With --from: the sha256 the file must have.")
@click.option("--refresh", is_flag=True, help="Ask the Hub again even when the file is cached.")
@json_option
def pull_command(
    variants: tuple[str, ...],
    pull_all: bool,
    repo: str | None,
    revision: str | None,
    filename: str | None,
    from_file: str | None,
    sha256: str | None,
    refresh: bool,
    as_json: bool,
) -> None:
    """Fetch a variant's weights, verify them and load them once, so they are known to work.

    A source named with --repo/--revision/--filename, or a file imported with --from, becomes the
    variant's source from then on: `eval`, `bench --weights`-less runs and `create_model(pretrained=True)`
    use it, and `s2mlp list` shows it. Pulling the card's own source again goes back to it.

    Files go to the Hugging Face cache (HF_HOME / HF_HUB_CACHE); with HF_HUB_OFFLINE=1 pulled variants
    are served with no network. Each file is checked against the card's sha256 pin or the Hub's ETag;
    one that fails is deleted. Official ViP / GFNet checkpoints live off the Hub: download them by hand
    (`s2mlp info VARIANT` gives the link) and import them with --from.

    \b
    Examples:
      s2mlp pull mixer_b16_224
      s2mlp pull medium --repo me/s2mlpv2-medium --revision v1.0
      s2mlp pull vip_s7 --from ~/Downloads/vip_s7.pth
    """
    _check_flags(
        variants,
        pull_all,
        sha256,
        {"--repo": repo, "--revision": revision, "--filename": filename, "--from": from_file},
    )
    targets = () if pull_all else tuple(map(resolve_card, variants))
    own_source = bool(repo or revision or filename or from_file)
    try:
        if len(targets) == 1 and not own_source:
            from s2mlp_cli.sources import precheck

            if (problem := precheck(targets[0])) is not None:  # no weights to be had: said before torch
                raise problem
        from s2mlp_cli.pull import PullOptions, run

        opts = PullOptions(
            targets, pull_all, repo, revision, filename, from_file, sha256, refresh, not as_json
        )
        done = run(opts, say=lambda e: say(e, "pull"))
    except S2MLPError as e:
        if as_json and len(targets) == 1:  # the failure as a row too, for scripts
            print_json({"env": static_env(), "results": [_failed_row(targets[0], e)]})
        raise
    _show(done["rows"], as_json)
    if failed := done["failed"]:  # each failure's reason is its row's; this line only counts them
        raise click.ClickException(f"{len(failed)} of {done['total']} failed: {', '.join(failed)}")


def _check_flags(variants: tuple[str, ...], pull_all: bool, sha256: str | None, one_only: dict) -> None:
    """Flags that do not go together are usage errors, before anything is read."""
    if pull_all and variants:
        raise click.UsageError("give variants or --all, not both")
    if not pull_all and not variants:
        raise click.UsageError("name at least one variant (see `s2mlp list`), or use --all")
    given = [flag for flag, value in one_only.items() if value]
    if given and len(variants) != 1:
        raise click.UsageError(f"{', '.join(given)} apply to exactly one variant")
    if one_only["--from"] and given != ["--from"]:
        raise click.UsageError(
            "--from imports a local file; it does not combine with --repo/--revision/--filename"
        )
    if sha256 and not one_only["--from"]:
        raise click.UsageError(
            "--sha256 goes with --from (Hub files are checked against the card or the ETag)"
        )
    if sha256 and not _SHA256.match(sha256):
        raise click.BadParameter("expected 64 hex digits", param_hint="--sha256")


def _show(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print_json({"env": static_env(), "results": rows})
        return
    from s2mlp_cli import report

    out.print(report.pull_table(rows))
    for row in rows:  # paths whole, on a line of their own: a folded path cannot be copied
        if row.get("path"):
            out.print(f"{row['variant']}: {row['path']}", soft_wrap=True, highlight=False)


def _failed_row(card: Card, e: S2MLPError) -> dict:
    return {"variant": card.name, "status": "failed", "detail": say(e, "pull")}
