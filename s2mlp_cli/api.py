"""The one place that reads a weights file into a model: `load_weights`, the fit check of a file against a
variant (`check_fits`, `suggest_variants`), verified weights for a variant (`pull`, `import_file`,
`load_pretrained`) and `create_model(pretrained=...)`.

Below: `arch` builds nets, `weights` reads checkpoint files, `sources` hands back verified paths. Above:
`models` (timm's face), the jobs (`evaluate`, `bench`, `publish`, `pull`) and the CLI.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2mlp_cli import arch, sources
from s2mlp_cli.classes import of_file
from s2mlp_cli.errors import WeightsError
from s2mlp_cli.sources.store import check_import_source, commit_import
from s2mlp_cli.weights import HEAD, fit_state_dict, read_state_dict, save_safetensors
from s2mlp_cli.zoo import Card, cards, get_card


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
    **arch_args: Any,
) -> nn.Module:
    """A zoo model by card name or alias; with `pretrained=True`, its verified weights loaded strictly.

    Weights come from `weights` (a file), else `repo` / `revision` / `filename` (a Hub file), else the
    source last pulled or imported for the variant, else the card's. `arch_args` replace constructor
    arguments (e.g. `num_classes=10`), `img_size` the input size; `device` / `dtype` place the model.
    """
    given = {"weights": weights, "repo": repo, "revision": revision, "filename": filename}
    if any(given.values()) and not pretrained:
        raise TypeError(f"{', '.join(k for k, v in given.items() if v)} only apply with pretrained=True")
    card = get_card(name)
    model = arch.create(card, img_size=img_size, **arch_args)
    if pretrained:
        load_pretrained(model, card, **given)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def load_weights(model: nn.Module, path: str | Path, *, reset_head: bool = False) -> nn.Module:
    """Load a .safetensors or official .pth / .pth.tar checkpoint into `model` strictly; returns the model.

    With `reset_head=True`, a classifier whose shape differs from the checkpoint's (another num_classes)
    keeps the model's own fresh head; everything else must still match exactly.
    """
    state_dict = fit(model, read_state_dict(path), Path(path).name, reset_head=reset_head)
    model.load_state_dict(state_dict, strict=True)
    return model


def fit(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, *, reset_head: bool = False
) -> dict[str, torch.Tensor]:
    """`state_dict` converted for `model` with its family's filter, or a WeightsError naming the misfit and
    the variants the tensors would fit."""
    try:
        return fit_state_dict(
            model,
            state_dict,
            source,
            reset_head=reset_head,
            filter_fn=arch.checkpoint_filter(model),
            suggest=suggest_variants,
        )
    except ValueError as e:  # a family filter that cannot convert these tensors
        raise WeightsError(f"{source} does not fit: {e}") from None


def suggest_variants(state_dict: dict[str, torch.Tensor], exclude: str | None = None) -> list[str]:
    """Zoo variants whose keys and shapes (head aside) match this state dict; built on the meta device."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if not HEAD.match(k)}
    fits = []
    for card in cards().values():
        if card.name == exclude or card.family_facts.from_timm:
            continue
        try:
            model = arch.create(card, device="meta")
        except Exception:  # a card that cannot be built here suggests nothing
            continue
        theirs = {k: tuple(v.shape) for k, v in model.state_dict().items() if not HEAD.match(k)}
        if theirs == shapes:
            fits.append(card.name)
    return fits


def check_fits(
    card: Card, path: str | Path, what: str, num_classes: int | None = None
) -> dict[str, torch.Tensor]:
    """The file's state dict, fitted to the variant strictly (keys and shapes); `num_classes` for weights
    trained on other classes than the card's. The variant is built on the meta device, so the check costs
    no memory beyond the file's tensors."""
    head = {} if num_classes is None else {"num_classes": num_classes}
    return fit(arch.create(card, device="meta", **head), read_state_dict(path), what)


def build_for(card: Card, pulled: sources.Pulled, classes: list[str] | None, img_size: int) -> nn.Module:
    """The variant at `img_size` with a verified weights file loaded strictly, as eval and predict run
    it: weights trained on a run's own `classes` (their metadata names them) get their head."""
    head = {"num_classes": len(classes)} if classes else {}
    model = arch.create(card, img_size=img_size, **head)
    load_weights(model, pulled.path)  # strict: the fit check
    return model


def load_pretrained(
    model: nn.Module,
    card: Card,
    weights: str | Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    *,
    progress: bool = True,
) -> sources.Pulled:
    """Resolve the variant's weights and load them into `model` strictly; returns where they came from."""
    pulled = sources.resolve(card, weights, repo, revision, filename, progress=progress)
    load_weights(model, pulled.path)  # strict: this is the fit check
    return pulled


def pull(
    card: Card,
    repo: str | None = None,
    revision: str | None = None,
    filename: str | None = None,
    *,
    weights: str | Path | None = None,
    refresh: bool = False,
    progress: bool = True,
) -> sources.Pulled:
    """A variant's verified weights, checked to fit it strictly; a Hub source the caller named is
    remembered as the variant's source from then on (what `s2mlp pull` does)."""
    pulled = sources.resolve(card, weights, repo, revision, filename, refresh=refresh, progress=progress)
    own = of_file(pulled.path)  # weights of a run's own classes fit the variant with their own head
    check_fits(card, pulled.path, pulled.source, None if own is None else len(own))
    if weights is None and pulled.origin == "given":
        sources.remember(card, sources.hub_source(card, repo, revision, filename))
    return replace(pulled, verified="strict load") if weights is not None else pulled


def import_file(card: Card, source: str | Path, sha256: str | None = None) -> sources.Pulled:
    """Check a checkpoint the user downloaded by hand, convert it to safetensors in our store, record it.

    The file is read safely (`weights.read_state_dict`), must hash to `sha256` (or the card's pin for a
    variant without a Hub repo) when one is given, and must load strictly into the variant.
    """
    source = Path(source).expanduser()
    source_sha, against = check_import_source(card, source, sha256)
    state_dict = check_fits(card, source, source.name)
    # own storage for every tensor: safetensors refuses shared or strided ones
    state_dict = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    return commit_import(
        card,
        source,
        source_sha,
        against,
        lambda path: save_safetensors(path, state_dict, {"format": "pt"}),
    )
