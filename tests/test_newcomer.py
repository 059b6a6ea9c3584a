"""A newcomer's first hour: progress that shows the tool is alive, Ctrl-C that says what it kept, tables
that fit 80 and 100 columns whole, several problems as a list, and the small words right."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fakeimagenet as fi
import pytest
from helpers import Runner, one_line_error, run
from rich.cells import cell_len
from rich.console import Console

from s2mlp_cli.cli import main

WIDTHS = (80, 100)


def rendered(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def whole(text: str, width: int) -> None:
    assert "…" not in text, text
    assert max(cell_len(line) for line in text.splitlines()) <= width, text


# --- progress ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # worker processes
def test_bench_says_it_is_alive_before_the_first_timed_round(zoo: Path) -> None:
    from s2mlp_cli.bench import BenchOptions
    from s2mlp_cli.bench import run as bench

    lines: list[tuple[float, str]] = []
    opts = BenchOptions(variants=["tiny"], compare=[], device="cpu", batch_sizes=[2], warmup=1, iters=2,
                        rounds=2)  # fmt: skip
    bench(opts, on_progress=lambda line: lines.append((time.monotonic(), line)))
    said = [line for _, line in lines]
    assert said[0] == "s2mlpv2_tiny at batch 2: warming up (1 call)"
    first_round = next(i for i, line in enumerate(said) if "round 1/2" in line)
    assert first_round > said.index(next(s for s in said if "warmed up in" in s)) > 0
    assert "about" in said[first_round] and "left" in said[first_round]  # an estimate from the measured round


def test_estimate_is_updated_from_what_was_measured() -> None:
    from s2mlp_cli.bench.request import Plan
    from s2mlp_cli.bench.runner import _Clock

    plan = Plan.__new__(Plan)
    plan.batch_sizes, plan.models, plan.rounds, plan.estimate_s = [2, 4], ["a", "b"], 3, 10.0
    said: list[str] = []
    clock = _Clock(plan, said.append)
    clock.warmups += [2.0, 4.0]
    clock.round_done(2, 1, 1.5)
    # 2 rounds left here at 1.5 s; then batch 4: 2 warm-ups at 3 s and 3 rounds at 1.5 s
    assert said == ["batch 2: round 1/3 timed in 1.5 s; about 13 s left"]
    clock.start -= 100  # the run has taken far longer than its first estimate
    clock.finish()
    assert said[-1].startswith("took 1 min 40 s, 10.0x the first estimate (~10 s)")


def test_eval_progress_off_a_terminal(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    code, _, stderr = run("eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(root),
                          "--device", "cpu", "--workers", "0", "--batch-size", "2", "--no-cache")  # fmt: skip
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("pass 1/1: evaltiny:")]
    assert lines and lines[-1].startswith("pass 1/1: evaltiny: 12/12 img (100%)"), stderr
    assert 2 <= len(lines) <= 11  # every ~10%, not every batch


@pytest.mark.slow  # a process
def test_ctrl_c_on_eval_exits_130_saying_nothing_was_written(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = tmp_path / "val"
    for k in range(40):  # 480 images: long enough to be interrupted
        for (name, data), label in zip(items, labels, strict=True):
            folder = root / fi.synsets()[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{k}_{name}").write_bytes(data)
    out = tmp_path / "eval.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2mlp_cli", "eval", "--variant", "evaltiny", "--weights", str(weights),
         "--data", str(root), "--device", "cpu", "--workers", "0", "--batch-size", "2", "--no-cache",
         "--output", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C's default in the child even when the suite runs in the background (`cmd &` in a script
        # starts it with SIGINT ignored, which the child would inherit, as `nohup s2mlp eval &` should)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    for line in proc.stderr:  # the first progress line: the pass is under way
        if line.startswith("pass 1/1"):
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    one_line_error(proc.returncode, rest.strip().splitlines()[-1], 130, "stopped by Ctrl-C", "nothing")
    assert not out.exists() and not list(tmp_path.glob(".eval.json.*"))


# --- tables at 80 and 100 columns -------------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", [["list"], ["info", "medium"], ["info", "gfnet_h_b"]])
def test_zoo_tables_fit(width: int, command: list[str]) -> None:
    env = {**os.environ, "COLUMNS": str(width)}
    done = subprocess.run(
        [sys.executable, "-m", "s2mlp_cli", *command], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    whole(done.stdout, width)
    assert "s2mlpv2_medium" in done.stdout or "gfnet_h_b" in done.stdout


def _bench_doc() -> dict:
    row = {
        "model": "s2mlpv2_medium", "status": "ok", "detail": "", "params_m": 208.2, "gmacs": 44.55,
        "batch_size": 256, "requested_batch_size": 256, "throughput": 12345.6,
        "throughput_iqr": [12000.1, 12500.9], "throughput_ratio": 1.23,
        "latency_bs1_ms": {"p50": 1234.5, "p99": 2345.6}, "peak_memory_mib": 123456.0,
        "paper_top1": 83.6, "extra": {},
    }  # fmt: skip
    oom = {**row, "model": "gfnet_h_b", "status": "oom", "detail": "out of memory at batch 256"}
    return {"env": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.14.1"},
            "results": [row, oom]}  # fmt: skip


def _eval_doc(sets: list[str]) -> dict:
    base = {
        "model": "s2mlpv2_medium", "top1": 83.123, "top5": 96.456, "loss": 0.81234, "images": 50000,
        "skipped": 12, "images_per_s": 12345.6, "paper_top1": 83.6, "delta_top1": -0.477, "weights": "w",
        "preprocess": {"resize": 248, "interpolation": "bicubic", "input_size": 224, "crop_pct": 0.9,
                       "mean": [0.5] * 3, "std": [0.5] * 3},
        "top1_ci95": [82.79, 83.45], "top5_ci95": [96.2, 96.6], "paper_in_ci95": False,
        "set_shape": "the full validation set: 50,000 images, 50 per class", "set_name": "ImageNet-1k val",
    }  # fmt: skip
    rows = [{**base, "model": m, "set": s} for s in sets for m in ("s2mlpv2_medium", "gfnet_h_b")]
    comparisons = [{"a": "s2mlpv2_medium", "b": "gfnet_h_b", "set": s, "a_only": 1234, "b_only": 1200,
                    "p_value": 0.51, "significant": False} for s in sets]  # fmt: skip
    env = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.14.1", "math_mode": "fp32",
           "batch_size": 256, "workers": 8}  # fmt: skip
    return {"env": env, "results": rows, "comparisons": comparisons}


@pytest.mark.parametrize("width", WIDTHS)
def test_result_tables_fit(width: int) -> None:
    from s2mlp_cli.report import bench_tables, eval_tables, pull_table, train_tables

    pulled = [
        {"variant": "mixer_b16_224", "status": "pulled", "source": "timm/mixer_b16_224.goog_in21k_ft_in1k",
         "verified": "sha256 (card)", "size": 240 * 2**20,
         "path": "/home/someone/.cache/huggingface/hub/models--timm--mixer_b16_224/snapshots/x/"
                 "model.safetensors"},
        {"variant": "s2mlpv2_medium", "status": "failed",
         "detail": "no pretrained weights are published for s2mlpv2_medium; "
                   "s2mlp pull medium --repo ORG/NAME"},
    ]  # fmt: skip
    train = {"env": {}, "results": [{"model": "s2mlpv2_medium", "epochs": 300, "best_top1": 83.1,
                                     "best_top5": 96.4, "best_epoch": 290, "best_from": "ema",
                                     "last_top1": 83.0, "weights": "runs/m/best.safetensors"}]}  # fmt: skip
    for parts in (
        bench_tables(_bench_doc()),
        eval_tables(_eval_doc(["val"])),
        eval_tables(_eval_doc(["val", "real", "v2", "a"])),
        [pull_table(pulled)],
        train_tables(train),
    ):
        text = rendered(parts[0], width)
        whole(text, width)
        assert "s2mlpv2_medium" in text or "mixer_b16_224" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_cache_list_fits_and_says_when_empty(zoo: Path, width: int, setup, tmp_path: Path, items) -> None:
    env = {"COLUMNS": str(width)}
    code, stdout, _ = run("cache", "list", env=env)
    assert code == 0 and stdout.startswith("no cache entries in ")
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    code, _, stderr = run("eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(root),
                          "--device", "cpu", "--workers", "0")  # fmt: skip
    assert code == 0, stderr
    from s2mlp_cli.cli.cache_cmd import cache_command  # noqa: F401  (the table the command prints)
    from s2mlp_cli.data import cache
    from s2mlp_cli.report import FitTable

    rows = cache.entries()
    assert rows
    columns = [("entry", lambda r: r["name"]), ("dataset / status", lambda r: r["dataset"])]
    whole(rendered(FitTable("s2mlp cache", columns, rows, wrap=("dataset / status",)), width), width)


def test_a_column_left_out_is_said() -> None:
    from s2mlp_cli.report import FitTable

    columns = [("model", lambda r: r["m"]), ("top-1", lambda r: "80.0%"), ("notes", lambda r: "x" * 60)]
    text = rendered(FitTable("t", columns, [{"m": "s2mlpv2_medium"}], keep=("top-1",)), 60)
    assert (
        "notes" not in text.splitlines()[1]
        and "left out at this width: notes (--json has every field)" in text
    )


# --- words ------------------------------------------------------------------------------------------------


def test_several_problems_are_a_list_under_one_error_line(tmp_path: Path) -> None:
    code, _, stderr = run("eval", "--variant", "nosuch", "--data", str(tmp_path / "missing"),
                          "--output", str(tmp_path / "x.txt"))  # fmt: skip
    one_line_error(code, stderr, 2, "3 problems:", "  - --variant: unknown model 'nosuch'", "  - --data:",
                   "  - --output:")  # fmt: skip


def test_counts_have_their_plural() -> None:
    from s2mlp_cli.data.samples import Dataset, ImageFile, Sample

    one = Dataset("A", "/x", [Sample("a", 3, ImageFile("/x/a"))])
    assert one.shape() == "a subset: 1 image in 1 class (1 per class), not the full 50,000"


def test_markdown_eval_result_names_weights_and_preprocessing(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    out = tmp_path / "eval.md"
    args = ["eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(root)]
    result = Runner().invoke(main, [*args, "--device", "cpu", "--workers", "0", "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert "- evaltiny: resize 64 bicubic, centre crop 56 (crop_pct 0.875)" in text
    assert f"weights {weights}, sha256 " in text and "not recorded" not in text
