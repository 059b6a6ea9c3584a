"""S²-MLPv2: sizes, names, token mixer equations, any-resolution, training, determinism, timm registry."""

from __future__ import annotations

import re

import pytest
import timm
import torch
from torch import nn
from torch.nn import functional as F

import s2mlp_cli
from s2mlp_cli.api import create_model
from s2mlp_cli.arch import build, spatial_shift1, spatial_shift2
from s2mlp_cli.arch.layers import Downsample
from s2mlp_cli.arch.s2mlpv2 import S2Attention
from s2mlp_cli.bench.stats import count_gmacs, count_params
from s2mlp_cli.errors import S2MLPError, WeightsUnavailableError

TINY = dict(
    layers=(1, 1, 1, 1),
    embed_dims=(16, 32, 32, 32),
    transitions=(True, False, False, False),
    num_classes=5,
    img_size=28,
)

# The paper's sizes for a model built exactly as described (architecture-facts.md).
PAPER = {"s2mlpv2_small": (25.13e6, 6.90), "s2mlpv2_medium": (55.30e6, 16.28)}


@pytest.mark.parametrize("name", list(PAPER))
def test_params_and_gmacs_match_paper(name: str) -> None:
    model = create_model(name)
    params, gmacs = PAPER[name]
    assert count_params(model) == pytest.approx(params, rel=0.005)
    assert count_gmacs(model, 224) == pytest.approx(gmacs, rel=0.02)


def test_network_layout_follows_vip() -> None:
    small = create_model("small")
    kinds = [(type(m).__name__, len(m) if isinstance(m, nn.Sequential) else None) for m in small.network]
    assert kinds == [
        ("Sequential", 4),
        ("Downsample", None),
        ("Sequential", 3),
        ("Sequential", 8),
        ("Sequential", 3),
    ]
    assert small.network[1].proj.kernel_size == (2, 2)
    medium = create_model("medium")
    kinds = [(type(m).__name__, len(m) if isinstance(m, nn.Sequential) else None) for m in medium.network]
    assert kinds == [
        ("Sequential", 4),
        ("Sequential", 3),
        ("Downsample", None),
        ("Sequential", 14),
        ("Sequential", 3),
    ]
    assert medium.patch_embed.proj.kernel_size == (7, 7) and medium.patch_embed.proj.out_channels == 256


def test_state_dict_names_mirror_vip() -> None:
    keys = create_model("small").state_dict().keys()
    block = (
        r"network\.\d+\.\d+\.(norm1|norm2|attn\.mlp1|attn\.reweight\.fc1|attn\.reweight\.fc2|attn\.mlp2"
        r"|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    )
    allowed = re.compile(rf"^(patch_embed\.proj|network\.1\.proj|norm|head)\.(weight|bias)$|^{block}$")
    assert [k for k in keys if not allowed.match(k)] == []
    assert "network.0.0.attn.mlp1.weight" in keys and "network.4.2.mlp.fc2.bias" in keys
    sd = create_model("small").state_dict()
    assert sd["network.0.0.attn.mlp1.weight"].shape == (576, 192)
    assert sd["network.0.0.attn.reweight.fc1.weight"].shape == (48, 192)
    assert sd["network.0.0.attn.reweight.fc2.weight"].shape == (576, 48)
    assert sd["network.0.0.attn.mlp2.weight"].shape == (192, 192)
    assert sd["network.0.0.mlp.fc1.weight"].shape == (576, 192)


def test_token_mixer_follows_the_paper_equations() -> None:
    torch.manual_seed(0)
    mixer = S2Attention(8).eval()
    x = torch.randn(2, 3, 5, 8)
    with torch.no_grad():
        got = mixer(x)
        # restated from the paper: mlp1, split in 3, shift 2 of them, split attention, weighted sum, mlp2
        y = x @ mixer.mlp1.weight.T + mixer.mlp1.bias
        b1, b2, b3 = spatial_shift1(y[..., :8]), spatial_shift2(y[..., 8:16]), y[..., 16:]
        a = (b1 + b2 + b3).mean(dim=(1, 2))
        hidden = F.gelu(a @ mixer.reweight.fc1.weight.T + mixer.reweight.fc1.bias)
        logits = (hidden @ mixer.reweight.fc2.weight.T + mixer.reweight.fc2.bias).view(2, 8, 3)
        w = logits.softmax(dim=-1)  # over the 3 branches, channel c's logits at 3c, 3c+1, 3c+2
        mixed = b1 * w[:, None, None, :, 0] + b2 * w[:, None, None, :, 1] + b3 * w[:, None, None, :, 2]
        expected = mixed @ mixer.mlp2.weight.T + mixer.mlp2.bias
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_drop_path_ramps_linearly_over_all_blocks() -> None:
    model = create_model("small")
    blocks = [b for stage in model.network if isinstance(stage, nn.Sequential) for b in stage]
    assert len(blocks) == 18
    assert isinstance(blocks[0].drop_path, nn.Identity)
    rates = [b.drop_path.drop_prob for b in blocks[1:]]
    assert rates == pytest.approx([0.1 * i / 17 for i in range(1, 18)])


def test_any_size_of_at_least_the_stride() -> None:
    model = build("s2mlpv2", **TINY).eval()
    for size in (28, 42, 70, 96):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 5)
    assert model(torch.randn(2, 3, 28, 56)).shape == (2, 5)
    # a size the stride does not divide loses its last pixels, as the strided convolutions do
    x = torch.randn(1, 3, 33, 30)
    with torch.no_grad():
        assert torch.equal(model(x), model(x[..., :28, :28].contiguous()))
    with pytest.raises(ValueError, match="input 10 is smaller than the model's total stride 14"):
        model(torch.randn(1, 3, 10, 30))


@pytest.mark.slow
def test_full_model_at_280() -> None:
    model = create_model("small").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 280, 280)).shape == (1, 1000)


def test_forward_contract() -> None:
    model = build("s2mlpv2", **TINY).eval()
    x = torch.randn(2, 3, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (2, 2, 2, 32)  # (B, h, w, C) after the final norm
    assert model.forward_head(feats, pre_logits=True).shape == (2, 32)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.num_features == 32 and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, 32)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7


def test_eval_is_deterministic() -> None:
    model = build("s2mlpv2", **{**TINY, "drop_path_rate": 0.5}).eval()
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = build("s2mlpv2", **{**TINY, "drop_path_rate": 0.1}).train()
    x, y = torch.randn(8, 3, 28, 28), torch.randint(0, 5, (8,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]


def test_init_follows_vip() -> None:
    model = build("s2mlpv2", **TINY)
    lin = model.network[0][0].attn.mlp1
    assert torch.all(lin.bias == 0)
    assert 0.015 < lin.weight.std().item() < 0.025
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="transitions has 3 entries"):
        build("s2mlpv2", **{**TINY, "transitions": (True, False, False)})
    with pytest.raises(ValueError, match="divisible by 4"):
        build("s2mlpv2", **{**TINY, "embed_dims": (18, 32, 32, 32)})
    with pytest.raises(ValueError, match="img_size 10 is smaller than the model's total stride 14"):
        build("s2mlpv2", **{**TINY, "img_size": 10})
    with pytest.raises(TypeError, match="unknown argument.*segment_dim"):
        build("s2mlpv2", **TINY, segment_dim=(8, 8, 8, 8))
    with pytest.raises(S2MLPError, match="unknown model family"):
        build("s3mlp", **TINY)


def test_downsample_is_channels_last() -> None:
    down = Downsample(4, 6, 2)
    assert down(torch.randn(1, 8, 8, 4)).shape == (1, 4, 4, 6)


def test_registered_with_timm() -> None:
    assert "s2mlpv2_small" in timm.list_models("s2mlpv2*")
    model = timm.create_model("s2mlpv2_medium", num_classes=10, drop_path_rate=0.0)
    assert model.head.out_features == 10
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["crop_pct"] == 0.9 and cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 224, 224)


def test_public_entry_point() -> None:
    model = s2mlp_cli.create_model("small", num_classes=3)
    assert model.head.out_features == 3
    assert count_params(model) == count_params(create_model("s2mlpv2_small", num_classes=3))


def test_pretrained_s2mlpv2_says_none_are_published() -> None:
    with pytest.raises(
        WeightsUnavailableError, match="no pretrained weights are published for s2mlpv2_small"
    ):
        s2mlp_cli.create_model("small", pretrained=True)


def test_width_change_without_transition_uses_a_1x1_downsample() -> None:
    # ViP's rule: a Downsample also sits where only the width changes, as a k=s=1 conv (grid kept)
    model = build("s2mlpv2", **{**TINY, "transitions": (False, False, False, False), "img_size": 14})
    down = model.network[1]
    assert isinstance(down, Downsample) and down.proj.kernel_size == (1, 1) and down.proj.out_channels == 32
    assert model.stride == 7 and model(torch.randn(1, 3, 14, 14)).shape == (1, 5)
