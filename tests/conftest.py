"""Test scaffolding: every test runs with its own caches and homes; fixtures for the official reference
vectors, a zoo of tiny cards, a fake Hub on 127.0.0.1 and generated ImageNet sets."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"  # copied from the official code's output
# timm's own model tests, run by tests/timm_suite/run against our models (its conftest patches timm)
collect_ignore = ["timm_suite"]


SLOW_TIMEOUT_S = 900  # a test marked slow may take 15 minutes before it is stopped; any other 5 (pyproject)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    if any("gpu" in item.keywords for item in items):
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA device")
            for item in items:
                if "gpu" in item.keywords:
                    item.add_marker(skip)


@pytest.fixture
def reference() -> Path:
    """The official code's vectors and checkpoints (tests/data/reference; see its README)."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference vectors not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the user's caches, or inherits a zoo override."""
    monkeypatch.delenv("S2MLP_ZOO", raising=False)
    monkeypatch.delenv("S2MLP_DEBUG", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("S2MLP_HOME", str(tmp_path / "s2mlp_home"))
    monkeypatch.delenv("S2MLP_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path) -> Path:
    """A zoo of tiny cards (see tinyzoo.py) in place of the shipped one, with its own weights home."""
    from tinyzoo import make_zoo

    return make_zoo(tmp_path, monkeypatch, reference)


@pytest.fixture
def fake_hub(zoo: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake Hub on 127.0.0.1 (see fakehub.py), with HF_ENDPOINT pointing at it."""
    from fakehub import FakeHub

    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture(scope="session")
def items() -> list[tuple[str, bytes]]:
    """Generated images (fakeimagenet.py): photos of several shapes, grayscale, CMYK, a PNG named .JPEG."""
    import fakeimagenet as fi

    return fi.make_images()


@pytest.fixture
def items_small(items) -> list[tuple[str, bytes]]:
    return items[:6]


@pytest.fixture
def setup(zoo: Path, tmp_path: Path, items):
    """The weights file of a fixed model, the labels derived from it, and the exact expected result.

    Each image's label is a chosen rank of the model's own ranking of it through timm's reference
    transform (helpers.RANKS): rank 0 (top-1 and top-5 hit), rank 2 (top-5 only) or rank 40 (a miss)."""
    import torch
    from helpers import RANKS, timm_reference
    from safetensors.torch import save_file
    from torch.nn import functional as F

    from s2mlp_cli import create_model

    torch.manual_seed(0)
    model = create_model("evaltiny").eval()
    with torch.no_grad():
        model.head.weight.mul_(50)  # spread the logits so ranks have wide margins
        logits = model(timm_reference(items))
    weights = tmp_path / "evaltiny.safetensors"
    save_file(model.state_dict(), str(weights))
    order = logits.argsort(dim=1, descending=True)
    labels = [int(order[i, RANKS[i % 3]]) for i in range(len(items))]
    s = logits.sort(dim=1, descending=True).values
    # unambiguous: rank 0 stays top-1, rank 2 stays inside the top 5, rank 40 stays out of it
    assert min((s[:, 0] - s[:, 1]).min(), (s[:, 2] - s[:, 5]).min(), (s[:, 4] - s[:, 40]).min()) > 1e-2
    y = torch.tensor(labels)
    expected = {
        "top1": round(100 * sum(RANKS[i % 3] == 0 for i in range(len(items))) / len(items), 3),
        "top5": round(100 * sum(RANKS[i % 3] < 5 for i in range(len(items))) / len(items), 3),
        "loss": float(F.cross_entropy(logits, y)),
        "images": len(items),
    }
    return weights, labels, expected


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """`s2mlp demo`'s generated set (train/, val/, real.json, v2/, colours/), as a user makes it."""
    from helpers import run

    code, _, stderr = run("demo", str(tmp_path / "demo"))
    assert code == 0, stderr
    return tmp_path / "demo"
