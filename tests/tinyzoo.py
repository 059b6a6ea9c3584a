"""Zoo cards for tiny models, so tests can pull, bench and evaluate real code paths in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import read_reference

TINY_S2 = {
    "layers": [1, 1, 1, 1],
    "embed_dims": [16, 16, 32, 32],
    "transitions": [False, True, False, False],
    "mlp_ratios": [1, 1, 1, 1],
    "patch_size": 7,
    "num_classes": 10,
}


def write_card(
    zoo: Path,
    name: str,
    family: str,
    arch: dict,
    *,
    peers: tuple[str, ...] = (),
    top1: float | None = None,
    preprocess: dict | None = None,
    **weights: object,
) -> None:
    arch = dict(arch)
    size = arch.pop("img_size", 56)  # the input size lives in preprocess only
    card = {
        "name": name,
        "family": family,
        "description": f"{name} (test card)",
        "arch": arch,
        "preprocess": {
            "input_size": size,
            "crop_pct": 0.875,
            "interpolation": "bicubic",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            **(preprocess or {}),
        },
        "weights": {"published": True, "filename": "model.safetensors", **weights},
        "counts": {"params": 1, "gmacs": 0.0},
        "paper": {"title": "test", "top1": top1},
        "peers": list(peers),
        "sources": {"preprocess": "test card"},
    }
    if name == "s2mlpv2_tiny":
        card["aliases"] = ["tiny"]
    (zoo / f"{name}.yaml").write_text(yaml.safe_dump(card))


def make_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path) -> Path:
    """A zoo of tiny cards: unpublished S²-MLPv2, one on the (fake) Hub, and a ViP off the Hub."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    write_card(
        zoo,
        "s2mlpv2_tiny",
        "s2mlpv2",
        TINY_S2,
        published=False,
        repo=None,
        note="test: none released",
        peers=("vip_tiny",),
        top1=50.0,
    )
    write_card(zoo, "hubtiny", "s2mlpv2", TINY_S2, repo="testorg/hubtiny")
    config = read_reference(reference / "vip_tiny.safetensors")[1]
    write_card(
        zoo, "vip_tiny", "vip", config, repo=None, urls=["https://example.org/vip_tiny.pth.tar"], top1=40.0
    )
    # for eval: 1000 classes, so labels can be any sorted-synset index; b shares a's crop, c does not
    eval_arch = {**TINY_S2, "num_classes": 1000}
    write_card(zoo, "evaltiny", "s2mlpv2", eval_arch, published=False, top1=70.0)
    write_card(
        zoo,
        "evaltiny_b",
        "s2mlpv2",
        eval_arch,
        published=False,
        preprocess={"mean": [0.5] * 3, "std": [0.5] * 3},
    )
    write_card(zoo, "evaltiny_c", "s2mlpv2", eval_arch, published=False, preprocess={"crop_pct": 1.0})
    monkeypatch.setenv("S2MLP_ZOO", str(zoo))
    monkeypatch.setenv("S2MLP_HOME", str(tmp_path / "s2mlp_home"))
    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return zoo
