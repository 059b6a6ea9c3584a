"""s2mlp_cli.load_weights on the official on-disk layouts, and its refusals."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import s2mlp_cli
from s2mlp_cli.api import create_model
from s2mlp_cli.arch import build
from s2mlp_cli.errors import WeightsError
from s2mlp_cli.weights import read_state_dict


def reference_model(reference: Path, name: str):
    with safe_open(str(reference / f"{name}.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["config"])
        return build(config.pop("family"), **config).eval(), f.get_tensor("input"), f.get_tensor("output")


@pytest.mark.parametrize(
    ("checkpoint", "name"),
    [
        ("gfnet_tiny_official.pth", "gfnet_tiny"),  # {'model', 'optimizer', 'epoch', 'args': Namespace}
        (
            "vip_tiny_official.pth.tar",
            "vip_tiny",
        ),  # timm CheckpointSaver: {'state_dict', 'arch', 'args', ...}
        ("vip_tiny_ddp.pth", "vip_tiny"),  # bare DDP state dict, every key 'module.'-prefixed
    ],
)
def test_official_layouts_load_and_reproduce_outputs(reference: Path, checkpoint: str, name: str) -> None:
    model, x, expected = reference_model(reference, name)
    s2mlp_cli.load_weights(model, str(reference / checkpoint))
    with torch.no_grad():
        assert (model(x) - expected).abs().max().item() < 1e-4


def test_namespace_args_need_the_allow_list(reference: Path) -> None:
    # the file really holds a pickled Namespace: plain weights_only refuses it, our loader does not
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(reference / "gfnet_tiny_official.pth", weights_only=True)
    assert "blocks.0.filter.complex_weight" in read_state_dict(reference / "gfnet_tiny_official.pth")


def test_safetensors_and_compiled_prefixes(tmp_path: Path) -> None:
    model = create_model("small", num_classes=3)
    sd = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    fresh = s2mlp_cli.load_weights(create_model("small", num_classes=3), str(tmp_path / "w.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_nested_model_key_with_extras(tmp_path: Path) -> None:
    model = create_model("small", num_classes=3)
    torch.save(
        {"model": model.state_dict(), "epoch": 3, "args": argparse.Namespace(lr=1e-3)}, tmp_path / "c.pth"
    )
    s2mlp_cli.load_weights(create_model("small", num_classes=3), str(tmp_path / "c.pth"))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": payload}, tmp_path / "evil.pth")
    with pytest.raises(
        WeightsError, match="refusing .*evil.pth: loading it would run code it names .*system"
    ):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"not a checkpoint at all", "junk.pth", "not a weights file \\(neither safetensors nor a PyTorch"),
        (b"\x80\x02garbage", "junk.pth", "not a checkpoint torch can read"),
        (b"\x00\x01garbage", "junk.safetensors", "not a readable safetensors file"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, name: str, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        read_state_dict(tmp_path / name)
    with pytest.raises(WeightsError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="is a folder; name a weights file in it"):
        read_state_dict(tmp_path)


def test_no_state_dict_inside(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(
        WeightsError, match="found no state dict in it \\(top-level entries: epoch, optimizer\\)"
    ):
        read_state_dict(tmp_path / "opt.pth")


def test_mismatch_names_keys_and_suggests_the_variant(tmp_path: Path) -> None:
    with torch.device("meta"):
        s7 = create_model("vip_s7")
    save_file({k: torch.zeros(v.shape) for k, v in s7.state_dict().items()}, str(tmp_path / "s7.safetensors"))
    with torch.device("meta"):
        m7 = create_model("vip_m7")
    with pytest.raises(WeightsError) as info:
        s2mlp_cli.load_weights(m7, str(tmp_path / "s7.safetensors"))
    message = str(info.value)
    assert message.startswith("s7.safetensors does not fit vip_m7: missing network.")
    assert "unexpected network." in message and "looks like a checkpoint of vip_s7" in message


def test_other_num_classes_only_when_asked(tmp_path: Path) -> None:
    model = create_model("small")
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="head for 1000 classes; .* has 10; load it with reset_head=True"):
        s2mlp_cli.load_weights(create_model("small", num_classes=10), str(tmp_path / "w.safetensors"))
    ten = create_model("small", num_classes=10)
    head = ten.head.weight.clone()
    s2mlp_cli.load_weights(ten, str(tmp_path / "w.safetensors"), reset_head=True)
    assert torch.equal(ten.head.weight, head)  # kept its own head
    assert torch.equal(ten.norm.weight, model.norm.weight)  # took everything else


def test_timm_models_load_their_own_layout(tmp_path: Path) -> None:
    mixer = create_model("mixer_s16_224", num_classes=5)
    save_file(mixer.state_dict(), str(tmp_path / "mixer.safetensors"))
    fresh = s2mlp_cli.load_weights(
        create_model("mixer_s16_224", num_classes=5), str(tmp_path / "mixer.safetensors")
    )
    assert torch.equal(fresh.head.weight, mixer.head.weight)
