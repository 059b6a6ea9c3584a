"""Model size and cost: parameters and multiply-accumulates, counted the same way everywhere."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> float:
    """GMACs of one 1 x C x H x W forward pass.

    Matmuls and convolutions: torch.utils.flop_counter's FLOPs / 2. Like the papers, elementwise work
    (norms, activations, softmax, the shifts) is left out. GFNet's FFTs, which the counter does not see,
    are added by each module's `fft_macs`: a real 2-D FFT over N = H*W points of C channels is counted
    as (N*C/2) * log2(N) MACs, once forward and once inverse, plus H*(W//2+1)*C for the filter product.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype)
    fft_macs = 0

    def add_fft(module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        nonlocal fft_macs
        fft_macs += module.fft_macs(args[0])

    hooks = [m.register_forward_hook(add_fft) for m in model.modules() if hasattr(m, "fft_macs")]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return (counter.get_total_flops() / 2 + fft_macs) / 1e9
