"""Model size and cost: parameters and multiply-accumulates, counted the same way everywhere."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> float:
    """GMACs of one 1x3xHxW forward: torch.utils.flop_counter's FLOPs / 2 (matmuls and convs only).

    Like the papers, this leaves out elementwise work (norms, activations, softmax, the shifts).
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9
