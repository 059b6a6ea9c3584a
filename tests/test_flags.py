"""Every family under the flags the CLI offers (channels-last, bf16 autocast), forward and backward, on
tiny configs; and GFNet's transform pinned to float32 whatever the model's dtype."""

from __future__ import annotations

import pytest
import torch

from s2mlp_cli.arch import build

TINY = {
    "s2mlpv2": {"layers": [1, 1, 1, 1], "embed_dims": [16, 16, 32, 32], "mlp_ratios": [1, 1, 1, 1],
                "transitions": [False, True, False, False], "num_classes": 10, "img_size": 56},
    "s2mlp": {"embed_dim": 32, "depth": 2, "patch_size": 8, "num_classes": 10, "img_size": 64},
    "vip": {"layers": [1, 2, 1, 1], "img_size": 56, "patch_size": 7, "num_classes": 10,
            "embed_dims": [32, 64, 64, 64], "transitions": [True, False, False, False],
            "segment_dim": [8, 4, 4, 4], "mlp_ratios": [3, 3, 3, 3]},
    "gfnet": {"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_classes": 10},
    "gfnet_pyramid": {"img_size": 64, "patch_size": 4, "embed_dim": [16, 32, 64, 128], "depth": [1, 2, 1, 1],
                      "num_classes": 10},
}  # fmt: skip


def _model(family: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = build(family, **TINY[family])
    size = TINY[family]["img_size"]
    return model, torch.randn(2, 3, size, size)


@pytest.mark.parametrize("family", sorted(TINY))
def test_channels_last_gives_the_contiguous_models_numbers(family: str) -> None:
    model, x = _model(family)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("family", sorted(TINY))
def test_bf16_autocast_trains_every_family(family: str, channels_last: bool) -> None:
    model, x = _model(family)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("family", ["gfnet", "gfnet_pyramid"])
def test_gfnet_transforms_in_float32_whatever_the_dtype(family: str, monkeypatch) -> None:
    """cuFFT in half precision takes power-of-two sizes only: the filter's rfft2/irfft2 must see float32
    in a bf16 model and under autocast, and hand back the model's dtype."""
    seen = []
    real = torch.fft.rfft2

    def rfft2(x, *args, **kwargs):
        seen.append(x.dtype)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft2", rfft2)
    model, x = _model(family)
    with torch.no_grad():
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.float()(x)
    assert out.dtype == torch.bfloat16 and seen and set(seen) == {torch.float32}


@pytest.mark.slow  # dynamo traces each family
@pytest.mark.parametrize("family", sorted(TINY))
def test_every_family_compiles_as_one_graph(family: str) -> None:
    """torch.compile(fullgraph=True): a graph break anywhere (a Python check on a shape, a data-dependent
    branch) fails here. The aot_eager backend traces forward and backward as inductor would, without its
    code generation (the GPU check compiles with inductor)."""
    import torch._dynamo

    torch._dynamo.reset()
    model, x = _model(family)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
