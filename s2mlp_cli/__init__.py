"""s2mlp: the S²-MLPv2 model zoo and command-line tool.

Importing this package is cheap (no torch); `create_model` and `load_weights` import torch when called.
The package is layered, each layer importing only those below it: the one map of the layers is LAYERS
in tests/test_library.py, which enforces it (docs/development.md describes the rooms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.version import __version__

if TYPE_CHECKING:
    import torch

__all__ = ["S2MLPError", "__version__", "create_model", "load_weights"]


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Build a zoo model by card name or alias (`small`, `s2mlpv2_medium`, `vip_s7`, ...).

    Keyword arguments: `weights=`, `repo=`, `revision=`, `filename=` (with `pretrained=True`: where the
    weights come from), `img_size=`, `device=`, `dtype=`, and constructor arguments that replace the
    card's (e.g. `num_classes=10`). See `s2mlp_cli.api.create_model`.
    """
    from s2mlp_cli.api import create_model as _create_model

    return _create_model(name, pretrained, **kwargs)


def load_weights(model: torch.nn.Module, path: str, *, reset_head: bool = False) -> torch.nn.Module:
    """Load a .safetensors or official .pth / .pth.tar checkpoint into `model`, strictly and safely.

    `reset_head=True` keeps the model's own classifier when the checkpoint has another number of classes.
    """
    from s2mlp_cli.api import load_weights as _load_weights

    return _load_weights(model, path, reset_head=reset_head)
