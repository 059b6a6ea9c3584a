"""S²-MLPv2: Improved Spatial-Shift MLP Architecture for Vision.

Yu, Li, Cai, Sun, Li; arXiv 2108.01072. The authors released no code and no weights; this is written from the
paper. It uses "the exact same pyramid structure" as ViP-S/7 and ViP-M/7 (stem, Downsample, final norm,
mean pooling, head; see `_common.py`), with ViP's permute-MLP replaced by the S² token mixer:

    mlp1: Linear(c, 3c) -> [SS1(x1), SS2(x2), x3] -> split attention over the 3 branches -> mlp2: Linear(c, c)

Module and state_dict names mirror ViP's, so one mental model (and one loader) serves both families.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from s2mlp_cli.models._common import (
    ClassifierModel,
    PatchEmbed,
    build_network,
    check_stages,
    init_weights,
)

# Each shift moves the four channel quarters one step along (axis, direction) of a (B, H, W, C) tensor.
# +1: out[i] = in[i - 1] (content moves to larger index); -1: out[i] = in[i + 1].
_SS1 = ((1, +1), (1, -1), (2, +1), (2, -1))  # +H, -H, +W, -W
_SS2 = ((2, +1), (2, -1), (1, +1), (1, -1))  # +W, -W, +H, -H


def _shift_quarters(x: torch.Tensor, plan: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Out of place: every value is read from the unmodified `x`; the border row/column keeps its own value.

    Shifting in place on overlapping views of one tensor (as public ports do) smears row 0 across the
    axis on CPU and races on GPU; torch.roll would wrap around instead of replicating the border.
    """
    if x.dim() != 4:
        raise ValueError(
            f"spatial shift expects a channels-last (B, H, W, C) tensor, got shape {tuple(x.shape)}"
        )
    channels = x.shape[-1]
    if channels % 4:
        raise ValueError(
            f"spatial shift splits channels into 4 equal quarters; {channels} is not divisible by 4"
        )
    q = channels // 4
    out = x.clone()  # the border keeps its own value: start from a copy of the input
    for i, (axis, step) in enumerate(plan):
        dst: list[slice] = [slice(None)] * 4
        src: list[slice] = [slice(None)] * 4
        dst[3] = src[3] = slice(i * q, (i + 1) * q)
        dst[axis], src[axis] = (
            (slice(1, None), slice(None, -1)) if step > 0 else (slice(None, -1), slice(1, None))
        )
        out[tuple(dst)] = x[tuple(src)]  # (B, H, W, q) interior <- neighbour, read from the input
    return out


def spatial_shift1(x: torch.Tensor) -> torch.Tensor:
    """SS1 on (B, H, W, C): quarters shifted +1 along H, -1 along H, +1 along W, -1 along W."""
    return _shift_quarters(x, _SS1)


def spatial_shift2(x: torch.Tensor) -> torch.Tensor:
    """SS2 on (B, H, W, C): quarters shifted +1 along W, -1 along W, +1 along H, -1 along H."""
    return _shift_quarters(x, _SS2)


class S2Attention(nn.Module):
    """The S² token mixer (named `attn` in a block, as ViP names its mixer)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp1 = nn.Linear(dim, dim * 3)
        self.reweight = Mlp(dim, dim // 4, dim * 3)  # split attention: c -> c/4 -> GELU -> 3c
        self.mlp2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = self.mlp1(x)  # (B, H, W, C) -> (B, H, W, 3C)
        x1 = spatial_shift1(x[..., :C])
        x2 = spatial_shift2(x[..., C : 2 * C])
        x3 = x[..., 2 * C :]
        a = (x1 + x2 + x3).mean(dim=(1, 2))  # (B, H, W, C) -> (B, C)
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)  # (B, 3C) -> (3, B, C)
        a = a[:, :, None, None, :]  # (3, B, 1, 1, C)
        x = x1 * a[0] + x2 * a[1] + x3 * a[2]
        return self.mlp2(x)


class Block(nn.Module):
    """Pre-norm: x + DropPath(S2Mixing(LN(x))), then x + DropPath(ChannelMLP(LN(x)))."""

    def __init__(self, dim: int, *, mlp_ratio: float = 3.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = S2Attention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class S2MLPv2(ClassifierModel):
    """S²-MLPv2 on ViP's pyramid skeleton; runs at any input size divisible by its stride (14 for /7)."""

    def __init__(
        self,
        *,
        layers: Sequence[int],
        embed_dims: Sequence[int],
        transitions: Sequence[bool],
        mlp_ratios: Sequence[float] = (3.0, 3.0, 3.0, 3.0),
        patch_size: int = 7,
        in_chans: int = 3,
        num_classes: int = 1000,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_stages(layers, embed_dims=embed_dims, transitions=transitions, mlp_ratios=mlp_ratios)
        if any(d % 4 for d in embed_dims):
            raise ValueError(
                f"every embed_dim must be divisible by 4 (the shift's quarters), got {list(embed_dims)}"
            )
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dims[0])
        self.network, down = build_network(
            layers,
            embed_dims,
            transitions,
            lambda i, dim, dpr: Block(dim, mlp_ratio=mlp_ratios[i], drop_path=dpr),
            drop_path_rate,
        )
        self.stride = patch_size * down
        if img_size % self.stride:
            raise ValueError(
                f"img_size {img_size} is not divisible by the model's total stride {self.stride}"
            )
        self.img_size = img_size
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ValueError(f"input {H}x{W} is not divisible by the model's total stride {self.stride}")
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
        for stage in self.network:
            x = stage(x)
        return self.norm(x)  # (B, h', w', C')
