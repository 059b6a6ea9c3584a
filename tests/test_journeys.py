"""What a user does in sequence, across commands: demo data, a model trained on your own classes
evaluated, published and pulled back, a short run with the default recipe, and files that do not
change when nothing changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fakehub import FakeHub
from helpers import one_line_error, run
from PIL import Image

from s2mlp_cli.files import umask

TOKEN = "hf_alice_token"
CPU = ["--device", "cpu", "--workers", "0"]
SHORT = [
    "--batch-size",
    "10",
    "--lr",
    "0.01",
    "--set",
    "warmup_epochs=0",
    "--set",
    "mixup=0",
    "--set",
    "cutmix=0",
]


@pytest.fixture
def fake_hub(zoo: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as server:
        server.tokens = {TOKEN: "alice"}
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


@pytest.fixture
def ten_classes(tmp_path: Path) -> Path:
    """train/ and val/ folders of 10 classes of your own (shades a tiny model tells apart)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shades"
    for split, n in (("train", 3), ("val", 1)):
        for c in range(10):
            folder = root / split / f"shade_{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(25 * c + rng.normal(0, 8, (40, 48, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _imported(tmp_path: Path, *variants: str) -> None:
    """Random weights for each variant, imported as a user would (`pull --from`)."""
    import torch
    from safetensors.torch import save_file

    from s2mlp_cli import create_model

    for name in variants:
        torch.manual_seed(0)
        path = tmp_path / f"{name}.safetensors"
        save_file(create_model(name).state_dict(), str(path))
        code, _, stderr = run("pull", name, "--from", str(path))
        assert code == 0, stderr


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_writes_the_set_the_docs_use_and_refuses_a_folder_of_yours(tmp_path: Path) -> None:
    code, stdout, stderr = run("demo", str(tmp_path / "demo"), "--json")
    assert code == 0, stderr
    row = json.loads(stdout)["results"][0]
    assert (row["train_images"], row["val_images"], row["classes"]) == (12, 6, 3)
    demo = tmp_path / "demo"
    assert len(list((demo / "val").rglob("ILSVRC2012_val_*.JPEG"))) == 6
    assert len(json.loads((demo / "real.json").read_text())) == 6
    assert sorted(p.name for p in (demo / "colours" / "train").iterdir()) == ["blue", "green", "red"]
    first = {p.relative_to(demo): _sha(p) for p in demo.rglob("*") if p.is_file()}
    code, _, stderr = run("demo", str(demo))  # an earlier demo is replaced: the same bytes
    assert code == 0, stderr
    assert first == {p.relative_to(demo): _sha(p) for p in demo.rglob("*") if p.is_file()}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, stderr = run("demo", str(mine))
    one_line_error(code, stderr, 2, "not empty and not a demo folder")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left beside
    assert demo.stat().st_mode & 0o777 == 0o777 & ~umask()  # a folder as mkdir makes it, not a private one


def test_ten_of_your_own_classes_train_eval_push_pull(
    fake_hub: FakeHub, ten_classes: Path, tmp_path: Path
) -> None:
    """evaltiny's card has 1000 classes; a run on 10 folders carries their names to eval, push and pull."""
    run_dir = tmp_path / "run"
    code, stdout, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(ten_classes), "--num-classes", "10", "--epochs", "1",
        *SHORT, *CPU, "--output", str(run_dir), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    doc = json.loads(stdout)
    best = run_dir / "best.safetensors"
    assert any(c.startswith(f"s2mlp eval --variant evaltiny --weights {best}") for c in doc["next"])

    out, preds = tmp_path / "eval.json", tmp_path / "preds.jsonl"
    val = ten_classes / "val"
    code, _, stderr = run(
        "eval", "--variant", "evaltiny", "--weights", str(best), "--data", str(val), *CPU,
        "--output", str(out), "--save-predictions", str(preds),
    )  # fmt: skip
    assert code == 0, stderr
    row = json.loads(out.read_text())["results"][0]
    assert row["images"] == 10 and row["set"] == "own" and row["paper_top1"] is None
    first = json.loads(preds.read_text().splitlines()[0])
    assert first["top5_names"][0].startswith("shade_") and len(first["top5"]) == 5

    code, stdout, stderr = run(
        "push", "evaltiny", "--weights", str(best), "--repo", "alice/shades", "--eval", str(out), "--json"
    )
    assert code == 0, stderr
    files = fake_hub.repos["alice/shades"]
    config = json.loads(files.files["config.json"])
    assert config["num_classes"] == 10 and config["label_names"] == [f"shade_{c}" for c in range(10)]
    assert "10 of the run's own" in files.files["README.md"].decode()

    code, _, stderr = run("pull", "evaltiny", "--repo", "alice/shades")
    assert code == 0, stderr
    again = tmp_path / "again.json"
    code, _, stderr = run("eval", "--variant", "evaltiny", "--data", str(val), *CPU, "--output", str(again))
    assert code == 0, stderr
    assert json.loads(again.read_text())["results"][0]["top1"] == row["top1"]

    code, _, stderr = run(
        "eval", "--variant", "evaltiny", "--weights", str(best), "--data", str(ten_classes / "x"), *CPU
    )
    assert code == 2
    (tmp_path / "wnids" / "n01440764").mkdir(parents=True)
    code, _, stderr = run(
        "eval", "--variant", "evaltiny", "--weights", str(best), "--data", str(tmp_path / "wnids"), *CPU
    )
    one_line_error(code, stderr, 1, "is not one of the 10 classes the weights were trained on")


def test_two_epochs_of_the_default_recipe_run_and_say_what_changed(
    zoo: Path, ten_classes: Path, tmp_path: Path
) -> None:
    """The paper recipe warms up for 10 epochs; a 2-epoch run shortens the warm-up and says so."""
    code, stdout, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(ten_classes), "--num-classes", "10", "--epochs", "2",
        "--batch-size", "10", *CPU, "--output", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    notes = [ln for ln in stderr.splitlines() if "warmup_epochs" in ln]
    assert notes == [
        "the recipe's warmup_epochs 10 (of 300 epochs) is as long as this 2-epoch run: "
        "shortened to 0 in proportion"
    ], stderr
    assert len(json.loads(stdout)["results"]) == 1


def test_the_same_run_twice_writes_the_same_bytes(zoo: Path, ten_classes: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        code, _, stderr = run(
            "train", "--variant", "evaltiny", "--data", str(ten_classes), "--num-classes", "10",
            "--epochs", "1", *SHORT, *CPU, "--output", str(tmp_path / name),
        )  # fmt: skip
        assert code == 0, stderr
    for file in ("best.safetensors", "last.safetensors"):
        assert _sha(tmp_path / "a" / file) == _sha(tmp_path / "b" / file), file


def test_a_warm_up_you_set_that_leaves_no_epoch_names_your_options(
    zoo: Path, ten_classes: Path, tmp_path: Path
) -> None:
    code, _, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(ten_classes), "--num-classes", "10", "--epochs", "2",
        "--set", "warmup_epochs=3", *CPU, "--output", str(tmp_path / "run"),
    )  # fmt: skip
    one_line_error(code, stderr, 2, "--set: warmup_epochs=3 leaves no epoch of the schedule in --epochs 2")


def test_eval_reads_what_it_is_given(zoo: Path, tmp_path: Path) -> None:
    """A dataset root (as train takes it) means its val/, said; a training split is warned about; a
    folder as --weights is named as one."""
    code, _, stderr = run("demo", str(tmp_path / "demo"))
    assert code == 0, stderr
    demo = tmp_path / "demo"
    _imported(tmp_path, "evaltiny")
    code, stdout, stderr = run("eval", "--variant", "evaltiny", "--data", str(demo), *CPU, "--json")
    assert code == 0, stderr
    assert f"{demo} holds a dataset's splits: evaluating its val/ split" in stderr
    assert json.loads(stdout)["results"][0]["images"] == 6
    code, _, stderr = run("eval", "--variant", "evaltiny", "--data", str(demo / "train"), *CPU)
    assert code == 0 and f"{demo / 'train'} looks like a training split (it is named train)" in stderr
    code, _, stderr = run("eval", "--variant", "evaltiny", "--weights", str(demo), "--data", str(demo), *CPU)
    one_line_error(code, stderr, 2, "--weights", "is a folder; name a weights file in it")


def test_ctrl_c_in_a_multi_model_eval_keeps_the_models_that_finished(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaltiny and evaltiny_c crop differently: two passes. Ctrl-C in the second keeps the first's row,
    printed and written (marked partial), and exits 130."""
    from s2mlp_cli.evaluate import loop

    code, _, stderr = run("demo", str(tmp_path / "demo"))
    assert code == 0, stderr
    _imported(tmp_path, "evaltiny", "evaltiny_c")
    real_pass, calls = loop._one_pass, []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(loop, "_one_pass", stopping)
    out = tmp_path / "eval.json"
    code, stdout, stderr = run(
        "eval", "--variant", "evaltiny,evaltiny_c", "--data", str(tmp_path / "demo" / "val"), *CPU,
        "--output", str(out), "--json",
    )  # fmt: skip
    assert code == 130, stderr
    doc = json.loads(stdout)
    assert doc["partial"] is True and [r["model"] for r in doc["results"]] == ["evaltiny"]
    assert json.loads(out.read_text())["results"] == doc["results"]
    assert "stopped by SIGINT: 1 row(s) of evaltiny kept, written to" in stderr


def test_pull_says_each_failure_once_and_json_says_it_too(zoo: Path) -> None:
    code, stdout, stderr = run("pull", "s2mlpv2_tiny", "--json")
    assert code == 1
    row = json.loads(stdout)["results"][0]
    assert row["status"] == "failed" and "no pretrained weights are published" in row["detail"]
    assert stderr.count("no pretrained weights are published") == 1


def test_cpu_threads_never_outnumber_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from s2mlp_cli import runtime

    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert runtime.cpu_threads(workers=2)[0] == 1  # 2 cores, 2 loader workers: 1 thread, not 2
    assert runtime.cpu_threads(workers=0)[0] == 2
    assert runtime.cpu_threads(workers=0, processes=2)[0] == 1  # torchrun: the cores are shared
    assert runtime.cpu_threads(workers=8, override=3) == (3, "3 (--threads)")
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)
    assert runtime.cpu_threads(workers=4, processes=2) == (
        4,
        "4: 16 cores / 2 processes, less 4 loader workers",
    )


def test_a_training_run_gives_back_the_callers_thread_count(
    zoo: Path, ten_classes: Path, tmp_path: Path
) -> None:
    import torch

    before = torch.get_num_threads()
    code, _, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(ten_classes), "--num-classes", "10", "--epochs", "1",
        *SHORT, "--device", "cpu", "--workers", "0", "--threads", "1", "--output", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, stderr
    assert "cpu threads 1 (--threads)" in stderr and torch.get_num_threads() == before
