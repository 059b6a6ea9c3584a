"""Hardening (issue 14): a malicious Hub, bad data and bad arguments lose nothing and run nothing.

Each test here failed on the code before the fix it names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
from click.testing import CliRunner
from fakehub import FakeHub
from PIL import Image
from safetensors.torch import save, save_file
from test_eval import items, run_eval, setup  # noqa: F401 (fixtures)
from test_pull import fake_hub, run, tiny_weights  # noqa: F401 (fixture)

from s2mlp_cli.cli import main
from s2mlp_cli.data import decode
from s2mlp_cli.weights import WeightsError, read_state_dict


def one_line(code: int, stderr: str, expected: int, *needles: str) -> None:
    """Exit `expected`, no traceback, one error line (a usage error also prints click's usage header)."""
    assert code == expected, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    if expected == 1:
        assert len(stderr.strip().splitlines()) == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr


# --- a malicious Hub -----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [4, 8])
def test_traversal_etag_deletes_and_writes_nothing_outside_the_cache(
    fake_hub: FakeHub, tmp_path, depth
) -> None:
    data, _ = tiny_weights()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.etags["model.safetensors"] = "../" * depth + str(victim).lstrip("/")
    code, _, stderr = run("pull", "hubtiny")
    one_line(code, stderr, 1, "not a plain hex checksum")
    assert victim.read_text() == "keep me"
    assert fake_hub.gets("model.safetensors") == []  # refused before any byte was written


def test_etag_naming_a_folder_outside_with_the_right_hash_is_refused(fake_hub: FakeHub, tmp_path) -> None:
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    outside = tmp_path / "pwn_dir"
    fake_hub.etags["model.safetensors"] = (
        f"../../../../../../../../{outside}/{hashlib.sha256(data).hexdigest()}"
    )
    code, _, stderr = run("pull", "hubtiny")
    one_line(code, stderr, 1, "not a plain hex checksum")
    assert not outside.exists()


def test_a_cached_file_that_resolves_outside_the_cache_is_neither_used_nor_deleted(
    fake_hub, tmp_path
) -> None:
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    assert run("pull", "hubtiny")[0] == 0
    snapshot = next(Path(os.environ["HF_HOME"]).rglob("snapshots/*/model.safetensors"))
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"not weights")
    snapshot.unlink()
    snapshot.symlink_to(victim)  # a cache tampered with, or a blob written outside by an old client
    code, _, stderr = run("pull", "hubtiny")
    one_line(code, stderr, 1, "resolves outside the cache")
    assert victim.read_bytes() == b"not weights"


@pytest.mark.parametrize("repo", ["", "a/b/c", "nameonly", "../x/y", "a/ b"])
def test_a_repo_that_is_not_owner_name_is_a_usage_error(fake_hub: FakeHub, repo: str) -> None:
    code, _, stderr = run("pull", "s2mlpv2_tiny", "--repo", repo, "--revision", "main")
    one_line(code, stderr, 2, "--repo")
    assert fake_hub.requests == []


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/abs/model.safetensors", "", "a/../../b"])
def test_a_filename_outside_the_repository_is_a_usage_error(fake_hub: FakeHub, filename: str) -> None:
    code, _, stderr = run("pull", "hubtiny", "--filename", filename)
    one_line(code, stderr, 2, "--filename")
    assert fake_hub.requests == []


def test_unpublished_cards_name_no_repository() -> None:
    from s2mlp_cli.zoo import cards

    for card in cards().values():
        if not card.weights.published:
            assert card.weights.repo is None, card.name


# --- bad files ---------------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(200_000, 1), (1, 200_000), (40_000, 40_000)])
def test_image_bombs_are_refused_from_the_header(size) -> None:
    data = _png(*size)
    assert len(data) < 2_000_000
    with pytest.raises(ValueError, match="refusing to decode"):
        decode(data)


def test_only_the_image_decoders_we_mean_are_used() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(Exception) as info:
        decode(eps)
    assert "cannot identify image file" in str(info.value)


def test_a_bomb_in_the_set_is_a_skipped_image_not_gigabytes(setup, tmp_path, items_small) -> None:  # noqa: F811
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    bomb = next(root.rglob("*.JPEG"))
    bomb.write_bytes(_png(200_000, 1))
    code, doc, stderr = run_eval(weights, "--data", str(root), "--no-cache")
    assert code == 0, stderr
    assert (
        doc["results"][0]["skipped"] == 1
        and "refusing to decode" in doc["results"][0]["skipped_files"][0]["error"]
    )


@pytest.fixture
def items_small():
    return fi.make_images()[:6]


def test_text_and_odd_pickles_are_clear_errors_without_unsafe_advice(tmp_path: Path) -> None:
    cases = {
        "text.pth": b"hello world\n" * 10,
        "random.pth": os.urandom(300),
        "set.pth": pickle.dumps({"a": {1, 2}}),
    }
    torch.save({"w": torch.zeros(2)}, tmp_path / "ok.pth")
    whole = (tmp_path / "ok.pth").read_bytes()
    cases["truncated.pth"] = whole[: len(whole) // 2]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError) as info:
            read_state_dict(tmp_path / name)
        message = str(info.value)
        assert "weights_only" not in message and "can still be loaded" not in message, message
        assert len(message) < 300, message


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64, torch.int64], ids=str)
def test_tensors_of_another_dtype_do_not_load_strictly(zoo: Path, tmp_path: Path, dtype) -> None:
    from s2mlp_cli import create_model
    from s2mlp_cli.weights import load_weights

    model = create_model("hubtiny")
    state = {k: v.to(dtype) if k == "head.weight" else v for k, v in model.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="head.weight has dtype"):
        load_weights(create_model("hubtiny"), path)
    save_file({k: v.double() for k, v in model.state_dict().items()}, str(path))  # fp64 -> fp32 is fine
    load_weights(create_model("hubtiny"), path)


def test_integer_keys_and_non_tensor_values_are_clear_errors(tmp_path: Path) -> None:
    torch.save({0: torch.zeros(2), 1: torch.zeros(3)}, tmp_path / "int_keys.pth")
    with pytest.raises(WeightsError, match="no tensors named"):
        read_state_dict(tmp_path / "int_keys.pth")


# --- results -----------------------------------------------------------------------------------------


def test_nan_weights_are_an_error_row_and_json_stays_valid(setup, tmp_path: Path, items_small) -> None:  # noqa: F811
    weights, labels, _ = setup
    state = dict(torch.load(weights, weights_only=True) if str(weights).endswith(".pth") else {})
    from safetensors.torch import load_file

    state = load_file(str(weights))
    state["head.bias"][0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    bad.write_bytes(save(state))
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    out = tmp_path / "r.json"
    code, _, stderr = run_eval(bad, "--data", str(root), "--output", str(out), "--no-cache")
    assert code == 1, stderr
    assert "non-finite" in stderr

    def bare(constant: str):
        raise AssertionError(f"bare {constant} in the JSON")

    doc = json.loads(out.read_text(), parse_constant=bare)  # strict JSON: no bare NaN or Infinity
    r = doc["results"][0]
    assert r["status"] == "error" and r["top1"] is None and "non-finite" in r["detail"]


def test_a_result_file_that_cannot_be_written_still_prints_the_results(
    setup, tmp_path, items_small, monkeypatch
):  # noqa: F811
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    from s2mlp_cli import report

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_text_atomic", disk_full)
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--variant",
            "evaltiny",
            "--weights",
            str(weights),
            "--data",
            str(root),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--output",
            str(tmp_path / "r.json"),
            "--no-cache",
        ],  # fmt: skip
    )
    assert result.exit_code == 1
    assert "evaltiny" in result.stdout and "top-1" in result.stdout  # the finished results, not thrown away
    assert "could not write" in result.stderr and "No space left on device" in result.stderr


# --- usage errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--variant", "evaltiny", "--data", ".", "--crop-pct", "nan"],
        ["eval", "--variant", "vip_tiny", "--data", ".", "--img-size", "17"],
        ["eval", "--variant", "evaltiny", "--data", ".", "--img-size", "16", "--weights", "x"],
        ["eval", "--variant", "evaltiny", "--data", ".", "--output", ""],
        ["eval", "--variant", "evaltiny", "--data", ".", "--mean", "nan,0,0"],
        ["bench", "--variant", "tiny", "--timeout", "inf"],
        ["bench", "--variant", "tiny", "--timeout", "nan"],
        ["bench", "--variant", "tiny", "--timeout", "1e308"],
        ["bench", "--variant", "tiny", "--output", ""],
    ],
)
def test_bad_arguments_exit_2(zoo: Path, args: list[str]) -> None:
    code, _, stderr = run(*args)
    assert code == 2, stderr
    assert "Traceback" not in stderr


def test_a_symlinked_output_is_written_through_not_replaced(setup, tmp_path, items_small) -> None:  # noqa: F811
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    real = tmp_path / "results" / "real.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, _, stderr = run_eval(weights, "--data", str(root), "--output", str(link), "--no-cache")
    assert code == 0, stderr
    assert link.is_symlink() and json.loads(real.read_text())["results"][0]["model"] == "evaltiny"
