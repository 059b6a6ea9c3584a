"""Eval at scale: the decoded-crop cache (bit-identical results), `s2mlp cache`, and torchrun sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
from helpers import Runner, check, run_eval

from s2mlp_cli.cli import main
from s2mlp_cli.data import Preprocess, cache, find_dataset, synsets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def val(setup, tmp_path: Path, items) -> Path:
    """The labelled set, plus one broken file, so the skip list must survive the cache too."""
    _, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    (root / synsets()[labels[0]] / "ILSVRC2012_val_00000999.JPEG").write_bytes(fi.truncated(items[0][1]))
    return root


def predictions(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_second_eval_reads_the_cache_and_gives_identical_results(setup, val: Path, tmp_path: Path) -> None:
    weights, _, expected = setup
    first_preds, second_preds = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    code, first, stderr = run_eval(weights, "--data", str(val), "--save-predictions", str(first_preds))
    assert code == 0, stderr
    assert first["env"]["cache"].startswith("built ")
    (entry,) = cache.entries()
    assert entry["status"] == "complete" and entry["images"] == 13 and entry["skipped"] == 1

    code, second, stderr = run_eval(weights, "--data", str(val), "--save-predictions", str(second_preds))
    assert code == 0, stderr
    assert second["env"]["cache"] == f"read {entry['name']}" and "from the cache" in stderr
    same = ("top1", "top5", "loss", "images", "skipped", "skipped_files")
    a, b = check(first, expected), check(second, expected)
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert predictions(first_preds) == predictions(second_preds)  # bit for bit, per image


def test_any_model_with_the_same_geometry_shares_the_entry(setup, val: Path) -> None:
    weights, _, _ = setup
    assert run_eval(weights, "--data", str(val))[0] == 0
    cli = ["eval", "--data", str(val), "--device", "cpu", "--workers", "0", "--json"]
    # evaltiny_b: another mean/std, the same geometry -> the same crops; evaltiny_c: crop 1.0 -> new entry
    for variant, read in (("evaltiny_b", True), ("evaltiny_c", False)):
        result = Runner().invoke(main, [*cli, "--variant", variant, "--weights", str(weights)])
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["env"]["cache"].startswith("read" if read else "built")
    assert len(cache.entries()) == 2


def test_cached_crops_equal_the_decoded_ones(setup, val: Path) -> None:
    weights, _, _ = setup
    assert run_eval(weights, "--data", str(val))[0] == 0
    ds = find_dataset(val)
    prep = Preprocess(56, 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    hit = cache.lookup(ds.samples, prep)
    from s2mlp_cli.data import EvalSet

    for i, (x, _, _, error) in enumerate(EvalSet(ds.samples, prep)):
        assert torch.equal(torch.from_numpy(hit.crops[i].copy()), x)
        assert hit.errors.get(i, "") == error


def test_a_changed_file_or_label_is_never_served_stale(setup, val: Path, items) -> None:
    weights, labels, _ = setup
    assert run_eval(weights, "--data", str(val))[0] == 0
    victim = next(p for p in sorted(val.rglob("*.JPEG")) if "00000999" not in p.name)
    victim.write_bytes(items[5][1])  # other content, new size / mtime
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    code, doc, stderr = run_eval(weights, "--data", str(val))
    assert code == 0, stderr
    assert doc["env"]["cache"].startswith("built") and len(cache.entries()) == 2


def test_no_cache_and_no_room_write_nothing(setup, val: Path, monkeypatch) -> None:
    weights, _, expected = setup
    code, doc, _ = run_eval(weights, "--data", str(val), "--no-cache")
    assert code == 0 and doc["env"]["cache"] == "off" and cache.entries() == []
    monkeypatch.setattr(cache, "room_for", lambda n, prep: False)
    code, doc, stderr = run_eval(weights, "--data", str(val))
    assert code == 0 and doc["env"]["cache"] == "off (not enough disk)" and cache.entries() == []
    check(doc, expected)


def test_an_interrupted_pass_leaves_no_entry(setup, val: Path, monkeypatch) -> None:
    weights, _, _ = setup
    import s2mlp_cli.evaluate as evaluate
    from s2mlp_cli.evaluate import loop

    calls = {"n": 0}

    class Interrupted(loop.Normalizer):
        def __call__(self, batch):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return super().__call__(batch)

    monkeypatch.setattr(loop, "Normalizer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(
            evaluate.EvalOptions(["evaltiny"], val, weights=weights, device="cpu", workers=0, batch_size=4)
        )
    assert cache.entries() == [] and not any(cache.cache_root().iterdir())


def test_cache_list_and_clear(setup, val: Path) -> None:
    weights, _, _ = setup
    assert run_eval(weights, "--data", str(val))[0] == 0
    (entry,) = cache.entries()
    result = Runner().invoke(main, ["cache", "list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert entry["name"] in result.stdout and "56px crop 0.875 bicubic" in result.stdout
    assert "1 entry," in result.stdout and f"{entry['bytes'] / 2**20:.1f} MiB" in result.stdout
    listed = json.loads(Runner().invoke(main, ["cache", "list", "--json"]).stdout)
    assert listed["entries"][0]["bytes"] == 13 * 3 * 56 * 56 + Path(entry["path"], "meta.json").stat().st_size
    for args in (["cache", "clear"], ["cache", "clear", "x", "--all"], ["cache", "clear", "nosuch"]):
        result = Runner().invoke(main, args)
        assert result.exit_code == 2 and "Traceback" not in result.stderr, args
    result = Runner().invoke(main, ["cache", "clear", entry["name"], "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["removed"] == [entry["name"]]
    assert cache.entries() == []


def test_gpu_decode_is_refused_without_a_gpu(setup, val: Path) -> None:
    weights, _, _ = setup
    code, _, stderr = run_eval(weights, "--data", str(val), "--decode", "gpu")
    assert code == 2 and "--decode: GPU decoding needs the GPU" in stderr


@pytest.mark.gpu
def test_gpu_decode_agrees_with_the_exact_path(setup, val: Path) -> None:
    weights, _, expected = setup
    cli = ["--data", str(val), "--device", "cuda", "--no-cache"]
    code, exact, stderr = run_eval(weights, *cli)
    assert code == 0, stderr
    code, fast, stderr = run_eval(weights, *cli, "--decode", "gpu")
    assert code == 0, stderr
    assert fast["results"][0]["images"] == exact["results"][0]["images"]
    assert abs(fast["results"][0]["top1"] - exact["results"][0]["top1"]) <= 100 / 12  # at most one image


@pytest.mark.slow  # processes
def test_torchrun_two_processes_report_the_single_process_numbers(setup, val: Path, tmp_path: Path) -> None:
    weights, _, expected = setup
    code, single, stderr = run_eval(weights, "--data", str(val), "--no-cache", "--batch-size", "5")
    assert code == 0, stderr
    out = tmp_path / "two.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "s2mlp_cli", "eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(val),
        "--device", "cpu", "--workers", "0", "--batch-size", "5", "--json", "--output", str(out),
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout)  # only the first process prints, and every process leaves its group
    said = [ln for ln in done.stderr.splitlines() if ln.startswith(("data:", "layout:", "set:"))]
    assert len(said) == 3 and "destroy_process_group" not in done.stderr, done.stderr[-3000:]
    assert json.loads(out.read_text())["results"] == two["results"]
    assert two["env"]["processes"] == 2 and two["env"]["cache"] == "off under torchrun"
    a, b = single["results"][0], two["results"][0]
    # 13 files over 2 processes: 7 + 6, one of them broken; nothing counted twice or dropped
    for key in ("top1", "top5", "images", "skipped", "skipped_files"):
        assert a[key] == b[key], key
    assert b["loss"] == pytest.approx(a["loss"], abs=2e-5)
    check(two, expected)
