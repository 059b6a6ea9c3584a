"""Choosing where a variant's weights come from, without reading them: a file the caller names > the
source the user last pulled or imported for the variant (remembered in `S2MLP_HOME/weights/<variant>/
source.json`) > the card's own source. No network, no torch: the CLI asks before anything heavy."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import HubError, S2MLPError, WeightsUnavailableError
from s2mlp_cli.sources.places import REPO_ID, hub_cache, offline, variant_dir
from s2mlp_cli.zoo import Card


@dataclass(frozen=True)
class Source:
    """Where a variant's weights come from on the Hub."""

    repo: str
    filename: str
    revision: str | None = None
    sha256: str | None = None  # the card's pin, when the repo is the card's own

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision or 'main'}/{self.filename}"

    def overrides(self) -> dict[str, str | None]:
        return {"repo": self.repo, "revision": self.revision, "filename": self.filename}


@dataclass(frozen=True)
class Choice:
    """Where a variant's weights will come from, decided without reading them."""

    variant: str
    kind: str  # "file" (a path the caller gave), "import" (our converted copy), "hub"
    origin: str  # "given", "pulled" (remembered), "card"
    path: Path | None = None
    source: Source | None = None


def hub_source(
    card: Card, repo: str | None = None, revision: str | None = None, filename: str | None = None
) -> Source | None:
    """The Hub file for `card` with any overrides; None when the card has no Hub weights and none is given."""
    for name, value in (("repo", repo), ("filename", filename), ("revision", revision)):
        if value is not None and not value.strip():
            raise S2MLPError(f"{name} is empty: name one, or leave it out for the card's", param=name)
    check_names(repo, revision, filename)
    w = card.weights
    if repo is None and not (w.published and w.repo):
        return None
    own = repo is None or repo == w.repo
    own_file = own and filename in (None, w.filename)
    return Source(
        repo=repo or w.repo,
        filename=filename or w.filename or "model.safetensors",
        revision=revision or (w.revision if own else None),
        # the pin holds for the card's own file, at whatever revision it is fetched
        sha256=w.sha256 if own_file else None,
    )


_REVISION = re.compile(r"^[A-Za-z0-9][\w.\-/]{0,199}$")


def check_names(repo: str | None, revision: str | None, filename: str | None) -> None:
    """What becomes a URL and a name in the cache: OWNER/NAME, a revision and a path inside the
    repository, none of which may climb out of its folder."""
    if repo is not None and not REPO_ID.match(repo):
        raise S2MLPError(f"expected OWNER/NAME (letters, digits, - _ .), got {repo!r}", param="repo")
    if revision is not None and (not _REVISION.match(revision) or ".." in revision.split("/")):
        raise S2MLPError(f"expected a branch, tag or commit, got {revision!r}", param="revision")
    if filename is not None:
        parts = filename.split("/")
        if filename.startswith("/") or "\\" in filename or any(p in ("", ".", "..") for p in parts):
            raise S2MLPError(f"expected a path inside the repository, got {filename!r}", param="filename")


def no_weights_error(card: Card) -> WeightsUnavailableError:
    """Why `card` has no weights to use; the CLI adds the commands that fix it (`next_step`)."""
    w = card.weights
    if not w.published:
        why = f"no pretrained weights are published for {card.name}" + (f" ({w.note})" if w.note else "")
        return WeightsUnavailableError(
            why,
            next_step="own_weights",
            variant=card.name,
            advice="use your own: a Hub repository, a checkpoint file, or an imported file",
        )
    where = f" from {w.urls[0]}" if w.urls else ""
    return WeightsUnavailableError(
        f"{card.name}'s official weights are not on the Hugging Face Hub: download them by hand{where}",
        next_step="import",
        variant=card.name,
        advice="then import the file",
    )


def choose(
    card: Card,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
) -> Choice:
    """A file the caller names > the source the user pulled or imported > the card's. No I/O but a
    small JSON record; raises WeightsUnavailableError when there is nothing to use."""
    if weights is not None:
        return Choice(card.name, "file", "given", path=Path(weights).expanduser())
    if repo or revision or filename:
        src = hub_source(card, repo, revision, filename)
        if src is None:
            given = "revision" if revision else "filename"
            raise S2MLPError(
                f"{card.name} has no Hub repository of its own, so a {given} needs a repository "
                "(OWNER/NAME) too",
                param=given,
            )
        return Choice(card.name, "hub", "given", source=src)
    record = read_record(card)
    if record.get("kind") == "import":
        return Choice(card.name, "import", "pulled", path=imported_file(card, record))
    if record.get("kind") == "hub":
        src = hub_source(card, record["repo"], record.get("revision"), record.get("filename"))
        return Choice(card.name, "hub", "pulled", source=src)
    if (src := hub_source(card)) is not None:
        return Choice(card.name, "hub", "card", source=src)
    raise no_weights_error(card)


def offline_error(card: Card, src: Source, step_args: dict[str, Any] | None = None) -> HubError:
    return HubError(
        f"{card.name}: {src} is not in the cache ({hub_cache()}) and HF_HUB_OFFLINE is set",
        next_step="pull_online",
        variant=card.name,
        advice="pull it while online first",
        step_args=step_args,
    )


def gone_error(card: Card) -> HubError:
    return HubError(
        f"{card.name}: the imported weights are gone from {variant_dir(card.name)}",
        next_step="import",
        variant=card.name,
        advice="import the file again",
    )


def precheck(card: Card, weights: str | Path | None = None) -> S2MLPError | None:
    """What would stop `resolve` before any download or read; None when nothing does. Reads no weights,
    imports no torch, asks no network: the CLI runs it before anything heavy."""
    try:
        choice = choose(card, weights)
    except WeightsUnavailableError as e:
        return e
    if choice.kind == "file" and choice.path.is_dir():
        return S2MLPError(f"{choice.path} is a folder; name a weights file in it", param="weights")
    if choice.kind == "file" and not choice.path.is_file():
        return S2MLPError(f"weights file {choice.path} does not exist", param="weights")
    if choice.kind == "import" and not choice.path.is_file():
        return gone_error(card)
    if choice.kind == "hub" and offline() and cached_path(card, **choice.source.overrides()) is None:
        return offline_error(card, choice.source)
    return None


def read_record(card: Card) -> dict[str, Any]:
    """The remembered source: {"kind": "import", ...} or {"kind": "hub", "repo": ...}; {} when none."""
    try:
        record = json.loads((variant_dir(card.name) / "source.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    if "kind" not in record and "sha256" in record:  # written before sources were remembered
        record["kind"] = "import"
    if record.get("kind") == "hub" and not isinstance(record.get("repo"), str):
        return {}
    return record


def imported_file(card: Card, record: dict[str, Any] | None = None) -> Path:
    """The imported file the record names: `<sha256 prefix>.safetensors`, or `model.safetensors` for an
    import made before files were named by their hash."""
    record = read_record(card) if record is None else record
    name = record.get("file")
    if not (isinstance(name, str) and re.fullmatch(r"[0-9a-f]{16,64}\.safetensors", name)):
        name = "model.safetensors"
    return variant_dir(card.name) / name


def cached_path(
    card: Card, repo: str | None = None, revision: str | None = None, filename: str | None = None
) -> Path | None:
    """The Hub file for the variant (with overrides) if it is in the cache, unverified; else None."""
    src = hub_source(card, repo, revision, filename)
    if src is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(src.repo, src.filename, cache_dir=hub_cache(), revision=src.revision)
    return Path(found) if isinstance(found, str) else None


def status(card: Card) -> str:
    """The weights column of `s2mlp list`: pulled when here (and from where, if not the card's source),
    else where they would come from."""
    try:
        choice = choose(card)
        if choice.kind == "import":
            return "pulled (imported)" if choice.path.is_file() else "import missing"
        here = cached_path(card, **choice.source.overrides()) is not None
        if choice.origin == "pulled":
            return f"pulled ({choice.source.repo})" if here else f"{choice.source.repo} (not cached)"
        return "pulled" if here else card.weights.status
    except Exception:  # nothing to use, or an unreadable cache: never breaks `list`
        return card.weights.status
