"""S²-MLPv2: Improved Spatial-Shift MLP Architecture for Vision.

Yu, Li, Cai, Sun, Li; arXiv 2108.01072. The authors released no code and no weights; this is written from the
paper. It uses "the exact same pyramid structure" as ViP-S/7 and ViP-M/7 (stem, Downsample, final norm,
mean pooling, head; see `_common.py`), with ViP's permute-MLP replaced by the S² token mixer:

    mlp1: Linear(c, 3c) -> [SS1(x1), SS2(x2), x3] -> split attention over the 3 branches -> mlp2: Linear(c, c)

Module and state_dict names mirror ViP's, so one mental model (and one loader) serves both families.
"""

from collections.abc import Sequence

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from s2mlp_cli.models._common import (
    PatchEmbed,
    PyramidModel,
    build_network,
    check_min_size,
    check_stages,
    init_weights,
    pyramid_feature_info,
    tracing,
)


def _shift(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """One step along `axis` (1: H, 2: W) of (B, H, W, c), out of place; the border keeps its own value.

    +1: out[i] = in[i - 1] (content moves to larger index), out[0] = in[0]; -1: out[i] = in[i + 1],
    out[-1] = in[-1]. Shifting in place on overlapping views (as public ports do) smears row 0 across the
    axis on CPU and races on GPU; torch.roll would wrap around instead of replicating the border.
    """
    n = x.shape[axis]
    if step > 0:
        return torch.cat([x.narrow(axis, 0, 1), x.narrow(axis, 0, n - 1)], dim=axis)
    return torch.cat([x.narrow(axis, 1, n - 1), x.narrow(axis, n - 1, 1)], dim=axis)


def _check_shift_input(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(
            f"spatial shift expects a channels-last (B, H, W, C) tensor, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] % 4:
        raise ValueError(
            f"spatial shift splits channels into 4 equal quarters; {x.shape[-1]} is not divisible by 4"
        )


def _shift_quarters(x: torch.Tensor, first: int, second: int) -> torch.Tensor:
    """The four channel quarters shifted +1 and -1 along axis `first`, then +1 and -1 along `second`."""
    if not torch.jit.is_scripting():  # TorchScript compiles no Python checks
        if not tracing():  # nor can fx symbolic tracing run them
            _check_shift_input(x)
    q = x.shape[-1] // 4
    parts = [x[..., :q], x[..., q : 2 * q], x[..., 2 * q : 3 * q], x[..., 3 * q :]]
    return torch.cat(
        [
            _shift(parts[0], first, 1),
            _shift(parts[1], first, -1),
            _shift(parts[2], second, 1),
            _shift(parts[3], second, -1),
        ],
        dim=-1,
    )


def spatial_shift1(x: torch.Tensor) -> torch.Tensor:
    """SS1 on (B, H, W, C): channel quarters shifted +1 along H, -1 along H, +1 along W, -1 along W."""
    return _shift_quarters(x, 1, 2)


def spatial_shift2(x: torch.Tensor) -> torch.Tensor:
    """SS2 on (B, H, W, C): channel quarters shifted +1 along W, -1 along W, +1 along H, -1 along H."""
    return _shift_quarters(x, 2, 1)


class S2Attention(nn.Module):
    """The S² token mixer (named `attn` in a block, as ViP names its mixer)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp1 = nn.Linear(dim, dim * 3)
        self.reweight = Mlp(dim, dim // 4, dim * 3)  # split attention: c -> c/4 -> GELU -> 3c
        self.mlp2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[0], x.shape[-1]
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


class S2MLPv2(PyramidModel):
    """S²-MLPv2 on ViP's pyramid skeleton; runs at any input size of at least its stride (14 for /7):
    a size the stride does not divide loses its last pixels, as a strided convolution does."""

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
        global_pool: str = "avg",
        img_size: int = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_stages(layers, embed_dims=embed_dims, transitions=transitions, mlp_ratios=mlp_ratios)
        if any(d % 4 for d in embed_dims):
            raise ValueError(
                f"every embed_dim must be divisible by 4 (the shift's quarters), got {list(embed_dims)}"
            )
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dims[0])
        self.network, down = build_network(
            layers,
            embed_dims,
            transitions,
            lambda i, dim, dpr: Block(dim, mlp_ratio=mlp_ratios[i], drop_path=dpr),
            drop_path_rate,
        )
        self.stride = patch_size * down
        check_min_size(img_size, self.stride)
        self.img_size = img_size
        self.feature_info = pyramid_feature_info(self.network, patch_size)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.init_head(
            embed_dims[-1], num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans
        )
        self.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles no Python checks
            if not tracing():  # nor can fx symbolic tracing run them
                check_min_size(min(x.shape[-2:]), self.stride, "input")
        return self.patch_embed(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
