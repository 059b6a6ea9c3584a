"""The one registry of model families: every list of families (cards, builders, `list --family`,
`bench --compare`) is derived from `FAMILIES`.

A family is an architecture. Ours are built by our own classes (`builder` "module:Class", keyword-only
arguments named as in the official code); timm's are built by `timm.create_model` (`builder` "timm").
`group` is the name `bench --compare` uses: GFNet's isotropic and pyramid models compare as one group.
No torch here: the CLI validates names with it before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mlp_cli.errors import S2MLPError


@dataclass(frozen=True)
class Family:
    name: str
    builder: str  # "module:Class", or "timm"
    group: str
    title: str

    @property
    def from_timm(self) -> bool:
        return self.builder == "timm"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("s2mlpv2", "s2mlp_cli.models.s2mlpv2:S2MLPv2", "s2mlpv2", "S²-MLPv2"),
        Family("s2mlp", "s2mlp_cli.models.s2mlp:S2MLP", "s2mlp", "S²-MLP (v1)"),
        Family("vip", "s2mlp_cli.models.vip:VisionPermutator", "vip", "Vision Permutator"),
        Family("gfnet", "s2mlp_cli.models.gfnet:GFNet", "gfnet", "GFNet"),
        Family("gfnet_pyramid", "s2mlp_cli.models.gfnet:GFNetPyramid", "gfnet", "GFNet-H"),
        Family("mixer", "timm", "mixer", "MLP-Mixer (timm)"),
        Family("resmlp", "timm", "resmlp", "ResMLP (timm)"),
        Family("gmlp", "timm", "gmlp", "gMLP (timm)"),
    )
}
REFERENCE = "s2mlpv2"  # the family every benchmark ratio is taken against


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def groups() -> tuple[str, ...]:
    """The names `bench --compare` accepts for whole families, in registry order."""
    return tuple(dict.fromkeys(f.group for f in FAMILIES.values()))


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise S2MLPError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
