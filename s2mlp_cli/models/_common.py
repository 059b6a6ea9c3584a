"""Parts shared by the pyramid MLP families (ViP, S²-MLPv2): stem, downsampling, stage layout, init.

ViP (Hou et al., "Vision Permutator", arXiv 2106.12368, github.com/Andrew-Qibin/VisionPermutator)
defines the skeleton; S²-MLPv2 reuses it exactly, so both build `network` with `build_network`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches: (B, 3, H, W) -> (B, C, H/p, W/p)."""

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Between stages, channels-last: k=s=2 when the grid halves, k=s=1 when only the width changes."""

    def __init__(self, in_dim: int, out_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        x = self.proj(x)
        return x.permute(0, 2, 3, 1)  # (B, C, H', W') -> (B, H', W', C')


def check_stages(layers: Sequence[int], **per_stage: Sequence) -> None:
    """Every per-stage list must have one entry per stage: a clear error instead of an IndexError."""
    if not layers or any(int(n) < 1 for n in layers):
        raise ValueError(f"layers must list at least one stage of >= 1 block, got {list(layers)}")
    for name, values in per_stage.items():
        if len(values) != len(layers):
            raise ValueError(f"{name} has {len(values)} entries but layers has {len(layers)} stages")


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic depth ramped linearly from 0 to `rate` over `n` blocks (every family's rule)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def build_network(
    layers: Sequence[int],
    embed_dims: Sequence[int],
    transitions: Sequence[bool],
    make_block: Callable[[int, int, float], nn.Module],
    drop_path_rate: float,
) -> tuple[nn.ModuleList, int]:
    """ViP's `network`: stage i, then a Downsample where transitions[i] or the width changes.

    `make_block(stage, dim, drop_path)` builds one block. Drop path ramps linearly from 0 to
    `drop_path_rate` over all blocks of all stages. Returns the network and its total stride after the stem.
    """
    rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
    network: list[nn.Module] = []
    stride = 1
    for i, depth in enumerate(layers):
        network.append(nn.Sequential(*(make_block(i, embed_dims[i], next(rates)) for _ in range(depth))))
        if i == len(layers) - 1:
            break
        if transitions[i] or embed_dims[i] != embed_dims[i + 1]:
            patch = 2 if transitions[i] else 1
            network.append(Downsample(embed_dims[i], embed_dims[i + 1], patch))
            stride *= patch
    return nn.ModuleList(network), stride


def init_weights(module: nn.Module) -> None:
    """ViP's init: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0); convs keep torch's default."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ClassifierModel(nn.Module):
    """The forward contract every family shares, after its own `forward_features` -> (B, h, w, C)."""

    num_features: int
    num_classes: int

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_weights(self.head)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(1, 2))  # (B, h, w, C) -> (B, C)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
