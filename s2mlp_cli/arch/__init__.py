"""The nets: one file per family (`s2mlpv2`, `s2mlp`, `vip`, `gfnet`), the layers they share (`layers`),
the timm model API they share (`model`), and `build`: from a zoo card to a net with its pretrained_cfg.

Imports torch, timm, the zoo and the family registry; nothing about weights (that is `s2mlp_cli.api`).
"""

from s2mlp_cli.arch.build import build, checkpoint_filter, create, family_class, features_only, pretrained_cfg
from s2mlp_cli.arch.layers import spatial_shift1, spatial_shift2

__all__ = [
    "build",
    "checkpoint_filter",
    "create",
    "family_class",
    "features_only",
    "pretrained_cfg",
    "spatial_shift1",
    "spatial_shift2",
]
