"""Models with weights: what `s2mlp_cli.create_model(..., pretrained=True)` and timm's `pretrained=True`
do, through the one resolver (`hub.resolve`) that eval, bench and pull use too.

Layer: zoo -> models -> weights -> hub -> api (here; with evaluate and bench) -> cli.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2mlp_cli import hub, models
from s2mlp_cli.weights import load_weights
from s2mlp_cli.zoo import get_card


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    img_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **arch: Any,
) -> nn.Module:
    """A zoo model by card name or alias; with `pretrained=True`, its verified weights loaded strictly.

    Weights come from `weights` (a file), else `repo` / `revision` / `filename` (a Hub file), else the
    source last pulled or imported for the variant, else the card's. `arch` replaces constructor
    arguments (e.g. `num_classes=10`), `img_size` the input size; `device` / `dtype` place the model.
    """
    given = {"weights": weights, "repo": repo, "revision": revision, "filename": filename}
    if any(given.values()) and not pretrained:
        raise TypeError(f"{', '.join(k for k, v in given.items() if v)} only apply with pretrained=True")
    model = models.create_model(name, img_size=img_size, **arch)
    if pretrained:
        load_pretrained(model, name, **given)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def load_pretrained(
    model: nn.Module,
    name: str,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    *,
    progress: bool = True,
) -> hub.Pulled:
    """Resolve the variant's weights and load them into `model` strictly; returns where they came from."""
    pulled = hub.resolve(
        get_card(name), weights, repo, revision, filename, progress=progress, check_fit=False
    )
    load_weights(model, pulled.path)  # strict: this is the fit check
    return pulled
