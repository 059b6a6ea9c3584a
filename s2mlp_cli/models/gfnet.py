"""Global Filter Networks for Image Classification.

Rao, Zhao, Zhu, Lu, Zhou; NeurIPS 2021, arXiv 2107.00645; official code github.com/raoyongming/GFNet.
Written from the paper and checked against the official code's outputs (../shared/reference); the module
and state_dict names are the official ones, so the published checkpoints load with strict=True.

Tokens are kept channels-last on their grid, (B, h, w, C), throughout; the official code flattens them to
(B, N, C), which gives the same numbers for every op used here. The input size is fixed by the filters'
and position embedding's shapes; `checkpoint_filter_fn` resizes both, as the official fine-tuning script
does, so a model built at another `img_size` loads the 224 checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.nn import functional as F

from s2mlp_cli.models._common import (
    ClassifierModel,
    Downsample,
    PatchEmbed,
    check_stages,
    drop_path_rates,
    init_weights,
)


class GlobalFilter(nn.Module):
    """Learned filter in the frequency domain: irfft2(rfft2(x) * K), orthonormal, computed in float32."""

    def __init__(self, dim: int, *, h: int, w: int) -> None:
        super().__init__()
        # (h, w//2 + 1, C, 2): real and imaginary parts of a filter over the rfft2 half-spectrum
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, dim, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")  # (B, H, W, C) -> (B, H, W//2+1, C) complex
        x = x * torch.view_as_complex(self.complex_weight.float())
        return torch.fft.irfft2(x, s=(H, W), dim=(1, 2), norm="ortho")  # -> (B, H, W, C) float32

    def fft_macs(self, x: torch.Tensor) -> int:
        """MACs the flop counter does not see (documented in stats.count_gmacs)."""
        _, H, W, C = x.shape
        n = H * W
        return round(2 * (n * C / 2) * math.log2(n)) + H * (W // 2 + 1) * C


class Block(nn.Module):
    """One residual: x + DropPath(gamma * MLP(LN(Filter(LN(x))))); gamma only with LayerScale."""

    def __init__(
        self,
        dim: int,
        *,
        grid: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        init_values: float | None = None,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim)) if init_values is not None else None
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.filter = GlobalFilter(dim, h=grid, w=grid)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm2(self.filter(self.norm1(x))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y)


class _GFNetBase(ClassifierModel):
    """The input-size check shared by both GFNet layouts."""

    img_size: int

    def _check_size(self, x: torch.Tensor) -> None:
        H, W = x.shape[-2:]
        if H != self.img_size or W != self.img_size:
            raise ValueError(
                f"this GFNet was built for {self.img_size}x{self.img_size} input, got {H}x{W}; build it with "
                f"img_size={max(H, W)} (its filters and position embedding are resized when weights load)"
            )


class GFNet(_GFNetBase):
    """The isotropic GFNet: patch embedding, position embedding, `depth` global-filter blocks."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.img_size, self.grid = img_size, grid
        self.num_classes = num_classes
        self.num_features = embed_dim
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, grid=grid, mlp_ratio=mlp_ratio, norm_eps=norm_eps, drop_rate=drop_rate, drop_path=p
            )
            for p in dpr
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
        x = self.pos_drop(x + self.pos_embed.view(1, self.grid, self.grid, -1))  # (1, N, C) -> (1, h, w, C)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class GFNetPyramid(_GFNetBase):
    """GFNet-H: a 4x4 patch stem, then stages joined by 2x2 downsampling; pos_embed on stage 1 only."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 4,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (64, 128, 256, 512),
        depth: Sequence[int] = (2, 2, 10, 4),
        mlp_ratio: Sequence[float] = (4.0, 4.0, 4.0, 4.0),
        norm_eps: float = 1e-6,
        init_values: float = 1e-3,
        layerscale: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_stages(depth, embed_dim=embed_dim, mlp_ratio=mlp_ratio)
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_features = embed_dim[-1]
        grids = [img_size // patch_size]
        for _ in depth[1:]:
            grids.append(grids[-1] // 2)
        self.grid = grids[0]
        self.patch_embed = nn.ModuleList(
            [PatchEmbed(patch_size=patch_size, in_chans=3, embed_dim=embed_dim[0])]
        )
        self.patch_embed.extend(Downsample(embed_dim[i], embed_dim[i + 1], 2) for i in range(len(depth) - 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, grids[0] ** 2, embed_dim[0]))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = iter(drop_path_rates(drop_path_rate, sum(depth)))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    Block(
                        embed_dim[i],
                        grid=grids[i],
                        mlp_ratio=mlp_ratio[i],
                        norm_eps=norm_eps,
                        init_values=init_values if layerscale else None,
                        drop_rate=drop_rate,
                        drop_path=next(dpr),
                    )
                    for _ in range(depth[i])
                )
            )
            for i in range(len(depth))
        )
        self.norm = nn.LayerNorm(self.num_features, eps=norm_eps)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        x = self.patch_embed[0](x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
        x = self.pos_drop(x + self.pos_embed.view(1, self.grid, self.grid, -1))
        for i, stage in enumerate(self.blocks):
            if i > 0:
                x = self.patch_embed[i](x)  # channels-last 2x2 downsampling
            x = stage(x)
        return self.norm(x)


def _resize_grid(t: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Bicubic resize of a (h, w, ...) tensor's first two axes, trailing axes treated as channels."""
    h, w, *rest = t.shape
    x = t.reshape(1, h, w, -1).permute(0, 3, 1, 2)  # (h, w, ...) -> (1, K, h, w)
    x = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=align_corners)
    return x.permute(0, 2, 3, 1).reshape(*size, *rest).to(t.dtype)  # -> (h', w', ...)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """Resize the position embedding and filters to `model`'s input size.

    As the official fine-tuning script does: the position embedding grid bicubic with
    align_corners=False, each filter bicubic with align_corners=True to (h', h'//2 + 1).
    """
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        want = target.get(key)
        if want is not None and want.shape != value.shape and value.dim() == want.dim():
            if key == "pos_embed":
                side, new_side = math.isqrt(value.shape[1]), math.isqrt(want.shape[1])
                grid = value.reshape(side, side, -1)  # (1, N, C) -> (h, w, C)
                value = _resize_grid(grid, (new_side, new_side), align_corners=False).reshape(
                    1, -1, value.shape[2]
                )
            elif key.endswith("filter.complex_weight"):
                value = _resize_grid(value, tuple(want.shape[:2]), align_corners=True)
        out[key] = value
    return out
