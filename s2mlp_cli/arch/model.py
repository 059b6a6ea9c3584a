"""The timm model API every family shares (classifier, features, pruning, training helpers), and the two
skeletons: ViP's pyramid (ViP, S²-MLPv2) and one isotropic stage (S²-MLP, GFNet)."""

import torch
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from s2mlp_cli.arch.layers import Downsample, init_weights


def pyramid_steps(network: nn.ModuleList) -> list[tuple[nn.Module, bool]]:
    """`build_network`'s modules in order; a feature level ends after each stage (not a Downsample)."""
    return [(step, isinstance(step, nn.Sequential)) for step in network]


def pyramid_feature_info(network: nn.ModuleList, patch_size: int) -> list[dict]:
    info, reduction = [], patch_size
    for i, step in enumerate(network):
        if isinstance(step, Downsample):
            reduction *= step.proj.stride[0]
        else:
            info.append(
                {
                    "num_chs": step[0].norm1.normalized_shape[0],
                    "reduction": reduction,
                    "module": f"network.{i}",
                }
            )
    return info


def pyramid_group_matcher(coarse: bool) -> dict:
    """Stages (coarse) or blocks, in order: network.i.j is block j of step i; a Downsample is step i."""
    if coarse:
        return {"stem": r"^patch_embed", "blocks": [(r"^network\.(\d+)", None), (r"^norm", (99999,))]}
    return {
        "stem": r"^patch_embed",
        "blocks": [(r"^network\.(\d+)\.(\d+)", None), (r"^network\.(\d+)", None), (r"^norm", (99999,))],
    }


def run(module: nn.Module, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """module(x), through activation checkpointing when asked (never under TorchScript)."""
    if checkpointed and not torch.jit.is_scripting():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


def _pool(global_pool: str) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (none), got {global_pool!r}")
    return global_pool


class ClassifierModel(nn.Module):
    """The timm model API every family shares, after its own `forward_features` -> (B, h, w, C).

    A family builds its layers, then calls `init_head`, and implements:
    - `embed(x)`: the stem, (B, in_chans, H, W) -> (B, h, w, C) tokens;
    - `steps()`: the modules after the stem, in order, each with whether a feature level ends there;
    - `prune_after(n)`: drop the modules after the n-th step (index into `steps()`);
    - `feature_info`: per feature level, {num_chs, reduction, module}; and `group_matcher`.
    From those come `forward_intermediates` and `prune_intermediate_layers`. Features are channels-last
    (`output_fmt` "NHWC"); `forward_intermediates` returns NCHW unless asked otherwise.
    """

    output_fmt = "NHWC"

    def init_head(
        self, num_features: int, num_classes: int, *, global_pool: str, drop_rate: float, in_chans: int
    ) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.num_classes = num_classes
        self.global_pool = _pool(global_pool)
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    # --- timm's classifier API ---------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head (on the model's device and dtype), or none with num_classes=0; global_pool ''
        leaves features unpooled: forward then returns (B, h, w, C)."""
        if global_pool is not None:
            self.global_pool = _pool(global_pool)
        self.num_classes = num_classes
        if num_classes > 0:
            ref = self.norm.weight if isinstance(self.norm, nn.LayerNorm) else next(self.parameters())
            self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            init_weights(self.head)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))  # (B, h, w, C) -> (B, C)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # --- training helpers --------------------------------------------------------------------------

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay: the position embedding (timm skips norms and biases itself)."""
        return {"pos_embed"} if hasattr(self, "pos_embed") else set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise LR decay (timm's format): the stem, then stages or blocks."""
        raise NotImplementedError

    # --- features ----------------------------------------------------------------------------------

    def steps(self) -> list[tuple[nn.Module, bool]]:
        raise NotImplementedError

    def prune_after(self, n: int) -> None:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The features at each level in `indices` (default all; an int n: the last n), and the final
        normalised features unless `intermediates_only`. `norm` applies the final norm to the levels of
        its width."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        steps = self.steps()
        levels = sum(tapped for _, tapped in steps)
        take, last = feature_take_indices(levels, indices)
        intermediates = []
        level = -1
        x = self.embed(x)
        for module, tapped in steps:
            x = run(module, x, self.grad_checkpointing)
            if not tapped:
                continue
            level += 1
            if level in take:
                y = self.norm(x) if norm and x.shape[-1] == self.num_features else x
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
            if stop_early and level == last:
                break
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop every layer after the last feature level in `indices`; returns the absolute indices."""
        steps = self.steps()
        levels = sum(tapped for _, tapped in steps)
        take, last = feature_take_indices(levels, indices)
        level = -1
        for i, (_, tapped) in enumerate(steps):
            level += int(tapped)
            if tapped and level == last:
                self.prune_after(i)
                break
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


class PyramidModel(ClassifierModel):
    """ViP's skeleton (ViP and S²-MLPv2): `patch_embed`, then `network` (stages and Downsamples), `norm`.
    (No class-level annotations here or below: TorchScript would read them as attribute types.)"""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.network, x, use_reentrant=False)
        else:
            for step in self.network:
                x = step(x)
        return self.norm(x)  # (B, h', w', C')

    def steps(self) -> list[tuple[nn.Module, bool]]:
        return pyramid_steps(self.network)

    def prune_after(self, n: int) -> None:
        self.network = self.network[: n + 1]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return pyramid_group_matcher(coarse)


class IsotropicModel(ClassifierModel):
    """One stage of equal blocks (S²-MLP, GFNet): `embed`, `blocks` (a Sequential or ModuleList), `norm`;
    a feature level after each block."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x, use_reentrant=False)
        else:
            for block in self.blocks:
                x = block(x)
        return self.norm(x)

    def steps(self) -> list[tuple[nn.Module, bool]]:
        return [(block, True) for block in self.blocks]

    def prune_after(self, n: int) -> None:
        self.blocks = self.blocks[: n + 1]
