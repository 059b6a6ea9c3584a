"""The layers our families share: patch stem, channels-last downsampling, the spatial shifts, one pre-norm
block, the stage builder of ViP's pyramid, and ViP's init.

ViP (Hou et al., "Vision Permutator", arXiv 2106.12368, github.com/Andrew-Qibin/VisionPermutator)
defines the pyramid skeleton; S²-MLPv2 reuses it exactly. The shifts are S²-MLP's and S²-MLPv2's
(Yu et al., arXiv 2106.07477 and 2108.01072). Mlp, DropPath and trunc-normal init come from timm.layers.
"""

from collections.abc import Callable, Sequence

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.fx import _symbolic_trace

# is_fx_symbolic_tracing (torch >= 2.6) is quiet; is_fx_tracing, its older name, warns on newer torch
_is_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)


def tracing() -> bool:
    """True under torch.fx symbolic tracing, where Python checks on tensor shapes cannot run."""
    return _is_tracing()


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


# --- the spatial shifts (S²-MLP, S²-MLPv2) ---------------------------------------------------------------


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


# --- one pre-norm block ------------------------------------------------------------------------------


class PreNormBlock(nn.Module):
    """x + DropPath(mixer(LN(x))) / skip_lam, then x + DropPath(ChannelMLP(LN(x))) / skip_lam.

    The block of S²-MLP, S²-MLPv2 and ViP; the token mixer is named `attn` as in ViP's checkpoints.
    `skip_lam` is ViP's residual scale (1 elsewhere: then no division is made)."""

    def __init__(
        self, dim: int, mixer: nn.Module, *, mlp_ratio: float, drop_path: float = 0.0, skip_lam: float = 1.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_lam = skip_lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop_path(self.attn(self.norm1(x)))
        x = x + (y if self.skip_lam == 1.0 else y / self.skip_lam)
        y = self.drop_path(self.mlp(self.norm2(x)))
        return x + (y if self.skip_lam == 1.0 else y / self.skip_lam)


# --- stages --------------------------------------------------------------------------------------------


def check_stages(layers: Sequence[int], **per_stage: Sequence) -> None:
    """Every per-stage list must have one entry per stage: a clear error instead of an IndexError."""
    if not layers or any(int(n) < 1 for n in layers):
        raise ValueError(f"layers must list at least one stage of >= 1 block, got {list(layers)}")
    for name, values in per_stage.items():
        if len(values) != len(layers):
            raise ValueError(f"{name} has {len(values)} entries but layers has {len(layers)} stages")


def check_min_size(size: int, stride: int, what: str = "img_size") -> None:
    if size < stride:
        raise ValueError(f"{what} {size} is smaller than the model's total stride {stride}")


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
