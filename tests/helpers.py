"""Plain helpers the test modules share (fixtures live in conftest.py; test modules never import each
other): the one CLI runner, the official reference vectors, tiny weights, and eval's expected answers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save

from s2mlp_cli.cli import main

RANKS = [0, 2, 40]  # eval labels: each image's label is this rank of a fixed model's own ranking
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Runner(CliRunner):
    """The one CLI runner: an exception nobody meant propagates into the test (as hatch's tests do),
    instead of hiding in `result.exception` behind an exit code."""

    def invoke(self, *args: Any, **kwargs: Any) -> Result:
        kwargs.setdefault("catch_exceptions", False)
        return super().invoke(*args, **kwargs)


def cli(*args: str, env: dict | None = None) -> Result:
    return Runner().invoke(main, list(args), env=env)


def run(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    result = cli(*args, env=env)
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, stderr: str, expected: int, *needles: str) -> None:
    """Exit `expected`, no traceback, and one `Error:` line holding every needle (several problems: a
    list under it, one `  - ` line each)."""
    assert code == expected, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    after = stderr.strip().splitlines()
    after = after[after.index(errors[0]) + 1 :]
    assert all(ln.startswith("  - ") for ln in after), stderr
    if expected == 1:  # a usage error (2) also prints click's usage header
        assert len(stderr.strip().splitlines()) == 1 + len(after), stderr
    for needle in needles:
        assert needle in stderr, stderr


def read_reference(path: Path) -> tuple[str, dict, dict, torch.Tensor, torch.Tensor]:
    """An official-code reference file: family, constructor arguments, state dict, input and output."""
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
        state = {
            k.removeprefix("state_dict."): f.get_tensor(k) for k in f.keys() if k.startswith("state_dict.")
        }
        return config.pop("family"), config, state, f.get_tensor("input"), f.get_tensor("output")


def tiny_weights(seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    """The bytes and tensors of a seeded `hubtiny` (the tiny zoo's Hub card)."""
    from s2mlp_cli import create_model

    torch.manual_seed(seed)
    state = create_model("hubtiny").state_dict()
    return save(state), state


def timm_reference(
    items: list[tuple[str, bytes]], size=56, crop_pct=0.875, interpolation="bicubic", mean=MEAN, std=STD
) -> torch.Tensor:
    """timm's own eval transform of each image: what our pipeline must reproduce exactly."""
    from timm.data import create_transform

    tf = create_transform(input_size=size, crop_pct=crop_pct, interpolation=interpolation, mean=mean, std=std)
    return torch.stack([tf(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in items])


def run_eval(weights: Path, *args: str) -> tuple[int, dict | None, str]:
    """`s2mlp eval` of the tiny eval card with the given weights, on the CPU, as JSON."""
    argv = ["eval", "--variant", "evaltiny", "--weights", str(weights), "--device", "cpu", "--workers", "0"]
    result = cli(*argv, "--batch-size", "5", "--json", *args)
    doc = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, doc, result.stderr


def check(doc: dict, expected: dict) -> dict:
    """The one result row, with exactly the expected top-1, top-5 and images, and the loss."""
    (r,) = doc["results"]
    assert (r["top1"], r["top5"], r["images"]) == (expected["top1"], expected["top5"], expected["images"])
    assert r["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    return r
