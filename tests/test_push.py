"""`s2mlp push` through the real huggingface_hub client against the fake Hub: push, pull, eval round trip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
from fakehub import FakeHub
from helpers import one_line_error, run
from safetensors.torch import load_file, save

from s2mlp_cli import create_model

TOKEN, OTHER = "hf_alice_token", "hf_bob_token"


@pytest.fixture
def fake_hub(zoo: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    # uploads over plain HTTP (LFS), as the fake Hub speaks; the real Hub may use Xet
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as server:
        server.tokens = {TOKEN: "alice", OTHER: "bob"}
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """evaltiny weights as a training script saves them: nested under state_dict, DDP's module. prefix."""
    torch.manual_seed(3)
    model = create_model("evaltiny")
    with torch.no_grad():
        model.head.weight.mul_(50)
    path = tmp_path / "model_best.pth.tar"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 300}, path)
    return path


@pytest.fixture
def val(tmp_path: Path) -> Path:
    items = fi.make_images()
    return fi.class_folders(tmp_path / "val", items, [i * 7 % 1000 for i in range(len(items))])


def evaluate(val: Path, tmp_path: Path, name: str, *args: str) -> tuple[dict, list[str]]:
    out, preds = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
    common = ["--device", "cpu", "--workers", "0", "--batch-size", "4"]
    code, _, stderr = run(
        "eval", "--variant", "evaltiny", "--data", str(val), *common, "--output", str(out),
        "--save-predictions", str(preds), *args,
    )  # fmt: skip
    assert code == 0, stderr
    return json.loads(out.read_text()), preds.read_text().splitlines()


def test_push_pull_eval_round_trip(fake_hub: FakeHub, checkpoint: Path, val: Path, tmp_path: Path) -> None:
    before, preds_before = evaluate(val, tmp_path, "before", "--weights", str(checkpoint))
    bench = tmp_path / "bench.json"
    quick = ["--batch-size", "2", "--iters", "2", "--warmup", "0", "--device", "cpu", "--rounds", "1"]
    code, _, stderr = run("bench", "--variant", "evaltiny", *quick, "--output", str(bench))
    assert code == 0, stderr

    code, stdout, stderr = run(
        "push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/evaltiny",
        "--eval", str(tmp_path / "before.json"), "--bench", str(bench), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    done = json.loads(stdout)
    repo = fake_hub.repos["alice/evaltiny"]
    assert len(fake_hub.commits_made) == 1  # one commit, three files
    assert set(repo.files) == {"model.safetensors", "config.json", "README.md"}
    assert done["commit"] == repo.head and done["revision"] == "main"
    assert done["sha256"] == hashlib.sha256(repo.files["model.safetensors"]).hexdigest()
    assert done["pin"] == {
        "repo": "alice/evaltiny",
        "filename": "model.safetensors",
        "revision": repo.head,
        "sha256": done["sha256"],
    }

    # the pushed tensors are the checkpoint's, keyed as the model's state dict
    (tmp_path / "pushed.safetensors").write_bytes(repo.files["model.safetensors"])
    pushed = load_file(str(tmp_path / "pushed.safetensors"))
    original = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert pushed.keys() == {k.removeprefix("module.") for k in original}
    assert all(torch.equal(pushed[k.removeprefix("module.")], v) for k, v in original.items())

    # everyone else: pull the repository, then eval as usual; identical logits, identical results
    code, stdout, stderr = run("pull", "evaltiny", "--repo", "alice/evaltiny", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["results"][0]["sha256"] == done["sha256"]
    after, preds_after = evaluate(val, tmp_path, "after")
    assert preds_after == preds_before
    keep = ("top1", "top5", "loss", "images", "skipped")
    assert [r[k] for r in after["results"] for k in keep] == [r[k] for r in before["results"] for k in keep]
    assert after["results"][0]["weights_sha256"] == done["sha256"]
    assert after["results"][0]["weights"].startswith("alice/evaltiny@")
    x = torch.randn(2, 3, 56, 56)
    theirs = create_model("evaltiny", pretrained=True).eval()
    mine = create_model("evaltiny").eval()
    mine.load_state_dict({k.removeprefix("module."): v for k, v in original.items()})
    with torch.no_grad():
        assert torch.equal(theirs(x), mine(x))

    # the model card: the tables are the result files' numbers, with their conditions
    readme = repo.files["README.md"].decode()
    r = before["results"][0]
    assert f"| evaltiny | {r['top1']:.3f} | {r['top5']:.3f} | {r['loss']:.5f} | {r['images']:,} |" in readme
    assert before["env"]["date"] in readme and done["sha256"] in readme
    b = json.loads(bench.read_text())
    (brow,) = [row for row in b["results"] if row["model"] == "evaltiny"]
    assert f"| evaltiny | {brow['batch_size']} | {brow['throughput']:.1f} |" in readme
    assert "crop_pct 0.875" in readme and "resize 64 bicubic" in readme
    config = json.loads(repo.files["config.json"])
    assert config["architecture"] == "evaltiny" and config["num_classes"] == 1000
    assert config["pretrained_cfg"]["crop_pct"] == 0.875
    assert config["pretrained_cfg"]["input_size"] == [3, 56, 56]


def test_timm_loads_the_pushed_repository(fake_hub: FakeHub, checkpoint: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run(
        "push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/t", "--json"
    )
    assert code == 0, stderr
    script = (
        "import timm, torch, s2mlp_cli.models\n"
        "m = timm.create_model('hf-hub:alice/t', pretrained=True)\n"
        "cfg = m.pretrained_cfg\n"
        "print(cfg['crop_pct'], tuple(cfg['input_size']))\n"
        "torch.save(m.state_dict(), 'loaded.pt')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.875", "(3,", "56,", "56)"]
    loaded = torch.load(tmp_path / "loaded.pt", weights_only=True)
    original = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(loaded[k.removeprefix("module.")], v) for k, v in original.items())


def test_push_to_a_branch_leaves_main_alone(fake_hub: FakeHub, checkpoint: Path) -> None:
    fake_hub.add("alice/tiny", {"config.json": json.dumps({"architecture": "evaltiny"}).encode()})
    main_before = dict(fake_hub.repos["alice/tiny"].files)
    code, stdout, stderr = run(
        "push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/tiny", "--revision", "v1", "--json"
    )
    assert code == 0, stderr
    done = json.loads(stdout)
    repo = fake_hub.repos["alice/tiny"]
    assert repo.files == main_before and repo.branches["v1"] == done["commit"]
    code, stdout, stderr = run("pull", "evaltiny", "--repo", "alice/tiny", "--revision", "v1", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["results"][0]["sha256"] == done["sha256"]


def test_terminal_output_names_commit_and_pin(fake_hub: FakeHub, checkpoint: Path) -> None:
    code, stdout, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    assert code == 0, stderr
    head = fake_hub.repos["alice/x"].head
    assert head in stdout and "card pin: weights.repo alice/x, weights.revision " + head in stdout


def test_no_token(fake_hub: FakeHub, checkpoint: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "no Hugging Face token", "HF_TOKEN", "hf auth login")
    assert fake_hub.commits_made == [] and "alice/x" not in fake_hub.repos


def test_no_write_access(fake_hub: FakeHub, checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", OTHER)  # bob
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "no write access to alice/x")
    fake_hub.add("alice/public", {"config.json": b'{"architecture": "evaltiny"}'})
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/public")
    one_line_error(code, stderr, 1, "no write access to alice/public")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "refused the token")
    assert fake_hub.commits_made == []


@pytest.mark.parametrize(
    "files,message",
    [
        (
            {"config.json": b'{"architecture": "resnet50"}', "model.safetensors": b"x"},
            "another model (resnet50)",
        ),
        ({"pytorch_model.bin": b"x"}, "a model with no config.json"),
    ],
)
def test_refuses_a_repository_holding_another_model(fake_hub, checkpoint, files, message) -> None:
    fake_hub.add("alice/taken", files)
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/taken")
    one_line_error(code, stderr, 1, message)
    assert fake_hub.repos["alice/taken"].files == files and fake_hub.commits_made == []


def test_nothing_half_pushed_when_the_commit_fails(fake_hub: FakeHub, checkpoint: Path) -> None:
    fake_hub.add("alice/x", {"config.json": b'{"architecture": "evaltiny"}'})
    fake_hub.fail_commit = 422
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "refused the push to alice/x", "nothing was committed")
    assert set(fake_hub.repos["alice/x"].files) == {"config.json"} and fake_hub.commits_made == []
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    assert code == 0, stderr  # the same command again completes it
    assert set(fake_hub.repos["alice/x"].files) == {"config.json", "model.safetensors", "README.md"}


def test_hub_unreachable(fake_hub: FakeHub, checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, _, stderr = run("push", "evaltiny", "--weights", str(checkpoint), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "could not reach the Hub")


def test_weights_must_fit_and_be_finite(fake_hub: FakeHub, checkpoint: Path, tmp_path: Path) -> None:
    code, _, stderr = run("push", "hubtiny", "--weights", str(checkpoint), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "model_best.pth.tar")  # 1000 classes do not fit hubtiny's head
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    state["module.head.bias"][3] = float("nan")
    bad = tmp_path / "nan.safetensors"
    bad.write_bytes(save({k.removeprefix("module."): v for k, v in state.items()}))
    code, _, stderr = run("push", "evaltiny", "--weights", str(bad), "--repo", "alice/x")
    one_line_error(code, stderr, 1, "NaN or infinity", "head.bias")
    assert fake_hub.commits_made == []


def test_eval_result_of_other_weights_is_refused(fake_hub, checkpoint, val, tmp_path) -> None:
    other = tmp_path / "other.safetensors"
    torch.manual_seed(9)
    other.write_bytes(save(create_model("evaltiny").state_dict()))
    evaluate(val, tmp_path, "other", "--weights", str(other))
    code, _, stderr = run(
        "push",
        "evaltiny",
        "--weights",
        str(checkpoint),
        "--repo",
        "alice/x",
        "--eval",
        str(tmp_path / "other.json"),
    )
    one_line_error(code, stderr, 2, "--eval", "made with other weights")
    assert fake_hub.commits_made == []


def test_usage_errors_come_first_and_together(fake_hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"env": {}, "results": [{"model": "hubtiny"}]}')
    code, _, stderr = run(
        "push", "evaltiny", "--weights", str(tmp_path / "missing.pth"), "--repo", "not a repo",
        "--revision", "a" * 40, "--eval", str(tmp_path / "r.json"), "--bench", str(tmp_path / "nope.json"),
    )  # fmt: skip
    one_line_error(code, stderr, 2, "--weights", "--repo", "--revision", "--eval", "no finished result for")
    assert "--bench" in stderr
    code, _, stderr = run("push", "nosuch", "--weights", "x", "--repo", "a/b")
    assert code == 2 and "unknown model" in stderr
    assert fake_hub.requests == []
