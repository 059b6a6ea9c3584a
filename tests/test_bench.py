"""`s2mlp bench`: what it measures and reports. Nothing here depends on how fast this machine is."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from s2mlp_cli import report
from s2mlp_cli.bench import FAKE_OOM_ENV, Spec, measure
from s2mlp_cli.cli import main
from s2mlp_cli.cli.bench_cmd import MARKDOWN_COLUMNS, add_ratios, draw_plot, expand_models
from s2mlp_cli.models import create_model
from s2mlp_cli.stats import count_gmacs, count_params

QUICK = ["--batch-size", "2", "--iters", "2", "--warmup", "0", "--device", "cpu"]


def names(cards) -> list[str]:
    return [c.name for c in cards]


def test_families_expand_to_the_variants_peers() -> None:
    assert names(expand_models(["small"], ["vip", "gfnet"])) == [
        "s2mlpv2_small",
        "vip_s7",
        "gfnet_s",
        "gfnet_h_s",
    ]
    both = expand_models(["small", "medium"], ["mixer", "vip"])
    assert names(both) == [
        "s2mlpv2_small",
        "s2mlpv2_medium",
        "mixer_s16_224",
        "mixer_b16_224",
        "vip_s7",
        "vip_m7",
    ]
    assert names(expand_models(["medium"], ["s2mlp", "resmlp_24_224"])) == [
        "s2mlpv2_medium",
        "s2mlp_deep",
        "s2mlp_wide",
        "resmlp_24_224",
    ]
    assert names(expand_models(["small"], ["vip_s7", "VIP"])) == ["s2mlpv2_small", "vip_s7"]  # no duplicates
    with pytest.raises(click.BadParameter, match="no s2mlp peers listed for s2mlpv2_small"):
        expand_models(["small"], ["s2mlp"])
    with pytest.raises(click.BadParameter, match="or a family: vip, gfnet"):
        expand_models(["small"], ["vipp"])


def test_measure_reports_the_built_models_counts_and_a_consistent_schema(zoo: Path) -> None:
    r = measure(Spec("tiny", batch_size=3, iters=4, warmup=1, bs1_iters=5)).to_dict()
    assert r["status"] == "ok" and r["model"] == "s2mlpv2_tiny"
    model = create_model("tiny")
    assert r["params_m"] == round(count_params(model) / 1e6, 3)
    assert r["gmacs"] == round(count_gmacs(model, 56), 3)
    assert r["batch_size"] == r["requested_batch_size"] == 3 and r["img_size"] == 56
    lat = r["latency_ms"]
    assert lat["n"] == 4 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert r["latency_bs1_ms"]["n"] == 5 and r["latency_bs1_ms"]["p50"] <= r["latency_bs1_ms"]["p99"]
    assert r["throughput"] == pytest.approx(3 / (lat["p50"] / 1000), rel=1e-3)
    lo, hi = r["throughput_iqr"]
    assert lo <= r["throughput"] <= hi
    assert r["peak_memory_mib"] >= r["extra"]["baseline_rss_mib"] > 0
    assert r["memory_kind"] == "peak RSS of the worker process"
    assert r["dtype"] == "float32" and r["paper_top1"] == 50.0 and r["threads"] == torch.get_num_threads()


def test_training_throughput(zoo: Path) -> None:
    r = measure(Spec("tiny", batch_size=2, iters=2, warmup=0, bs1_iters=2, train=True))
    assert r.train_throughput > 0 and r.train_peak_memory_mib >= r.peak_memory_mib


def test_out_of_memory_row_and_auto_batch(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "2")
    r = measure(Spec("tiny", batch_size=8, iters=2, warmup=0, bs1_iters=2))
    assert r.status == "oom" and "out of memory at batch 8" in r.detail and "--auto-batch" in r.detail
    assert r.throughput is None
    r = measure(Spec("tiny", batch_size=8, iters=2, warmup=0, bs1_iters=2, auto_batch=True))
    assert r.status == "ok" and r.batch_size == 2 and r.requested_batch_size == 8
    assert "batch 8 ran out of memory; measured at 2" in r.detail


def test_a_size_the_model_cannot_run_is_a_row_not_a_crash(zoo: Path) -> None:
    r = measure(Spec("vip_tiny", batch_size=2, img_size=112, iters=2, warmup=0))
    assert r.status == "unsupported" and "ViP cannot run at img_size 112" in r.detail
    r = measure(Spec("tiny", batch_size=2, img_size=60, iters=2, warmup=0))
    assert r.status == "unsupported" and "not divisible" in r.detail


def test_cli_end_to_end_in_worker_processes(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each model in its own process: ratios, rows that could not run, JSON schema, Markdown file."""
    monkeypatch.setenv(FAKE_OOM_ENV, "1")  # every batch above 1 "runs out of memory"
    out_md = tmp_path / "res" / "bench.md"
    args = ["bench", "--variant", "tiny", "--compare", "vip", "--img-size", "112", "--auto-batch", *QUICK]
    result = CliRunner().invoke(main, [*args, "--json", "--output", str(out_md)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"device", "device_name", "torch", "cpu_threads", "dtype", "math_mode", "iters"} <= set(doc["env"])
    assert doc["env"]["math_mode"] == "fp32" and doc["env"]["isolation"] == "one process per model"
    tiny, vip = doc["results"]
    for key in (
        "model",
        "params_m",
        "gmacs",
        "throughput",
        "latency_ms",
        "latency_bs1_ms",
        "peak_memory_mib",
    ):
        assert key in tiny
    assert tiny["status"] == "ok" and tiny["batch_size"] == 1 and tiny["requested_batch_size"] == 2
    assert (
        tiny["throughput_ratio"] == 1.0 and tiny["memory_ratio"] == 1.0 and tiny["reference"] == tiny["model"]
    )
    assert vip["model"] == "vip_tiny" and vip["status"] == "unsupported" and "ViP cannot run" in vip["detail"]
    text = out_md.read_text()
    assert text.startswith("### s2mlp bench") and "| s2mlpv2_tiny |" in text and "- math_mode: fp32" in text
    assert not [p for p in out_md.parent.iterdir() if p.name != "bench.md"]  # no temporary left behind


def test_ratios_are_to_the_first_s2mlpv2_row_at_the_same_batch() -> None:
    rows = [
        {
            "model": "vip",
            "family": "vip",
            "status": "ok",
            "batch_size": 8,
            "throughput": 30.0,
            "peak_memory_mib": 300.0,
        },
        {
            "model": "s2",
            "family": "s2mlpv2",
            "status": "ok",
            "batch_size": 8,
            "throughput": 20.0,
            "peak_memory_mib": 200.0,
        },
        {
            "model": "s2",
            "family": "s2mlpv2",
            "status": "ok",
            "batch_size": 1,
            "throughput": 5.0,
            "peak_memory_mib": 100.0,
        },
        {
            "model": "g",
            "family": "gfnet",
            "status": "oom",
            "batch_size": None,
            "throughput": None,
            "peak_memory_mib": None,
        },
    ]
    add_ratios(rows)
    assert [r["throughput_ratio"] for r in rows] == [1.5, 1.0, 1.0, None]
    assert [r["memory_ratio"] for r in rows] == [1.5, 1.0, 1.0, None]


def test_output_formats(tmp_path: Path) -> None:
    doc = report.document(
        {"device": "cpu", "device_name": "cpu", "torch": "x"},
        [
            {
                "model": "a|b",
                "status": "ok",
                "detail": "",
                "params_m": 1.0,
                "gmacs": 2.0,
                "batch_size": 4,
                "requested_batch_size": 4,
                "throughput": 10.0,
                "throughput_iqr": [9.0, 11.0],
                "throughput_ratio": 1.0,
                "latency_ms": {"p50": 400.0, "p90": 410.0},
                "latency_bs1_ms": {"p50": 100.0, "p99": 120.0},
                "peak_memory_mib": 5.0,
                "memory_ratio": 1.0,
                "paper_top1": None,
            }
        ],
    )
    for suffix in (".json", ".csv", ".md"):
        report.write(str(tmp_path / f"r{suffix}"), doc, MARKDOWN_COLUMNS, "t")
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    (row,) = csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text()))
    assert row["latency_ms_p50"] == "400.0" and row["throughput_iqr"] == "9.0 11.0" and row["model"] == "a|b"
    md = (tmp_path / "r.md").read_text()
    assert (
        "| a\\|b | 1.00 | 2.00 | 4 | 10.0 | 9.0–11.0 | 1.00 | 400.0 / 410.0 | 100.0 / 120.0 | 5 | 1.00 | - |"
        in md
    )
    with pytest.raises(ValueError, match="use .json, .csv, .md"):
        report.output_format("r.txt")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--output", "r.txt"], "unknown output format '.txt'"),
        (["--amp", "fp16"], "fp16 autocast is for the GPU"),
        (["--batch-size", "8,x"], "expected integers"),
        (["--batch-size", "0"], "must be positive"),
        (["--variant", "tiny,vip_tiny", "--weights", __file__], "one model"),
        (["--variant", "nosuch"], "unknown model 'nosuch'"),
    ],
)
def test_bad_options_exit_2_before_running(zoo: Path, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, ["bench", "--device", "cpu", "--variant", "tiny", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cuda_requested_without_a_gpu(zoo: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "--variant", "tiny", "--device", "cuda"])
    assert result.exit_code == 1 and "use --device cpu" in result.stderr


def test_plot(tmp_path: Path, zoo: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(
            main, ["bench", "--variant", "tiny", "--plot", str(tmp_path / "p.png"), *QUICK]
        )
        assert result.exit_code == 1 and "pip install 's2mlp[plot]'" in result.stderr
        return
    rows = [
        {
            "model": "a",
            "family": "s2mlpv2",
            "status": "ok",
            "throughput": 10.0,
            "paper_top1": 80.0,
            "params_m": 25.0,
        },
        {
            "model": "b",
            "family": "vip",
            "status": "ok",
            "throughput": 7.0,
            "paper_top1": 79.0,
            "params_m": 24.0,
        },
    ]
    draw_plot(rows, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.gpu
def test_cuda_bf16_channels_last(zoo: Path) -> None:
    r = measure(Spec("tiny", batch_size=4, device="cuda", amp="bf16", channels_last=True, iters=3, warmup=1))
    assert r.status == "ok" and r.memory_kind == "max_memory_allocated" and r.peak_memory_mib > 0
    assert r.dtype == "bfloat16 (autocast)"
