"""`s2mlp pull`: verified weights from the Hugging Face Hub, or imported from a downloaded file."""

from __future__ import annotations

import re

import click
from rich.text import Text

from s2mlp_cli.cli._errors import say
from s2mlp_cli.cli._options import json_option, resolve_card
from s2mlp_cli.console import err, out, print_json
from s2mlp_cli.errors import S2MLPError, WeightsUnavailableError
from s2mlp_cli.hub import REPO_ID
from s2mlp_cli.zoo import cards

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
    if pull_all and variants:
        raise click.UsageError("give variants or --all, not both")
    if not pull_all and not variants:
        raise click.UsageError("name at least one variant (see `s2mlp list`), or use --all")
    one_only = {"--repo": repo, "--revision": revision, "--filename": filename, "--from": from_file}
    given = [flag for flag, value in one_only.items() if value]
    if given and len(variants) != 1:
        raise click.UsageError(f"{', '.join(given)} apply to exactly one variant")
    if from_file and (repo or revision or filename):
        raise click.UsageError(
            "--from imports a local file; it does not combine with --repo/--revision/--filename"
        )
    if sha256 and not from_file:
        raise click.UsageError(
            "--sha256 goes with --from (Hub files are checked against the card or the ETag)"
        )
    if sha256 and not _SHA256.match(sha256):
        raise click.BadParameter("expected 64 hex digits", param_hint="--sha256")

    from s2mlp_cli import hub, report

    if pull_all:
        targets = list(cards().values())
    else:
        targets = list({c.name: c for c in map(resolve_card, variants)}.values())

    rows, failures = [], []
    for card in targets:
        if pull_all:
            try:
                hub.choose(card)
            except WeightsUnavailableError as e:
                rows.append({"variant": card.name, "status": "skipped", "detail": say(e, "pull")})
                continue
        try:
            if from_file:
                pulled = hub.import_file(card, from_file, sha256)
            else:
                pulled = hub.pull(card, repo, revision, filename, refresh=refresh, progress=not as_json)
        except S2MLPError as e:
            if len(targets) == 1:
                raise
            failures.append(card.name)
            rows.append({"variant": card.name, "status": "failed", "detail": say(e, "pull")})
            err.print(Text(f"error: {say(e, 'pull')}", style="red"))
            continue
        rows.append({"status": "cached" if pulled.cached else "pulled", **pulled.to_dict()})

    if as_json:
        print_json(rows)
    else:
        out.print(report.pull_table(rows))
    if failures:
        raise click.ClickException(f"{len(failures)} of {len(targets)} failed: {', '.join(failures)}")
