"""Model families, built from zoo cards (random init: weights are the layers above's business).

Layering: zoo (cards) -> models (this package) -> weights -> hub -> api -> cli; this package imports
nothing above it. Importing it registers every card of our own families with timm's model registry, so
`timm.create_model("s2mlpv2_small")` works after `import s2mlp_cli.models`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import torch
from torch import nn

from s2mlp_cli import families
from s2mlp_cli.zoo import Card, cards, get_card

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


def pretrained_cfg(card: Card, img_size: int, num_classes: int) -> dict[str, Any]:
    """timm-style data config of the model as built, so `resolve_data_config(model=...)` sees its input."""
    p = card.preprocess
    return {
        "architecture": card.name,
        "input_size": (3, img_size, img_size),
        "crop_pct": p.crop_pct,
        "interpolation": p.interpolation,
        "mean": p.mean,
        "std": p.std,
        "num_classes": num_classes,
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
    kwargs = {**card.arch, **arch, "img_size": size}
    if families.get(card.family).from_timm:
        import timm

        model = timm.create_model(card.name, pretrained=False, **kwargs)
    else:
        model = build(card.family, **kwargs)
        model.pretrained_cfg = model.default_cfg = pretrained_cfg(card, size, model.num_classes)
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


def _register_with_timm() -> None:
    """One timm entrypoint per card of our own families, named as the card."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints

    module = sys.modules[__name__]
    for card in cards().values():
        if families.get(card.family).from_timm or card.name in _model_entrypoints:
            continue

        def entrypoint(pretrained: bool = False, _name: str = card.name, **kwargs: Any) -> nn.Module:
            hub_id = _hub_id(kwargs.get("pretrained_cfg"))
            model = create_model(_name, **kwargs)
            return _load_pretrained(model, _name, hub_id) if pretrained else model

        entrypoint.__name__ = entrypoint.__qualname__ = card.name
        entrypoint.__module__ = module.__name__
        entrypoint.__doc__ = card.description
        setattr(module, card.name, entrypoint)
        register_model(entrypoint)


_register_with_timm()
