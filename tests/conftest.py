from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"  # copied from the official code's output
# timm's own model tests, run by tests/timm_suite/run against our models (its conftest patches timm)
collect_ignore = ["timm_suite"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
    os.environ.pop("HF_HUB_CACHE", None)


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path) -> Path:
    """A zoo of tiny cards (see tinyzoo.py) in place of the shipped one, with its own weights home."""
    from tinyzoo import make_zoo

    return make_zoo(tmp_path, monkeypatch, reference)
