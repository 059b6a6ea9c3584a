"""`s2mlp pull` through the real huggingface_hub client against a fake Hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakehub import FakeHub, commit_of
from helpers import one_line_error, read_reference, run, tiny_weights
from safetensors.torch import load_file, save
from tinyzoo import TINY_S2, write_card

from s2mlp_cli import create_model, sources
from s2mlp_cli.errors import HubError, WeightsUnavailableError
from s2mlp_cli.zoo import get_card


def test_pull_downloads_verifies_and_loads(fake_hub: FakeHub) -> None:
    data, state = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr
    (row,) = json.loads(stdout)["results"]
    assert row["status"] == "pulled" and row["cached"] is False
    assert row["verified"] == "Hub ETag (sha256)"
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    path = Path(row["path"])
    assert path.is_relative_to(Path(os.environ["HF_HOME"]) / "hub" / "models--testorg--hubtiny")
    assert path.read_bytes() == data

    model = create_model("hubtiny", pretrained=True)  # the same verified file, no download
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    assert len(fake_hub.gets("model.safetensors")) == 1


def test_second_run_uses_the_cache_with_the_hub_down(fake_hub: FakeHub, monkeypatch) -> None:
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
    assert run("pull", "hubtiny")[0] == 0
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["results"][0]["status"] == "cached"


def test_offline_serves_cached_and_refuses_uncached_at_once(fake_hub: FakeHub, monkeypatch) -> None:
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
    assert run("pull", "hubtiny")[0] == 0
    seen = len(fake_hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, stdout, _ = run("pull", "hubtiny", "--json")
    assert code == 0 and json.loads(stdout)["results"][0]["status"] == "cached"
    assert create_model("hubtiny", pretrained=True) is not None
    assert len(fake_hub.requests) == seen  # no network at all

    code, _, stderr = run("pull", "tiny", "--repo", "testorg/other")
    one_line_error(code, stderr, 1, "HF_HUB_OFFLINE", "s2mlp pull s2mlpv2_tiny --repo testorg/other")
    assert len(fake_hub.requests) == seen


def test_pinned_revision_and_sha256(fake_hub: FakeHub, zoo: Path) -> None:
    old, old_state = tiny_weights(1)
    new, _ = tiny_weights(2)
    old_commit = commit_of("old")
    fake_hub.add(
        "testorg/hubtiny", {"model.safetensors": new}, commits={old_commit: {"model.safetensors": old}}
    )
    write_card(
        zoo,
        "hubtiny",
        "s2mlpv2",
        TINY_S2,
        repo="testorg/hubtiny",
        revision=old_commit,
        sha256=hashlib.sha256(old).hexdigest(),
    )
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr
    row = json.loads(stdout)["results"][0]
    assert row["verified"] == "card sha256 pin"
    assert f"@{old_commit}/" in row["source"] and Path(row["path"]).read_bytes() == old
    assert (
        fake_hub.gets("model.safetensors")[0][1] == f"/testorg/hubtiny/resolve/{old_commit}/model.safetensors"
    )

    assert row["pin"] == "card sha256 pin"

    # --revision of the card's own file keeps its pin: main holds other bytes, so they are refused
    code, _, stderr = run("pull", "hubtiny", "--revision", "main", "--json")
    one_line_error(code, stderr, 1, "failed verification", "card sha256 pin")
    assert {r["name"]: r["weights"] for r in json.loads(run("list", "--json")[1])["results"]}[
        "hubtiny"
    ] == "pulled"

    # another repository is checked against its ETag, and the row says no pin held
    fake_hub.add("testorg/fork", {"model.safetensors": new})
    code, stdout, _ = run("pull", "hubtiny", "--repo", "testorg/fork", "--json")
    row = json.loads(stdout)["results"][0]
    assert code == 0 and row["verified"] == "Hub ETag (sha256)"
    assert row["pin"] == "none: a repository the card does not pin"
    assert Path(row["path"]).read_bytes() == new
    # what was pulled is the variant's source from now on ...
    assert {r["name"]: r["weights"] for r in json.loads(run("list", "--json")[1])["results"]}["hubtiny"] == (
        "pulled (testorg/fork)"
    )
    model = create_model("hubtiny", pretrained=True)
    assert not torch.equal(model.state_dict()["head.weight"], old_state["head.weight"])
    # ... until the card's own source is pulled again
    code, stdout, _ = run("pull", "hubtiny", "--revision", old_commit, "--json")
    assert code == 0 and json.loads(stdout)["results"][0]["verified"] == "card sha256 pin"
    model = create_model("hubtiny", pretrained=True)  # the card's pinned revision
    assert torch.equal(model.state_dict()["head.weight"], old_state["head.weight"])


def test_a_pin_the_file_does_not_match_is_refused(fake_hub: FakeHub, zoo: Path) -> None:
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
    write_card(zoo, "hubtiny", "s2mlpv2", TINY_S2, repo="testorg/hubtiny", sha256="0" * 64)
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "failed verification", "card sha256 pin", "nothing entered the cache")
    assert sources.cached_path(get_card("hubtiny")) is None


def test_git_sha1_etag_of_a_non_lfs_file_is_checked(fake_hub: FakeHub) -> None:
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]}, lfs=False)
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["results"][0]["verified"] == "Hub ETag (git blob sha1)"


def test_corrupt_transfer_is_deleted_and_never_used(fake_hub: FakeHub, monkeypatch) -> None:
    data = tiny_weights()[0]
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.corrupt.add("model.safetensors")
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "failed verification", "Hub ETag", "nothing entered the cache")
    assert not (Path(os.environ["HF_HOME"]) / "hub" / "models--testorg--hubtiny").exists()
    assert not list((Path(os.environ["S2MLP_HOME"]) / "tmp").iterdir())  # the scratch copy is gone too

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the bad file is not served later
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "not in the cache")
    with pytest.raises(HubError, match="not in the cache"):
        create_model("hubtiny", pretrained=True)

    monkeypatch.delenv("HF_HUB_OFFLINE")  # once the Hub serves good bytes, a rerun fixes it
    fake_hub.corrupt.clear()
    code, stdout, _ = run("pull", "hubtiny", "--json")
    assert code == 0 and Path(json.loads(stdout)["results"][0]["path"]).read_bytes() == data


def test_interrupted_download_resumes(fake_hub: FakeHub, monkeypatch) -> None:
    from huggingface_hub import constants

    # the client writes in chunks of DOWNLOAD_CHUNK_SIZE (10 MB); smaller ones let a small file break midway
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    data = tiny_weights()[0]
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.break_after["model.safetensors"] = 4096 * 5
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr
    assert Path(json.loads(stdout)["results"][0]["path"]).read_bytes() == data
    ranges = [r for _, _, r in fake_hub.gets("model.safetensors")]
    assert ranges == [None, f"bytes={4096 * 5}-"]  # the second GET asks only for the rest


@pytest.mark.parametrize(
    ("setup", "args", "needles"),
    [
        ("none", ["hubtiny"], ["repository testorg/hubtiny not found", "HF_TOKEN"]),
        ("gated", ["hubtiny"], ["gated or private", "HF_TOKEN"]),
        ("ok", ["hubtiny", "--revision", "v9"], ["revision 'v9' not found in testorg/hubtiny"]),
        (
            "ok",
            ["hubtiny", "--filename", "nope.safetensors"],
            ["nope.safetensors not found in testorg/hubtiny"],
        ),
        ("ok", ["tiny"], ["no pretrained weights are published for s2mlpv2_tiny", "--repo ORG/NAME"]),
        (
            "ok",
            ["vip_tiny"],
            ["not on the Hugging Face Hub", "https://example.org/vip_tiny.pth.tar", "--from"],
        ),
    ],
)
def test_hub_errors_are_one_line(fake_hub: FakeHub, setup: str, args: list[str], needles: list[str]) -> None:
    if setup != "none":
        fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]}, gated=setup == "gated")
    code, _, stderr = run("pull", *args)
    one_line_error(code, stderr, 1, *needles)


def test_unreachable_hub_fails_fast(zoo: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "could not reach the Hub at http://127.0.0.1:9", "HF_HUB_OFFLINE=1")


def test_own_s2mlpv2_weights_from_another_repo(fake_hub: FakeHub) -> None:
    data, state = tiny_weights(3)
    fake_hub.add("me/my-s2mlpv2", {"weights.safetensors": data})
    code, _, stderr = run("pull", "tiny", "--repo", "me/my-s2mlpv2", "--filename", "weights.safetensors")
    assert code == 0, stderr
    model = create_model("tiny", pretrained=True, repo="me/my-s2mlpv2", filename="weights.safetensors")
    assert torch.equal(model.state_dict()["head.bias"], state["head.bias"])
    # the pulled source is remembered: no arguments needed from now on, and list says where it is from
    model = create_model("tiny", pretrained=True)
    assert torch.equal(model.state_dict()["head.bias"], state["head.bias"])
    rows = {r["name"]: r["weights"] for r in json.loads(run("list", "--json")[1])["results"]}
    assert rows["s2mlpv2_tiny"] == "pulled (me/my-s2mlpv2)"
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights are published"):
        create_model("evaltiny", pretrained=True)


def test_weights_of_another_variant_are_rejected(fake_hub: FakeHub) -> None:
    torch.manual_seed(0)
    wrong = save(create_model("hubtiny", num_classes=7).state_dict())
    fake_hub.add("testorg/hubtiny", {"model.safetensors": wrong})
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "has a head for 7 classes; hubtiny has 10", "reset_head=True")


def test_import_official_checkpoint_then_use_it(zoo: Path, reference: Path, monkeypatch) -> None:
    official = reference / "vip_tiny_official.pth.tar"
    sha = hashlib.sha256(official.read_bytes()).hexdigest()
    code, stdout, stderr = run("pull", "vip_tiny", "--from", str(official), "--sha256", sha, "--json")
    assert code == 0, stderr
    row = json.loads(stdout)["results"][0]
    assert row["verified"] == "given sha256" and row["source"] == "imported from vip_tiny_official.pth.tar"
    assert Path(row["path"]).suffix == ".safetensors" and Path(row["path"]).is_file()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, _, _, x, expected = read_reference(reference / "vip_tiny.safetensors")
    model = create_model("vip_tiny", pretrained=True).eval()
    with torch.no_grad():
        assert (model(x) - expected).abs().max().item() < 1e-5
    code, stdout, _ = run("list", "--json")
    assert {r["name"]: r["weights"] for r in json.loads(stdout)["results"]}["vip_tiny"] == "pulled (imported)"
    code, stdout, _ = run("pull", "vip_tiny", "--json")
    assert code == 0 and json.loads(stdout)["results"][0]["status"] == "cached"


def test_import_refuses_wrong_hash_or_misfit_and_writes_nothing(zoo: Path, reference: Path, tmp_path) -> None:
    official = reference / "vip_tiny_official.pth.tar"
    code, _, stderr = run("pull", "vip_tiny", "--from", str(official), "--sha256", "ab" * 32)
    one_line_error(code, stderr, 1, "not the expected vip_tiny checkpoint", "download it again")
    code, _, stderr = run("pull", "vip_tiny", "--from", str(reference / "gfnet_tiny_official.pth"))
    one_line_error(code, stderr, 1, "does not fit vip_tiny")
    assert not (tmp_path / "s2mlp_home" / "weights" / "vip_tiny").exists() or not any(
        (tmp_path / "s2mlp_home" / "weights" / "vip_tiny").iterdir()
    )


def test_tampered_import_is_removed(zoo: Path, reference: Path) -> None:
    code, stdout, _ = run(
        "pull", "vip_tiny", "--from", str(reference / "vip_tiny_official.pth.tar"), "--json"
    )
    path = Path(json.loads(stdout)["results"][0]["path"])
    tensors = load_file(str(path))
    tensors["head.bias"] = tensors["head.bias"] + 1
    path.write_bytes(save(tensors))
    code, _, stderr = run("pull", "vip_tiny")
    one_line_error(code, stderr, 1, "changed on disk", "--from FILE")
    assert not path.exists()


def test_pull_all_and_list_show_what_is_cached(fake_hub: FakeHub) -> None:
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
    code, stdout, _ = run("list", "--json")
    assert {r["name"]: r["weights"] for r in json.loads(stdout)["results"]}["hubtiny"] == "hub"
    code, stdout, stderr = run("pull", "--all", "--json")
    assert code == 0, stderr
    status = {r["variant"]: r["status"] for r in json.loads(stdout)["results"]}
    assert status.pop("hubtiny") == "pulled"
    assert set(status.values()) == {"skipped"} and {"s2mlpv2_tiny", "vip_tiny"} <= set(status)
    code, stdout, _ = run("list", "--json")
    assert {r["name"]: r["weights"] for r in json.loads(stdout)["results"]}["hubtiny"] == "pulled"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["hubtiny", "--all"],
        ["hubtiny", "tiny", "--repo", "a/b"],
        ["vip_tiny", "--from", "x.pth", "--repo", "a/b"],
        ["hubtiny", "--sha256", "ab" * 32],
        ["vip_tiny", "--from", "x.pth", "--sha256", "xyz"],
        ["nosuchmodel"],
    ],
)
def test_usage_errors_exit_2(zoo: Path, args: list[str]) -> None:
    code, _, stderr = run("pull", *args)
    assert code == 2, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow  # processes
def test_installed_entry_point_reads_hf_endpoint_at_import(fake_hub: FakeHub, tmp_path: Path) -> None:
    """The real process path: HF_ENDPOINT and HF_HOME set before huggingface_hub is imported."""
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
    env = {**os.environ, "HF_HOME": str(tmp_path / "proc_home")}
    cmd = [sys.executable, "-m", "s2mlp_cli", "pull", "hubtiny", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["path"].startswith(str(tmp_path / "proc_home" / "hub"))
    offline = subprocess.run(
        cmd, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120
    )
    assert offline.returncode == 0 and json.loads(offline.stdout)["results"][0]["status"] == "cached"
