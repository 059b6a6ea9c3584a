"""S²-MLPv2: Improved Spatial-Shift MLP Architecture for Vision.

Yu, Li, Cai, Sun, Li; arXiv 2108.01072. The authors released no code and no weights; this is written from the
paper. It uses "the exact same pyramid structure" as ViP-S/7 and ViP-M/7 (stem, Downsample, final norm,
mean pooling, head; see `model.py`), with ViP's permute-MLP replaced by the S² token mixer:

    mlp1: Linear(c, 3c) -> [SS1(x1), SS2(x2), x3] -> split attention over the 3 branches -> mlp2: Linear(c, c)

Module and state_dict names mirror ViP's, so one mental model (and one loader) serves both families.
"""

from collections.abc import Sequence

import torch
from timm.layers import Mlp
from torch import nn

from s2mlp_cli.arch.layers import (
    PatchEmbed,
    PreNormBlock,
    build_network,
    check_min_size,
    check_stages,
    init_weights,
    spatial_shift1,
    spatial_shift2,
    tracing,
)
from s2mlp_cli.arch.model import PyramidModel, pyramid_feature_info


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


# The block: layers.PreNormBlock(dim, S2Attention(dim)): x + DropPath(S2Mixing(LN(x))), then
# x + DropPath(ChannelMLP(LN(x))).


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
            lambda i, dim, dpr: PreNormBlock(dim, S2Attention(dim), mlp_ratio=mlp_ratios[i], drop_path=dpr),
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
