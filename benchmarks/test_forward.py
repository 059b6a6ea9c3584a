"""pytest-benchmark suites on the CPU: one forward pass per family, and the spatial-shift op.

    pytest benchmarks --benchmark-only                 # timings (min / median / IQR over rounds)
    pytest benchmarks --benchmark-only --benchmark-compare   # against a saved run (--benchmark-autosave)

CI runs them once with --benchmark-disable, as a check that they still work. `s2mlp bench` is the tool
for numbers to quote (isolated processes, memory, latency percentiles); these are for catching
regressions in our own code between commits.
"""

from __future__ import annotations

import pytest
import torch

from s2mlp_cli.api import create_model
from s2mlp_cli.arch import spatial_shift1, spatial_shift2
from s2mlp_cli.arch.s2mlpv2 import S2Attention

# one representative per family, at the S²-MLPv2-S scale where the family has one
MODELS = ["s2mlpv2_small", "vip_s7", "gfnet_s", "gfnet_h_s", "s2mlp_deep", "mixer_s16_224"]


@pytest.fixture(autouse=True)
def _threads():
    torch.manual_seed(0)
    yield


@pytest.mark.parametrize("name", MODELS)
def test_forward_batch1(benchmark, name: str) -> None:
    model = create_model(name).eval()
    x = torch.randn(1, 3, 224, 224)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    out = benchmark(run)
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("shift", [spatial_shift1, spatial_shift2], ids=["shift1", "shift2"])
def test_spatial_shift(benchmark, shift) -> None:
    x = torch.randn(8, 32, 32, 192)  # (B, H, W, C): stage 1 of S²-MLPv2-S at batch 8
    out = benchmark(shift, x)
    assert out.shape == x.shape


def test_split_attention_block(benchmark) -> None:
    attn = S2Attention(192).eval()
    x = torch.randn(8, 32, 32, 192)
    with torch.inference_mode():
        out = benchmark(attn, x)
    assert out.shape == x.shape
