"""Vision Permutator: A Permutable MLP-Like Architecture for Visual Recognition.

Hou, Jiang, Yuan, Cheng, Yan, Feng; arXiv 2106.12368; official code github.com/Andrew-Qibin/VisionPermutator.
Written from the paper and checked against the official code's outputs (tests/data/reference); the module
and state_dict names are the official ones, so the published checkpoints load with strict=True.

ViP's H- and W-mixing layers are Linear(C, C) over (grid side x C / segment_dim) features, so the token grid
side must equal `segment_dim` in every stage: a ViP model runs at one input size only.
"""

from collections.abc import Sequence

import torch
from timm.layers import Mlp
from torch import nn

from s2mlp_cli.arch.layers import PatchEmbed, PreNormBlock, build_network, check_stages, init_weights, tracing
from s2mlp_cli.arch.model import PyramidModel, pyramid_feature_info


class PermuteMLP(nn.Module):
    """ViP's weighted permute-MLP (`WeightedPermuteMLP` officially; named `attn` in a block)."""

    def __init__(self, dim: int, *, segment_dim: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % segment_dim:
            raise ValueError(f"embed dim {dim} is not divisible by segment_dim {segment_dim}")
        self.segment_dim = segment_dim
        self.mlp_c = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_h = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_w = nn.Linear(dim, dim, bias=qkv_bias)
        self.reweight = Mlp(dim, dim // 4, dim * 3)  # split attention: c -> c/4 -> GELU -> 3c
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        G, S = self.segment_dim, C // self.segment_dim  # G channel segments of S channels
        # H-mixing: each segment's (H, S) values become one feature vector of length H*S (= C when H == G)
        h = x.reshape(B, H, W, G, S).permute(0, 3, 2, 1, 4).reshape(B, G, W, H * S)  # -> (B, G, W, H*S)
        h = self.mlp_h(h).reshape(B, G, W, H, S).permute(0, 3, 2, 1, 4).reshape(B, H, W, C)
        # W-mixing, the same along W
        w = x.reshape(B, H, W, G, S).permute(0, 1, 3, 2, 4).reshape(B, H, G, W * S)  # -> (B, H, G, W*S)
        w = self.mlp_w(w).reshape(B, H, G, W, S).permute(0, 1, 3, 2, 4).reshape(B, H, W, C)
        c = self.mlp_c(x)
        a = (h + w + c).mean(dim=(1, 2))  # (B, H, W, C) -> (B, C)
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)  # (B, 3C) -> (3, B, C)
        a = a[:, :, None, None, :]  # (3, B, 1, 1, C)
        return self.proj(h * a[0] + w * a[1] + c * a[2])


class VisionPermutator(PyramidModel):
    def __init__(
        self,
        *,
        layers: Sequence[int],
        embed_dims: Sequence[int],
        transitions: Sequence[bool],
        segment_dim: Sequence[int],
        mlp_ratios: Sequence[float] = (3.0, 3.0, 3.0, 3.0),
        img_size: int = 224,
        patch_size: int = 7,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        skip_lam: float = 1.0,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_stages(
            layers,
            embed_dims=embed_dims,
            transitions=transitions,
            segment_dim=segment_dim,
            mlp_ratios=mlp_ratios,
        )
        # The token grid side is tied to segment_dim in each stage (see the module docstring).
        grid = img_size // patch_size
        for i in range(len(layers)):
            if grid != segment_dim[i] or img_size % patch_size:
                raise ValueError(
                    f"ViP cannot run at img_size {img_size}: stage {i} would see a {grid}x{grid} token grid "
                    "but "
                    f"its segment_dim is {segment_dim[i]} (ViP's weights fix the input size; use "
                    f"{segment_dim[0] * patch_size})"
                )
            if i < len(layers) - 1 and transitions[i]:
                grid //= 2
        self.img_size = img_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dims[0])
        self.network, _ = build_network(
            layers,
            embed_dims,
            transitions,
            lambda i, dim, dpr: PreNormBlock(  # ViP's PermutatorBlock
                dim,
                PermuteMLP(dim, segment_dim=segment_dim[i], qkv_bias=qkv_bias),
                mlp_ratio=mlp_ratios[i],
                skip_lam=skip_lam,
                drop_path=dpr,
            ),
            drop_path_rate,
        )
        self.feature_info = pyramid_feature_info(self.network, patch_size)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.init_head(
            embed_dims[-1], num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans
        )
        self.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles no Python checks
            if not tracing():  # nor can fx symbolic tracing run them
                H, W = x.shape[-2:]
                if H != self.img_size or W != self.img_size:
                    raise ValueError(
                        f"ViP runs only at the input size it was built for "
                        f"({self.img_size}x{self.img_size}), got {H}x{W}"
                    )
        return self.patch_embed(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
