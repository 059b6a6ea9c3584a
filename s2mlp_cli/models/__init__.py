"""Model families, built from zoo cards.

Importing this package registers every card of our own families with timm's model registry, so
`timm.create_model("s2mlpv2_small")` works after `import s2mlp_cli.models`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from torch import nn

from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.zoo import Card, cards, get_card

# family -> "module:class"; each constructor takes keyword-only arguments named as in the official code.
_FAMILIES = {
    "s2mlpv2": "s2mlp_cli.models.s2mlpv2:S2MLPv2",
    "s2mlp": "s2mlp_cli.models.s2mlp:S2MLP",
    "vip": "s2mlp_cli.models.vip:VisionPermutator",
    "gfnet": "s2mlp_cli.models.gfnet:GFNet",
    "gfnet_pyramid": "s2mlp_cli.models.gfnet:GFNetPyramid",
}

# Arguments timm.create_model passes to every entrypoint that our constructors do not take.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def family_class(family: str) -> type[nn.Module]:
    if family not in _FAMILIES:
        raise S2MLPError(f"unknown model family {family!r}; known: {', '.join(_FAMILIES)}")
    module, cls = _FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), cls)


def build(family: str, **kwargs: Any) -> nn.Module:
    """Build a model of `family` from its constructor's keyword arguments; unknown ones fail loudly."""
    cls = family_class(family)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"{family}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(params)}")
    return cls(**kwargs)


def pretrained_cfg(card: Card) -> dict[str, Any]:
    """timm-style data config, so timm's `resolve_data_config(model=...)` sees the card's preprocessing."""
    p = card.preprocess
    return {
        "architecture": card.name,
        "input_size": (3, p.input_size, p.input_size),
        "crop_pct": p.crop_pct,
        "interpolation": p.interpolation,
        "mean": p.mean,
        "std": p.std,
        "num_classes": card.arch.get("num_classes", 1000),
    }


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build the model a card describes, with `overrides` replacing the card's constructor arguments.

    With `pretrained=True` the weights come through `s2mlp_cli.hub.pull` (verified, cached; `repo=`,
    `revision=` and `filename=` name another Hub file) and are loaded strictly.
    """
    card = get_card(name)
    for key in _TIMM_ONLY:
        overrides.pop(key, None)
    device, dtype = overrides.pop("device", None), overrides.pop("dtype", None)
    source = {k: overrides.pop(k, None) for k in ("repo", "revision", "filename")}
    if any(source.values()) and not pretrained:
        raise TypeError(f"{', '.join(k for k, v in source.items() if v)} only apply with pretrained=True")
    if card.family == "timm":
        import timm

        model = timm.create_model(card.name, pretrained=False, **{**card.arch, **overrides})
    else:
        model = build(card.family, **{**card.arch, **overrides})
        model.pretrained_cfg = model.default_cfg = pretrained_cfg(card)
    if pretrained:
        from s2mlp_cli.hub import pull
        from s2mlp_cli.weights import load_weights

        load_weights(model, pull(card, **source, check_fit=False).path)  # the load is the strict check
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _register_with_timm() -> None:
    """One timm entrypoint per card of our own families, named as the card."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints

    module = sys.modules[__name__]
    for card in cards().values():
        if card.family == "timm" or card.name in _model_entrypoints:
            continue

        def entrypoint(pretrained: bool = False, _name: str = card.name, **kwargs: Any) -> nn.Module:
            return create_model(_name, pretrained=pretrained, **kwargs)

        entrypoint.__name__ = entrypoint.__qualname__ = card.name
        entrypoint.__module__ = module.__name__
        entrypoint.__doc__ = card.description
        setattr(module, card.name, entrypoint)
        register_model(entrypoint)


_register_with_timm()
