"""The one registry of model families, and every fact about a family that code outside its model file
needs: every list of families (cards, builders, `list --family`, `bench --compare`) is derived from
`FAMILIES`, and pretrained_cfg, the push config, eval's size checks and the stride read these facts.

A family is an architecture. Ours are built by our own classes (`s2mlp_cli.arch`, which maps each of
these names to its class and checkpoint filter); timm's are built by `timm.create_model`. `group` is the
name `bench --compare` uses: GFNet's isotropic and pyramid models compare as one group.
No torch here: the CLI validates names with it before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s2mlp_cli.errors import S2MLPError


@dataclass(frozen=True)
class Family:
    name: str
    group: str
    title: str
    from_timm: bool = False  # built by timm.create_model, not by a class of ours
    layout: str = "isotropic"  # "pyramid" (ViP's stages), "pyramid_h" (GFNet-H's), "isotropic"; timm's: ""
    default_patch: int | None = None  # the constructor's patch size when a card states none
    fixed_input: bool = False  # filters, position embeddings or segment_dim fix the input size
    one_size: bool = False  # and no loader can adapt the weights to another (ViP's segment_dim)
    first_conv: str = "patch_embed.proj"
    filters_resized_on_load: bool = False  # its checkpoint filter resizes weights to the model's input

    def stride(self, arch: Mapping[str, Any]) -> int | None:
        """Input pixels per final token of a model with these constructor arguments; None for timm's."""
        if self.from_timm:
            return None
        patch = arch.get("patch_size", self.default_patch)
        if self.layout == "pyramid":
            return patch * 2 ** sum(bool(t) for t in arch["transitions"][:-1])
        if self.layout == "pyramid_h":
            return patch * 2 ** (len(arch.get("depth", (2, 2, 10, 4))) - 1)
        return patch


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("s2mlpv2", "s2mlpv2", "S²-MLPv2", layout="pyramid", default_patch=7),
        Family("s2mlp", "s2mlp", "S²-MLP (v1)", default_patch=16),
        Family(
            "vip",
            "vip",
            "Vision Permutator",
            layout="pyramid",
            default_patch=7,
            fixed_input=True,
            one_size=True,
        ),
        Family("gfnet", "gfnet", "GFNet", default_patch=16, fixed_input=True, filters_resized_on_load=True),
        Family(
            "gfnet_pyramid",
            "gfnet",
            "GFNet-H",
            layout="pyramid_h",
            default_patch=4,
            fixed_input=True,
            first_conv="patch_embed.0.proj",
            filters_resized_on_load=True,
        ),
        Family("mixer", "mixer", "MLP-Mixer (timm)", from_timm=True, layout="", first_conv="stem.proj"),
        Family("resmlp", "resmlp", "ResMLP (timm)", from_timm=True, layout="", first_conv="stem.proj"),
        Family("gmlp", "gmlp", "gMLP (timm)", from_timm=True, layout="", first_conv="stem.proj"),
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
