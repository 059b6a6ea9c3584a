"""S²-MLP: Spatial-Shift MLP Architecture for Vision.

Yu, Li, Cai, Sun, Li; WACV 2022, arXiv 2106.07477. The authors released no code; this is written from the
paper and shares its shift with S²-MLPv2 (`spatial_shift1`, out of place, border kept).

Isotropic: a 16x16 patch embedding, then blocks of
    x + ShiftMixing(LN(x)),  ShiftMixing: Linear(c, c) -> GELU -> SS1 -> Linear(c, c)
    x + ChannelMLP(LN(x)),   ChannelMLP: Linear(c, 4c) -> GELU -> Linear(4c, c)
then a final LayerNorm, mean over tokens and a linear head, as in MLP-Mixer which it follows.
"""

import torch
from torch import nn
from torch.nn import functional as F

from s2mlp_cli.arch.layers import (
    PatchEmbed,
    PreNormBlock,
    check_min_size,
    drop_path_rates,
    init_weights,
    spatial_shift1,
    tracing,
)
from s2mlp_cli.arch.model import IsotropicModel


class ShiftMixing(nn.Module):
    """The spatial-shift token mixer (named `attn` in a block, as in S²-MLPv2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp1 = nn.Linear(dim, dim)
        self.mlp2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.mlp1(x))  # (B, H, W, C)
        return self.mlp2(spatial_shift1(x))


class S2MLP(IsotropicModel):
    """S²-MLP (wide: 12 x 768, deep: 36 x 384); runs at any input size of at least the patch size (a
    size the patch does not divide loses its last pixels, as a strided convolution does)."""

    def __init__(
        self,
        *,
        embed_dim: int = 768,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        img_size: int = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f"embed_dim must be divisible by 4 (the shift's quarters), got {embed_dim}")
        check_min_size(img_size, patch_size)
        self.stride = patch_size
        self.img_size = img_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *(
                PreNormBlock(embed_dim, ShiftMixing(embed_dim), mlp_ratio=mlp_ratio, drop_path=p)
                for p in rates
            )
        )
        self.feature_info = [
            {"num_chs": embed_dim, "reduction": patch_size, "module": f"blocks.{i}"} for i in range(depth)
        ]
        self.norm = nn.LayerNorm(embed_dim)
        self.init_head(
            embed_dim, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans
        )
        self.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles no Python checks
            if not tracing():  # nor can fx symbolic tracing run them
                check_min_size(min(x.shape[-2:]), self.stride, "input")
        return self.patch_embed(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]}
