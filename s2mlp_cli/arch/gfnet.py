"""Global Filter Networks for Image Classification.

Rao, Zhao, Zhu, Lu, Zhou; NeurIPS 2021, arXiv 2107.00645; official code github.com/raoyongming/GFNet.
Written from the paper and checked against the official code's outputs (tests/data/reference); the module
and state_dict names are the official ones, so the published checkpoints load with strict=True.

Tokens are kept channels-last on their grid, (B, h, w, C), throughout; the official code flattens them to
(B, N, C), which gives the same numbers for every op used here. The input size is fixed by the filters'
and position embedding's shapes; `checkpoint_filter_fn` resizes both, as the official fine-tuning script
does, so a model built at another `img_size` loads the 224 checkpoints.
"""

import math
from collections.abc import Sequence

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from s2mlp_cli.arch.layers import Downsample, PatchEmbed, check_stages, drop_path_rates, init_weights, tracing
from s2mlp_cli.arch.model import ClassifierModel, IsotropicModel


class GlobalFilter(nn.Module):
    """Learned filter in the frequency domain: irfft2(rfft2(x) * K), orthonormal, computed in float32."""

    def __init__(self, dim: int, *, h: int, w: int) -> None:
        super().__init__()
        # (h, w//2 + 1, C, 2): real and imaginary parts of a filter over the rfft2 half-spectrum
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, dim, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W, dtype = x.shape[1], x.shape[2], x.dtype
        y = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")  # (B, H, W, C) -> (B, H, W//2+1, C) complex
        # contiguous: `model.to(memory_format=torch.channels_last)` restrides this 4-D parameter, and
        # view_as_complex needs the (real, imag) pair adjacent; float32: cuFFT in half precision takes
        # power-of-two sizes only (14, 28, 56, 7 are not), so the transform always runs in float32
        y = y * torch.view_as_complex(self.complex_weight.float().contiguous())
        y = torch.fft.irfft2(y, s=(H, W), dim=(1, 2), norm="ortho")  # -> (B, H, W, C) float32
        return y.to(dtype)  # back to the model's dtype (bf16/fp16 casts), after the float32 transform

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
    """The input-size check and the head shared by both GFNet layouts."""

    img_size: int

    def check_size(self, x: torch.Tensor) -> None:
        H, W = x.shape[-2:]
        if H != self.img_size or W != self.img_size:
            raise ValueError(
                f"this GFNet was built for {self.img_size}x{self.img_size} input, got {H}x{W}; build it with "
                f"img_size={max(H, W)} (its filters and position embedding are resized when weights load)"
            )


class GFNet(_GFNetBase, IsotropicModel):
    """The isotropic GFNet: patch embedding, position embedding, `depth` global-filter blocks."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
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
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)  # the official code's use of drop_rate: here and in each MLP
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, grid=grid, mlp_ratio=mlp_ratio, norm_eps=norm_eps, drop_rate=drop_rate, drop_path=p
            )
            for p in dpr
        )
        self.feature_info = [
            {"num_chs": embed_dim, "reduction": patch_size, "module": f"blocks.{i}"} for i in range(depth)
        ]
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.init_head(embed_dim, num_classes, global_pool=global_pool, drop_rate=0.0, in_chans=in_chans)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles no Python checks
            if not tracing():  # nor can fx symbolic tracing run them
                self.check_size(x)
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
        return self.pos_drop(
            x + self.pos_embed.view(1, self.grid, self.grid, -1)
        )  # (1, N, C) -> (1, h, w, C)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {
            "stem": r"^patch_embed|^pos_embed",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }


class GFNetPyramid(_GFNetBase):
    """GFNet-H: a 4x4 patch stem, then stages joined by 2x2 downsampling; pos_embed on stage 1 only."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
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
        grids = [img_size // patch_size]
        for _ in depth[1:]:
            grids.append(grids[-1] // 2)
        self.grid = grids[0]
        # patch_embed[0] is the stem, patch_embed[i] the downsampling into stage i (the official names)
        self.patch_embed = nn.ModuleList(
            [PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim[0])]
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
        self.feature_info = [
            {"num_chs": embed_dim[i], "reduction": patch_size * 2**i, "module": f"blocks.{i}"}
            for i in range(len(depth))
        ]
        self.norm = nn.LayerNorm(embed_dim[-1], eps=norm_eps)
        self.init_head(embed_dim[-1], num_classes, global_pool=global_pool, drop_rate=0.0, in_chans=in_chans)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles no Python checks
            if not tracing():  # nor can fx symbolic tracing run them
                self.check_size(x)
        x = self.patch_embed[0](x).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
        return self.pos_drop(x + self.pos_embed.view(1, self.grid, self.grid, -1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for i, (down, stage) in enumerate(zip(self.patch_embed, self.blocks)):  # noqa: B905 (TorchScript)
            if i > 0:
                x = down(x)  # channels-last 2x2 downsampling
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return self.norm(x)

    def steps(self) -> list[tuple[nn.Module, bool]]:
        steps: list[tuple[nn.Module, bool]] = []
        for i, stage in enumerate(self.blocks):
            if i > 0:
                steps.append((self.patch_embed[i], False))
            steps.append((stage, True))
        return steps

    def prune_after(self, n: int) -> None:
        stages = (n + 2) // 2  # steps: stage 0, then (downsample, stage) pairs
        self.blocks = self.blocks[:stages]
        self.patch_embed = self.patch_embed[:stages]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        stage = r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)"
        return {
            "stem": r"^patch_embed\.0|^pos_embed",
            "blocks": [(stage, None), (r"^patch_embed\.(\d+)", None), (r"^norm", (99999,))],
        }


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
            if 0 in value.shape or (key == "pos_embed" and math.isqrt(value.shape[1]) ** 2 != value.shape[1]):
                raise ValueError(f"{key} has shape {tuple(value.shape)}: no grid to resize to the model's")
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
