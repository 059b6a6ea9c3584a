"""From a zoo card to a randomly initialised net with timm's pretrained_cfg (weights are `s2mlp_cli.api`'s
business). Our families map here to their classes and checkpoint filters; timm's are built by timm."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from s2mlp_cli import families
from s2mlp_cli.arch import gfnet, s2mlp, s2mlpv2, vip
from s2mlp_cli.zoo import Card

CLASSES: dict[str, type[nn.Module]] = {
    "s2mlpv2": s2mlpv2.S2MLPv2,
    "s2mlp": s2mlp.S2MLP,
    "vip": vip.VisionPermutator,
    "gfnet": gfnet.GFNet,
    "gfnet_pyramid": gfnet.GFNetPyramid,
}
# state dict -> state dict for the model, where a family's checkpoints need converting (GFNet resizes)
FILTERS: dict[type[nn.Module], Callable[[dict, nn.Module], dict]] = {
    gfnet.GFNet: gfnet.checkpoint_filter_fn,
    gfnet.GFNetPyramid: gfnet.checkpoint_filter_fn,
}
if set(CLASSES) != {f.name for f in families.FAMILIES.values() if not f.from_timm}:  # a family added half
    raise RuntimeError("arch.CLASSES and families.FAMILIES name different families of ours")

# Arguments timm.create_model passes to every entrypoint that our constructors do not take.
TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def family_class(family: str) -> type[nn.Module]:
    if families.get(family).from_timm:
        raise ValueError(f"family {family} is built by timm.create_model, not by a class of ours")
    return CLASSES[family]


def build(family: str, **kwargs: Any) -> nn.Module:
    """Build a model of `family` from its constructor's keyword arguments; unknown ones fail loudly."""
    cls = family_class(family)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"{family}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(params)}")
    return cls(**kwargs)


def checkpoint_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """The family's checkpoint filter for `model`, where it needs one. timm's own filters convert foreign
    formats and are not applied to files meant for timm's layout."""
    return FILTERS.get(type(model))


def pretrained_cfg(card: Card, img_size: int, num_classes: int, in_chans: int = 3) -> dict[str, Any]:
    """timm's pretrained cfg of the model as built: its eval transform (the card's), pooled-feature grid,
    first conv and classifier names, and whether the input size is fixed."""
    p, family = card.preprocess, card.family_facts
    grid = img_size // card.stride
    return {
        "architecture": card.name,
        "tag": "",
        "input_size": (in_chans, img_size, img_size),
        "fixed_input_size": family.fixed_input,
        "pool_size": (grid, grid),
        "crop_pct": p.crop_pct,
        "crop_mode": "center",
        "interpolation": p.interpolation,
        "mean": p.mean,
        "std": p.std,
        "num_classes": num_classes,
        "first_conv": family.first_conv,
        "classifier": "head",
        "paper_ids": card.paper.get("arxiv"),
    }


def create(
    card: Card,
    *,
    img_size: int | tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **arch: Any,
) -> nn.Module:
    """The model `card` describes, randomly initialised.

    `img_size` replaces the card's input size; `arch` replaces its constructor arguments (e.g.
    `num_classes=10`); `device` / `dtype` place the result (on "meta" a model costs nothing).
    """
    for key in TIMM_ONLY:
        arch.pop(key, None)
    size = img_size or card.preprocess.input_size
    if isinstance(size, tuple | list):  # timm passes (H, W)
        if len(set(size)) != 1:
            raise ValueError(f"{card.name} takes square inputs, got img_size {tuple(size)}")
        size = size[0]
    kwargs = {**card.arch, **arch, "img_size": size}
    if card.family_facts.from_timm:
        import timm

        model = timm.create_model(card.name, pretrained=False, **kwargs)
    else:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = build(card.family, **kwargs)  # built in place
        model.pretrained_cfg = model.default_cfg = pretrained_cfg(
            card, size, model.num_classes, model.in_chans
        )
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def features_only(model: nn.Module, out_indices: int | list[int] | None = None) -> nn.Module:
    """timm's `features_only=True`: the model wrapped in timm's FeatureGetterNet, which calls its
    `forward_intermediates` and returns NCHW feature maps (default: every stage of a pyramid, the last
    3 blocks of an isotropic model). The layers after the last level asked for are pruned."""
    from timm.models._features import FeatureGetterNet

    if out_indices is None:
        reductions = {info["reduction"] for info in model.feature_info}
        out_indices = 3 if len(reductions) == 1 else len(model.feature_info)
    cfg = model.pretrained_cfg
    in_chans = model.in_chans
    wrapped = FeatureGetterNet(model, out_indices=out_indices, output_fmt="NCHW")
    wrapped.pretrained_cfg = wrapped.default_cfg = {
        k: v for k, v in cfg.items() if k not in ("classifier", "pool_size")
    }
    wrapped.in_chans = in_chans
    return wrapped
