"""`s2mlp cache list / clear`: the decoded-crop cache that makes a second eval read at memory speed."""

from __future__ import annotations

import click

from s2mlp_cli.cli._options import json_option
from s2mlp_cli.console import out, print_json
from s2mlp_cli.report import FitTable


@click.group("cache")
def cache_command() -> None:
    """The decoded-crop cache of `s2mlp eval` (S2MLP_CACHE, default S2MLP_HOME/cache).

    One entry per dataset and geometry (input size, crop_pct, filter): every image's uint8 centre crop,
    memory-mapped. An entry is keyed by the files' sizes and mtimes, the labels and the decoders'
    versions, so a changed dataset makes a new entry rather than a stale result.

    \b
    Examples:
      s2mlp cache list
      s2mlp cache clear 224px-crop0.9-bicubic-3f2a9c1d0b7e4a55
      s2mlp cache clear --all
    """


@cache_command.command("list")
@json_option
def list_entries(as_json: bool) -> None:
    """Every entry with its dataset, geometry, images and size on disk."""
    from s2mlp_cli.data import cache

    rows = cache.entries()
    if as_json:
        print_json({"root": str(cache.cache_root()), "entries": rows})
        return
    if not rows:
        out.print(f"no cache entries in {cache.cache_root()}", highlight=False)
        return
    columns = [
        ("entry", lambda r: r["name"]),
        ("images", lambda r: "-" if r["images"] is None else f"{r['images']:,}"),
        ("MiB", lambda r: f"{r['bytes'] / 2**20:.1f}"),
        ("dataset / status", lambda r: r["dataset"] if r["status"] == "complete" else r["status"]),
        ("geometry", lambda r: r["geometry"] or "-"),
    ]
    align = {"dataset / status": "left", "geometry": "left"}
    title = f"s2mlp cache: {cache.cache_root()}"
    out.print(
        FitTable(title, columns, rows, keep=("dataset / status",), wrap=("dataset / status",), align=align)
    )
    total = sum(r["bytes"] for r in rows)
    out.print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {total / 2**20:.1f} MiB")


@cache_command.command("clear")
@click.argument("names", nargs=-1, metavar="[ENTRY]...")
@click.option("--all", "clear_all", is_flag=True, help="Remove every entry.")
@json_option
def clear_entries(names: tuple[str, ...], clear_all: bool, as_json: bool) -> None:
    """Remove the named entries (see `s2mlp cache list`), or all of them with --all."""
    from s2mlp_cli.data import cache

    if bool(names) == clear_all:
        raise click.UsageError("name the entries to remove, or use --all")
    removed = cache.clear(list(names) or None)
    freed = sum(r["bytes"] for r in removed)
    if as_json:
        print_json({"removed": [r["name"] for r in removed], "bytes": freed})
        return
    out.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, {freed / 2**20:.1f} MiB")
