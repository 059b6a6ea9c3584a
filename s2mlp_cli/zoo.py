"""The model zoo: one YAML card per variant, validated when loaded.

A card holds what the tool needs to build, fetch, preprocess for and compare one model. Loading a card
imports no torch, so `s2mlp list` and `s2mlp info` answer at once.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from s2mlp_cli import families
from s2mlp_cli.errors import CardError, S2MLPError, UnknownModelError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --- schema -----------------------------------------------------------------------------------------
# A field spec is (checker, required). A checker returns an error text, or None when the value is fine.


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type(name: str, test: Callable[[Any], bool], nullable: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if test(v):
            return None
        return f"expected {name}{' or null' if nullable else ''}, got {type(v).__name__} {v!r}"

    return check


_str = _type("a string", lambda v: isinstance(v, str) and v != "")
_opt_str = _type("a string", lambda v: isinstance(v, str) and v != "", nullable=True)
_int = _type("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
_number = _type("a number", _is_number)
_opt_number = _type("a number", _is_number, nullable=True)
_bool = _type("true or false", lambda v: isinstance(v, bool))
_str_list = _type("a list of strings", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v))
_mapping = _type("a mapping", lambda v: isinstance(v, dict))
_triple = _type(
    "a list of 3 numbers", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_number, v))
)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"expected one of {', '.join(choices)}, got {v!r}"

    return check


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return (
            None if v is None or (isinstance(v, str) and pattern.match(v)) else f"expected {what}, got {v!r}"
        )

    return check


def _fraction(v: Any) -> str | None:
    return None if _is_number(v) and 0 < v <= 1 else f"expected a number in (0, 1], got {v!r}"


SCHEMA: dict[str, Any] = {
    "name": (_str, True),
    "family": (_one_of(families.names()), True),
    "aliases": (_str_list, False),
    "description": (_str, True),
    "arch": (_mapping, True),
    "preprocess": (
        {
            "input_size": (_int, True),
            "crop_pct": (_fraction, True),
            "interpolation": (_one_of(INTERPOLATIONS), True),
            "mean": (_triple, True),
            "std": (_triple, True),
        },
        True,
    ),
    "weights": (
        {
            "published": (_bool, True),
            "repo": (_opt_str, False),
            "filename": (_opt_str, False),
            "revision": (_matching(_HEX40, "a 40-hex commit"), False),
            "sha256": (_matching(_HEX64, "a 64-hex sha256"), False),
            "urls": (_str_list, False),
            "note": (_opt_str, False),
        },
        True,
    ),
    "counts": ({"params": (_int, True), "gmacs": (_number, True)}, True),
    "paper": (
        {
            "title": (_str, True),
            "arxiv": (_opt_str, False),
            "code": (_opt_str, False),
            "params_m": (_opt_number, False),
            "gmacs": (_opt_number, False),
            "top1": (_opt_number, False),
        },
        True,
    ),
    "peers": (_str_list, False),
    # where the card's numbers come from: a citation a reader can check, per section
    "sources": (
        {
            "preprocess": (_str, True),
            "counts": (_str, False),
            "paper": (_str, False),
            "weights": (_str, False),
            "weights_pin": (_str, False),  # where the revision and sha256 pins were read
        },
        True,
    ),
}


def _validate(data: Any, schema: dict[str, Any], where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise CardError(
            f"{where}: {prefix.rstrip('.') or 'card'}: expected a mapping, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise CardError(f"{where}: unknown field '{prefix}{unknown[0]}' (allowed: {', '.join(schema)})")
    for key, (spec, required) in schema.items():
        if key not in data:
            if required:
                raise CardError(f"{where}: missing field '{prefix}{key}'")
            continue
        if isinstance(spec, dict):
            _validate(data[key], spec, where, f"{prefix}{key}.")
            continue
        problem = spec(data[key])
        if problem:
            raise CardError(f"{where}: field '{prefix}{key}': {problem}")


# --- cards ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """The eval transform (timm's convention): resize the short side to `resize`, centre-crop `input_size`."""

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize(self) -> int:
        return math.floor(self.input_size / self.crop_pct)

    @property
    def geometry(self) -> tuple[int, float, str]:
        """What decoding, resizing and cropping depend on: models equal here can share one pass."""
        return (self.input_size, self.crop_pct, self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "resize": self.resize,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class Weights:
    published: bool
    repo: str | None = None
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    urls: tuple[str, ...] = ()
    note: str | None = None

    @property
    def status(self) -> str:
        if not self.published:
            return "not published"
        if self.repo:
            return "hub"
        if self.urls:
            return "manual download"
        return "none"


@dataclass(frozen=True)
class Card:
    name: str
    family: str
    description: str
    arch: dict[str, Any]
    preprocess: Preprocess
    weights: Weights
    params: int
    gmacs: float
    paper: dict[str, Any]
    aliases: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def family_facts(self) -> families.Family:
        return families.get(self.family)

    @property
    def stride(self) -> int | None:
        """Input pixels per final token (None for timm-built baselines)."""
        return self.family_facts.stride(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """The card as its YAML reads, for `info --json`."""
        p, w = self.preprocess, self.weights
        return {
            "name": self.name,
            "family": self.family,
            "aliases": list(self.aliases),
            "description": self.description,
            "arch": self.arch,
            "preprocess": {k: v for k, v in p.to_dict().items() if k != "resize"},
            "weights": {
                "status": w.status,
                "published": w.published,
                "repo": w.repo,
                "filename": w.filename,
                "revision": w.revision,
                "sha256": w.sha256,
                "urls": list(w.urls),
                "note": w.note,
            },
            "counts": {"params": self.params, "gmacs": self.gmacs},
            "paper": dict(self.paper),
            "peers": list(self.peers),
            "sources": dict(self.sources),
        }


def zoo_dir() -> Path:
    """The cards' folder: `S2MLP_ZOO` if set, else the copy inside the wheel, else the source tree's."""
    if env := os.environ.get("S2MLP_ZOO"):
        return Path(env)
    packaged = Path(__file__).parent / "zoo"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "zoo"


def parse_card(path: Path) -> Card:
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CardError(f"{where}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CardError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from e
    _validate(data, SCHEMA, where)
    if "img_size" in data["arch"]:
        raise CardError(
            f"{where}: field 'arch.img_size': the input size lives in preprocess.input_size only "
            "(the model is built at that size)"
        )
    if data["name"] != path.stem:
        raise CardError(f"{where}: field 'name' is {data['name']!r} but the file is named {path.stem!r}")
    p, w = data["preprocess"], data["weights"]
    return Card(
        name=data["name"],
        family=data["family"],
        description=data["description"],
        arch=data["arch"],
        preprocess=Preprocess(
            input_size=p["input_size"],
            crop_pct=float(p["crop_pct"]),
            interpolation=p["interpolation"],
            mean=tuple(float(v) for v in p["mean"]),
            std=tuple(float(v) for v in p["std"]),
        ),
        weights=Weights(**{**w, "urls": tuple(w.get("urls", ()))}),
        params=data["counts"]["params"],
        gmacs=float(data["counts"]["gmacs"]),
        paper=data["paper"],
        aliases=tuple(data.get("aliases", ())),
        peers=tuple(data.get("peers", ())),
        sources=dict(data["sources"]),
        path=path,
    )


def load_cards(directory: Path | None = None) -> dict[str, Card]:
    """Every card in `directory` (default `zoo_dir()`), by name, in file-name order."""
    directory = directory or zoo_dir()
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise CardError(f"{directory}: no zoo cards (*.yaml) found")
    cards = {c.name: c for c in map(parse_card, paths)}
    seen: dict[str, str] = {}
    for card in cards.values():
        for alias in card.aliases:
            if alias in cards or alias in seen:
                other = seen.get(alias, alias)
                raise CardError(f"{card.path}: alias {alias!r} is already taken by {other!r}")
            seen[alias] = card.name
    for card in cards.values():
        for peer in card.peers:
            if peer not in cards:
                raise CardError(f"{card.path}: field 'peers': {peer!r} is not a card in {directory}")
    return cards


@cache
def _parsed(directory: Path, stamp: tuple) -> dict[str, Card]:
    return load_cards(directory)


def cards() -> dict[str, Card]:
    """The zoo in `zoo_dir()`, parsed once per process for as long as its files are unchanged."""
    directory = zoo_dir()
    try:
        stamp = tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.glob("*.yaml"))
        )
    except OSError:
        stamp = ()
    return _parsed(directory, stamp)


def get_card(name: str) -> Card:
    """A card by name or alias, case-insensitively; unknown names raise with the closest matches."""
    zoo = cards()
    if name in zoo:
        return zoo[name]
    lookup = {n.lower(): n for n in zoo}
    lookup.update({a.lower(): c.name for c in zoo.values() for a in c.aliases})
    key = name.strip().lower()
    if key in lookup:
        return zoo[lookup[key]]
    close = difflib.get_close_matches(key, list(lookup), n=4, cutoff=0.5)
    if close:
        raise UnknownModelError(f"unknown model {name!r}; did you mean {', '.join(close)}?")
    raise UnknownModelError(
        f"unknown model {name!r}", next_step="list_models", advice="s2mlp_cli.zoo.cards() lists them all"
    )


def requested_card(name: str, param: str = "variants") -> Card:
    """`get_card` for a request: an unknown name is a problem of argument `param` (a usage error) that
    names the closest cards."""
    try:
        return get_card(name)
    except UnknownModelError as e:
        raise S2MLPError(e.message, param=param, next_step=e.next_step, advice=e.advice) from None
