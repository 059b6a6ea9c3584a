"""Our models as timm models: trained with timm's tools, used as backbones, cast, scripted and traced.

timm's own tests/test_models.py runs against all 14 models in CI (tests/timm_suite/run); these are the
checks of ours that it does not make: training end to end, and official weights still exact.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from helpers import read_reference
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.dataset import ImageDataset
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

import s2mlp_cli.models  # noqa: F401 (registers our models with timm)
from s2mlp_cli.api import load_weights
from s2mlp_cli.arch import build

TINY = dict(layers=[1, 1, 2, 1], embed_dims=[32, 64, 64, 64], transitions=[True, False, False, False])


def folder_dataset(root: Path, per_class: int = 12) -> Path:
    """Two classes that differ in colour and stripe direction, as JPEG files in class folders."""
    g = torch.Generator().manual_seed(0)
    for label in (0, 1):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(per_class):
            base = torch.rand(3, 64, 64, generator=g) * 0.3
            base[label * 2] += 0.6  # red or blue
            stripes = (torch.arange(64) // 8 % 2).float() * 0.3
            base += stripes.view(1, 1, 64) if label else stripes.view(1, 64, 1)
            array = (base.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, format="JPEG", quality=95)
            (root / f"class{label}" / f"{i}.jpg").write_bytes(buf.getvalue())
    return root


def test_trains_with_timms_optimizer_mixup_and_grad_checkpointing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("s2mlpv2_small", num_classes=2, img_size=56, drop_path_rate=0.1, **TINY)
    model.set_grad_checkpointing(True)
    # layer-wise decay groups from group_matcher, no decay for what no_weight_decay names
    optimizer = create_optimizer_v2(model, "adamw", lr=2e-3, weight_decay=0.05, layer_decay=0.8)
    assert len(optimizer.param_groups) > 2
    root = folder_dataset(tmp_path / "train")
    dataset = ImageDataset(str(root))
    dataset.transform = create_transform(56, is_training=True, scale=(0.6, 1.0), hflip=0.0, color_jitter=None)
    plain = ImageDataset(str(root), transform=create_transform(56))
    x_all, y_all = next(iter(torch.utils.data.DataLoader(plain, batch_size=len(plain))))

    def held_out() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = model(x_all)
        model.train()
        return float(torch.nn.functional.cross_entropy(logits, y_all)), float(
            (logits.argmax(1) == y_all).float().mean()
        )

    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, drop_last=True)
    mixup = Mixup(mixup_alpha=0.4, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=2)
    loss_fn = SoftTargetCrossEntropy()
    before, _ = held_out()
    model.train()
    for _ in range(8):
        for x, y in loader:
            x, y = mixup(x, y)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after, accuracy = held_out()
    assert after < 0.5 * before and accuracy > 0.9, (before, after, accuracy)


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = timm.create_model("s2mlpv2_small", num_classes=3, img_size=56, drop_path_rate=0.0, **TINY)
    x = torch.randn(2, 3, 56, 56)
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-5, atol=1e-6)


def test_features_only_backbone_for_detection() -> None:
    backbone = timm.create_model(
        "s2mlpv2_small", features_only=True, out_indices=(0, 3), img_size=112, **TINY
    )
    assert backbone.feature_info.channels() == [32, 64] and backbone.feature_info.reduction() == [7, 14]
    features = backbone(torch.randn(2, 3, 112, 112))
    assert [tuple(f.shape) for f in features] == [(2, 32, 16, 16), (2, 64, 8, 8)]  # NCHW, as FPNs take
    assert not hasattr(backbone.model, "head") or isinstance(backbone.model.head, torch.nn.Identity)
    pyramid = timm.create_model("gfnet_h_ti", features_only=True)
    assert pyramid.feature_info.reduction() == [4, 8, 16, 32]


@pytest.mark.parametrize(
    "name,official",
    [
        ("vip_tiny", "vip_tiny_official.pth.tar"),
        ("gfnet_tiny", "gfnet_tiny_official.pth"),
        ("gfnet_h_tiny", None),
    ],
)
def test_official_checkpoints_still_load_and_reproduce(
    reference: Path, name: str, official: str | None
) -> None:
    family, config, state, x, logits = read_reference(reference / f"{name}.safetensors")
    model = build(family, **config).eval()
    if official:  # the file as the official training script saved it
        load_weights(model, reference / official)
    else:
        model.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=1e-4, atol=1e-4)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), logits, rtol=1e-4, atol=1e-4)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gfnet_tiny", "gfnet_h_tiny"])
def test_gfnet_runs_cast_to_bf16(reference: Path, name: str) -> None:
    family, config, state, x, logits = read_reference(reference / f"{name}.safetensors")
    model = build(family, **config).eval()
    model.load_state_dict(state, strict=True)
    model.to(torch.bfloat16)
    with torch.no_grad():
        out = model(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), logits, rtol=0.1, atol=0.1)


def test_timm_training_arguments_every_family_takes() -> None:
    # timm's train.py passes drop_rate and drop_path_rate; in_chans and global_pool come from the cfg
    for name in ("s2mlpv2_small", "s2mlp_wide", "vip_s7", "gfnet_ti", "gfnet_h_ti"):
        model = timm.create_model(
            name, drop_rate=0.1, drop_path_rate=0.1, in_chans=1, num_classes=5, device="meta"
        )
        assert model.in_chans == 1 and model.num_classes == 5 and model.pretrained_cfg["input_size"][0] == 1
    model = timm.create_model("gfnet_h_ti", in_chans=1, num_classes=0, global_pool="")
    out = model(torch.randn(1, 1, 224, 224))
    assert out.shape == (1, 7, 7, 512)  # unpooled, channels-last: output_fmt NHWC
    model.reset_classifier(4, "avg")
    assert model(torch.randn(1, 1, 224, 224)).shape == (1, 4)


def test_timm_scripts_run_with_our_models_registered(tmp_path: Path) -> None:
    # what `python -m s2mlp_cli.timm_train train.py ...` does for timm's train.py: import, then run as main
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import argparse, timm
            parser = argparse.ArgumentParser()
            parser.add_argument("data")
            parser.add_argument("--model")
            args = parser.parse_args()
            model = timm.create_model(args.model, num_classes=2, pretrained=False)
            print(__name__, args.data, type(model).__name__, model.num_classes)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "s2mlp_cli.timm_train", str(script), "/data", "--model", "gfnet_ti"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["__main__", "/data", "GFNet", "2"]
    missing = subprocess.run(args[:3] + [str(tmp_path / "nope.py")], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "no such script" in missing.stderr


def test_only_our_repositories_take_the_verified_config_route(zoo, monkeypatch) -> None:
    """`hf-hub:` names of repositories a card names go through s2mlp's verified fetch; any other model's
    config goes through timm's own download, untouched."""
    from timm.models import _hub

    import s2mlp_cli.models as models

    guard = _hub.download_from_hf
    assert guard.s2mlp_guard
    calls = []
    monkeypatch.setattr(
        models, "_verified_config", lambda model_id, name, *a, **k: calls.append(("s2mlp", model_id))
    )
    monkeypatch.setattr(guard, "timm", lambda model_id, name, *a, **k: calls.append(("timm", model_id)))
    _hub.download_from_hf("testorg/hubtiny", "config.json")  # hubtiny's card names this repository
    _hub.download_from_hf("someone/vit-base@main", "config.json")
    assert calls == [("s2mlp", "testorg/hubtiny"), ("timm", "someone/vit-base@main")]
