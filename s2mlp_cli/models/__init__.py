"""Model families, built from zoo cards (random init: weights are the layers above's business).

Layering: zoo (cards) -> models (this package) -> weights -> hub -> api -> cli; this package imports
nothing above it. Importing it registers every card of our own families with timm's model registry, so
`timm.create_model("s2mlpv2_small")` works after `import s2mlp_cli.models`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import sys
from typing import Any

import torch
from torch import nn

from s2mlp_cli import families
from s2mlp_cli.zoo import Card, cards, get_card, total_stride

# Arguments timm.create_model passes to every entrypoint that our constructors do not take.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def family_class(family: str) -> type[nn.Module]:
    spec = families.get(family)
    if spec.from_timm:
        raise ValueError(f"family {family} is built by timm.create_model, not by a class of ours")
    module, cls = spec.builder.split(":")
    return getattr(importlib.import_module(module), cls)


def build(family: str, **kwargs: Any) -> nn.Module:
    """Build a model of `family` from its constructor's keyword arguments; unknown ones fail loudly."""
    cls = family_class(family)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"{family}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(params)}")
    return cls(**kwargs)


FIXED_INPUT = ("vip", "gfnet", "gfnet_pyramid")  # filters / position embeddings / segment_dim fix the size


def pretrained_cfg(card: Card, img_size: int, num_classes: int, in_chans: int = 3) -> dict[str, Any]:
    """timm's pretrained cfg of the model as built: its eval transform (the card's), pooled-feature grid,
    first conv and classifier names, and whether the input size is fixed."""
    p = card.preprocess
    grid = img_size // total_stride(card)
    return {
        "architecture": card.name,
        "tag": "",
        "input_size": (in_chans, img_size, img_size),
        "fixed_input_size": card.family in FIXED_INPUT,
        "pool_size": (grid, grid),
        "crop_pct": p.crop_pct,
        "crop_mode": "center",
        "interpolation": p.interpolation,
        "mean": p.mean,
        "std": p.std,
        "num_classes": num_classes,
        "first_conv": "patch_embed.0.proj" if card.family == "gfnet_pyramid" else "patch_embed.proj",
        "classifier": "head",
        "paper_ids": card.paper.get("arxiv"),
    }


def create_model(
    name: str,
    *,
    img_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **arch: Any,
) -> nn.Module:
    """The model a card describes, randomly initialised.

    `img_size` replaces the card's input size; `arch` replaces its constructor arguments (e.g.
    `num_classes=10`); `device` / `dtype` place the result. Weights: `s2mlp_cli.create_model(...,
    pretrained=True)` or `s2mlp_cli.load_weights`.
    """
    card = get_card(name)
    for key in _TIMM_ONLY:
        arch.pop(key, None)
    size = img_size or card.preprocess.input_size
    if isinstance(size, tuple | list):  # timm passes (H, W)
        if len(set(size)) != 1:
            raise ValueError(f"{card.name} takes square inputs, got img_size {tuple(size)}")
        size = size[0]
    kwargs = {**card.arch, **arch, "img_size": size}
    if families.get(card.family).from_timm:
        import timm

        model = timm.create_model(card.name, pretrained=False, **kwargs)
    else:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = build(card.family, **kwargs)  # built in place: on "meta" it costs nothing
        model.pretrained_cfg = model.default_cfg = pretrained_cfg(
            card, size, model.num_classes, model.in_chans
        )
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


# --- timm's registry ---------------------------------------------------------------------------------


def _load_pretrained(model: nn.Module, name: str, hub_id: str | None = None) -> nn.Module:
    """timm.create_model(name, pretrained=True) reaches our entrypoint here, and weights belong to the
    layers above (resolve, verify, fetch). This is the one call upward: by name, at call time, and only
    when weights are asked for, so importing this package never imports them.

    `hub_id` ("OWNER/NAME[@REV]") is the repository of `timm.create_model("hf-hub:OWNER/NAME")`; without
    it the variant's own source is used (what `s2mlp pull` chose, else the card's)."""
    repo, _, revision = (hub_id or "").partition("@")
    importlib.import_module("s2mlp_cli.api").load_pretrained(
        model, name, repo=repo or None, revision=revision or None
    )
    return model


def _hub_id(cfg: Any) -> str | None:
    """The Hub repository timm read a config from (`hf-hub:` names), from the cfg timm passes on."""
    if cfg is None or isinstance(cfg, str):
        return None
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
    return get("hf_hub_id") if get("source") == "hf-hub" else None


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


def _register_with_timm() -> None:
    """One timm entrypoint and default cfg per card of our own families, named as the card."""
    from timm.models import register_model
    from timm.models._pretrained import PretrainedCfg
    from timm.models._registry import _model_entrypoints, generate_default_cfgs

    module = sys.modules[__name__]
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    module.default_cfgs = getattr(module, "default_cfgs", {})  # where register_model looks for cfgs
    for card in cards().values():
        if families.get(card.family).from_timm or card.name in _model_entrypoints:
            continue

        def entrypoint(pretrained: bool = False, _name: str = card.name, **kwargs: Any) -> nn.Module:
            hub_id = _hub_id(kwargs.get("pretrained_cfg"))
            wants_features = kwargs.pop("features_only", False)
            out_indices = kwargs.pop("out_indices", None)
            feature_cls = kwargs.pop("feature_cls", "getter")
            if wants_features and str(feature_cls).lower() != "getter":
                raise ValueError(f"{_name} supports features_only with feature_cls='getter' only")
            model = create_model(_name, **kwargs)
            if pretrained:
                _load_pretrained(model, _name, hub_id)
            return features_only(model, out_indices) if wants_features else model

        entrypoint.__name__ = entrypoint.__qualname__ = card.name
        entrypoint.__module__ = module.__name__
        entrypoint.__doc__ = card.description
        setattr(module, card.name, entrypoint)
        cfg = pretrained_cfg(card, card.preprocess.input_size, card.arch.get("num_classes", 1000))
        module.default_cfgs.update(
            generate_default_cfgs({card.name: {k: v for k, v in cfg.items() if k in fields}})
        )
        register_model(entrypoint)


_register_with_timm()
