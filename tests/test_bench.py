"""`s2mlp bench`: what it measures and reports. Nothing here depends on how fast this machine is."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from helpers import Runner

from s2mlp_cli import report
from s2mlp_cli.api import create_model
from s2mlp_cli.bench import Row, Settings, Spec, add_ratios, draw_plot, expand_models, measure, summarize
from s2mlp_cli.bench.stats import count_gmacs, count_params
from s2mlp_cli.cli import main
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.report import BENCH_COLUMNS

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
    with pytest.raises(S2MLPError, match="no s2mlp peers listed for s2mlpv2_small"):
        expand_models(["small"], ["s2mlp"])
    with pytest.raises(S2MLPError, match="or a family: s2mlpv2, s2mlp, vip, gfnet"):
        expand_models(["small"], ["vipp"])


def test_measure_reports_the_built_models_counts_and_a_consistent_schema(zoo: Path) -> None:
    r = measure(Spec("tiny", 3, Settings(iters=4, warmup=1), bs1_iters=5)).to_dict()
    assert r["status"] == "ok" and r["model"] == "s2mlpv2_tiny"
    model = create_model("tiny")
    assert r["params_m"] == round(count_params(model) / 1e6, 3)
    assert r["gmacs"] == round(count_gmacs(model, 56), 2)  # as the cards round it
    assert r["batch_size"] == r["requested_batch_size"] == 3 and r["img_size"] == 56
    lat = r["latency_ms"]
    assert lat["n"] == 4 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert r["latency_bs1_ms"]["n"] == 5 and r["latency_bs1_ms"]["p50"] <= r["latency_bs1_ms"]["p99"]
    assert r["throughput"] == pytest.approx(3 / (lat["p50"] / 1000), rel=1e-3)
    assert len(r["throughput_iqr"]) == 2 and r["round_throughputs"] == [r["throughput"]]  # one round
    assert r["peak_memory_mib"] >= r["extra"]["baseline_rss_mib"] > 0
    assert r["memory_kind"] == "peak RSS of the worker process"
    assert r["dtype"] == "float32" and r["paper_top1"] == 50.0 and r["threads"] == torch.get_num_threads()


def test_summary_statistics_from_known_times() -> None:
    """Throughput from the median call, the IQR from the 25th/75th percentile times (numpy's linear rule),
    one throughput per round, and batch-1 latency from its own calls."""
    r = Row("m", batch_size=4)
    summarize(r, [[0.1, 0.2], [0.3, 0.5]], bs1=[0.01, 0.03, 0.02])
    assert r.throughput == round(4 / 0.25, 2)  # median of 0.1, 0.2, 0.3, 0.5
    assert r.throughput_iqr == [round(4 / 0.35, 2), round(4 / 0.175, 2)]  # p75 0.35, p25 0.175
    assert r.round_throughputs == [round(4 / 0.15, 2), round(4 / 0.4, 2)]
    assert r.latency_ms == {"p50": 250.0, "p90": 440.0, "mean": 275.0, "std": 170.783, "min": 100.0,
                            "max": 500.0, "n": 4}  # fmt: skip
    assert r.latency_bs1_ms == {"p50": 20.0, "p99": 29.8, "mean": 20.0, "n": 3, "measured_in_batch": 4}


def test_training_throughput(zoo: Path) -> None:
    r = measure(Spec("tiny", 2, Settings(iters=2, warmup=0, train=True), bs1_iters=2))
    assert r.train_throughput > 0 and isinstance(r.train_peak_memory_mib, float)
    note = f"train {r.train_throughput:.1f} img/s, {r.train_peak_memory_mib:.0f} MiB"
    assert report.bench_note(r.to_dict()) == note


def test_a_size_the_model_cannot_run_is_a_row_not_a_crash(zoo: Path) -> None:
    r = measure(Spec("vip_tiny", 2, Settings(img_size=112, iters=2, warmup=0)))
    assert r.status == "unsupported" and "ViP cannot run at img_size 112" in r.detail
    r = measure(Spec("tiny", 2, Settings(img_size=10, iters=2, warmup=0)))
    assert r.status == "unsupported" and "smaller than the model's total stride" in r.detail


@pytest.mark.slow  # processes
def test_cli_end_to_end_in_worker_processes(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each model in its own process: ratios, rows that could not run, JSON schema, Markdown file."""
    out_md = tmp_path / "res" / "bench.md"
    args = ["bench", "--variant", "tiny", "--compare", "vip", "--img-size", "112", *QUICK]
    result = Runner().invoke(main, [*args, "--json", "--output", str(out_md)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"device", "device_name", "torch", "cpu_threads", "dtype", "math_mode", "iters"} <= set(doc["env"])
    assert doc["env"]["math_mode"] == "fp32" and doc["env"]["isolation"].startswith("one process per model")
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
    assert tiny["status"] == "ok" and tiny["batch_size"] == tiny["requested_batch_size"] == 2
    assert (
        tiny["throughput_ratio"] == 1.0 and tiny["memory_ratio"] == 1.0 and tiny["reference"] == tiny["model"]
    )
    assert vip["model"] == "vip_tiny" and vip["status"] == "unsupported" and "ViP cannot run" in vip["detail"]
    text = out_md.read_text()
    assert text.startswith("### s2mlp bench") and "| s2mlpv2_tiny |" in text and "- math_mode: fp32" in text
    assert not [p for p in out_md.parent.iterdir() if p.name != "bench.md"]  # no temporary left behind


def test_ratios_are_to_the_s2mlpv2_variant_of_each_size_class() -> None:
    from s2mlp_cli.zoo import get_card

    def row(model, batch, throughput, rounds=None, status="ok"):
        memory = None if throughput is None else 10 * throughput
        return Row(model, status, batch_size=batch, throughput=throughput, peak_memory_mib=memory,
                   round_throughputs=rounds)  # fmt: skip

    benched = [get_card(n) for n in ("s2mlpv2_small", "s2mlpv2_medium", "vip_s7", "vip_m7", "vip_l7")]
    rows = [
        row("s2mlpv2_small", 8, 20.0, [19.0, 21.0]),
        row("s2mlpv2_medium", 8, 10.0, [10.0, 10.0]),
        row("vip_s7", 8, 22.0, [20.9, 21.0]),  # small's peer
        row("vip_m7", 8, 11.0, [11.0, 12.0]),  # medium's peer, not small's
        row("vip_l7", 8, 8.0),  # nobody's peer: the closest in GMACs (medium, 16.3 vs 24.3)
        row("s2mlpv2_small", 1, 5.0),
        row("vip_s7", 1, None, status="oom"),
    ]
    add_ratios(rows, benched)
    assert [r.reference for r in rows] == [
        "s2mlpv2_small", "s2mlpv2_medium", "s2mlpv2_small", "s2mlpv2_medium", "s2mlpv2_medium",
        "s2mlpv2_small", None,
    ]  # fmt: skip
    assert [r.throughput_ratio for r in rows] == [1.0, 1.0, 1.1, 1.1, 0.8, 1.0, None]
    assert rows[2].throughput_ratio_range == [1.0, 1.1]  # 20.9/19 and 21/21, round by round
    assert rows[3].throughput_ratio_range == [1.1, 1.2] and rows[4].throughput_ratio_range is None
    assert rows[3].memory_ratio == 1.1


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
                "throughput_ratio_range": [0.95, 1.05],
                "reference": "s2",
                "latency_ms": {"p50": 400.0, "p90": 410.0},
                "latency_bs1_ms": {"p50": 100.0, "p99": 120.0},
                "peak_memory_mib": 5.0,
                "memory_ratio": 1.0,
                "paper_top1": None,
            }
        ],
    )
    for suffix in (".json", ".csv", ".md"):
        report.write(str(tmp_path / f"r{suffix}"), doc, BENCH_COLUMNS, "t")
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    (row,) = csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text()))
    assert row["latency_ms_p50"] == "400.0" and row["throughput_iqr"] == "9.0 11.0" and row["model"] == "a|b"
    md = (tmp_path / "r.md").read_text()
    assert (
        "| a\\|b | 1.00 | 2.00 | 4 | 10.0 | 9.0–11.0 | 1.00 | 0.95–1.05 | s2 | 400.0 / 410.0 "
        "| 100.0 / 120.0 | 5 | 1.00 | - |  |" in md
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
    result = Runner().invoke(main, ["bench", "--device", "cpu", "--variant", "tiny", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cuda_requested_without_a_gpu(zoo: Path) -> None:
    result = Runner().invoke(main, ["bench", "--variant", "tiny", "--device", "cuda"])
    assert result.exit_code == 1 and "use --device cpu" in result.stderr


def test_plot(tmp_path: Path, zoo: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result = Runner().invoke(
            main, ["bench", "--variant", "tiny", "--plot", str(tmp_path / "p.png"), *QUICK]
        )
        assert result.exit_code == 2 and "pip install '.[plot]'" in result.stderr
        return
    from s2mlp_cli.bench.plot import caption

    rows = [
        Row("a", family="s2mlpv2", batch_size=8, throughput=10.04, throughput_iqr=[9.0, 11.0],
            paper_top1=80.0, params_m=25.0),
        Row("b", family="vip", batch_size=8, throughput=7.0, throughput_iqr=[6.5, 7.2], paper_top1=79.0,
            params_m=24.0),
    ]  # fmt: skip
    env = {"device_name": "AMD EPYC", "device": "cpu", "dtype": "float32",
           "date": "2026-11-30T01:02:03+00:00", "load_before": [1.5, 1.0, 0.9], "cpu_count": 2,
           "iters": 6, "rounds": 3}  # fmt: skip
    assert caption(env, rows) == (
        "AMD EPYC (cpu); dtype float32; batch 8; 2026-11-30; load before 1.50 on 2 cores; "
        "6 timed calls in 3 rounds"
    )
    import matplotlib.pyplot as plt

    drawn = []
    real_errorbar = plt.Axes.errorbar

    def spy(ax, x, y, **kw):
        drawn.append((list(x), kw["xerr"], kw["label"]))
        return real_errorbar(ax, x, y, **kw)

    plt.Axes.errorbar = spy
    try:
        draw_plot(rows, str(tmp_path / "p.png"), env)
    finally:
        plt.Axes.errorbar = real_errorbar
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # measured values, IQR bars from the unrounded ends, one legend entry per group, on both panels
    assert drawn[0][0] == [10.04] and drawn[0][2] == "S²-MLPv2 (ours)" and drawn[1][2] == "peers"
    assert drawn[0][1][0][0] == pytest.approx(1.04) and drawn[0][1][1][0] == pytest.approx(0.96)
    assert len(drawn) == 4


def test_small_spreads_draw_bars_and_read_as_different_numbers() -> None:
    from s2mlp_cli.bench.compare import span
    from s2mlp_cli.bench.plot import error_bars

    row = Row("a", throughput=0.30, throughput_iqr=[0.26, 0.35])
    lo, hi = error_bars([row])
    assert lo[0] == pytest.approx(0.04) and hi[0] == pytest.approx(0.05)  # rounded to 0.1, both were 0
    assert span(0.26, 0.35, 1) == "0.26–0.35" and span(7.6, 8.0, 1) == "7.6–8.0"
    assert span(0.31, 0.31, 1) == "0.3–0.3"  # equal numbers may read equal


def test_a_compiled_bench_estimate_includes_compiling() -> None:
    from s2mlp_cli.bench.request import COMPILE_S, Plan, Settings
    from s2mlp_cli.zoo import get_card

    models = [get_card("small"), get_card("vip_s7")]
    plan = Plan(models=models, batch_sizes=[8], settings=Settings(compile=True), rounds=2, estimate_s=20.0,
                compile_s=(4 * 30.0, 4 * 120.0))  # fmt: skip
    assert plan.graphs == 4 and COMPILE_S["cpu"] == (30.0, 120.0)
    said = plan.describe()
    assert "estimate ~2 min to 8 min (rough; compiling 4 graph(s) at 30-120 s each is most of it)" in said


@pytest.mark.gpu
def test_cuda_bf16_channels_last(zoo: Path) -> None:
    r = measure(Spec("tiny", 4, Settings(device="cuda", amp="bf16", channels_last=True, iters=3, warmup=1)))
    assert r.status == "ok" and r.memory_kind == "max_memory_allocated" and r.peak_memory_mib > 0
    assert r.dtype == "bfloat16 (autocast)"


# --- the plan, interleaving, interruption, readability --------------------------------------------------


def test_default_is_the_small_variant_and_its_peers() -> None:
    from s2mlp_cli.bench import BenchOptions, make_plan

    plan = make_plan(BenchOptions(compare=["vip", "gfnet"], device="cpu"))
    assert [c.name for c in plan.models] == ["s2mlpv2_small", "vip_s7", "gfnet_s", "gfnet_h_s"]
    assert plan.batch_sizes == [8] and (plan.warmup, plan.iters, plan.rounds) == (2, 6, 3)
    text = plan.describe()
    assert text.startswith("will run 4 benchmark(s) on cpu: s2mlpv2_small, vip_s7") and "estimate ~" in text
    assert plan.estimate_s > 0
    result = Runner().invoke(main, ["bench", "--help"])
    assert "[default: small]" in " ".join(result.stdout.split())


@pytest.mark.slow  # processes
def test_batch1_latency_is_measured_once_per_model(zoo: Path) -> None:
    args = "bench --variant tiny --batch-size 2,1 --iters 2 --warmup 0 --device cpu --json".split()
    result = Runner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [r["batch_size"] for r in rows] == [2, 1]
    assert rows[0]["latency_bs1_ms"] == rows[1]["latency_bs1_ms"]  # one figure, from the batch-1 row
    assert rows[1]["latency_bs1_ms"]["measured_in_batch"] == 1
    assert rows[1]["latency_bs1_ms"]["p50"] == rows[1]["latency_ms"]["p50"]
    assert "will run 2 benchmark(s) on cpu" in result.stderr


@pytest.mark.slow  # processes
def test_interleaved_rounds_give_each_model_a_throughput_per_round(zoo: Path) -> None:
    from s2mlp_cli.bench import BenchOptions, run

    doc = run(BenchOptions(variants=["tiny"], compare=["vip_tiny"], device="cpu", batch_sizes=[2], warmup=0,
                           iters=4, rounds=2))  # fmt: skip
    tiny, other = doc["results"]  # vip_tiny is the tiny S²-MLPv2's peer, so tiny is its reference
    assert len(tiny["round_throughputs"]) == len(other["round_throughputs"]) == 2
    assert tiny["latency_ms"]["n"] == other["latency_ms"]["n"] == 4
    assert other["reference"] == "s2mlpv2_tiny"
    per_round = [o / t for o, t in zip(other["round_throughputs"], tiny["round_throughputs"], strict=True)]
    assert other["throughput_ratio_range"] == [round(min(per_round), 3), round(max(per_round), 3)]
    env = doc["env"]
    assert env["rounds"] == 2 and len(env["load_before"]) == 3 and "cpu_steal_pct" in env


@pytest.mark.slow  # processes
def test_ctrl_c_keeps_the_finished_rows(zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s2mlp_cli.bench import runner

    real, calls = runner._Proc.receive, []

    def receive(self):  # Ctrl-C arrives during the second batch size's rounds
        calls.append(self.spec.batch_size)
        if self.spec.batch_size == 1 and calls.count(1) > 3:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(runner._Proc, "receive", receive)
    out = tmp_path / "bench.json"
    args = "bench --variant tiny --batch-size 2,1 --iters 4 --rounds 4 --warmup 0".split()
    result = Runner().invoke(main, [*args, "--device", "cpu", "--output", str(out), "--json"])
    assert result.exit_code == 130, result.stderr
    doc = json.loads(result.stdout)
    assert doc["partial"] is True and json.loads(out.read_text())["partial"] is True
    first, second = doc["results"]
    assert first["batch_size"] == 2 and first["status"] == "ok" and first["throughput"] > 0
    assert second["batch_size"] == 1 and "interrupted after" in second["detail"]
    assert "interrupted: 2 row(s) kept" in result.stderr


def test_nothing_measured_is_a_failure(zoo: Path) -> None:
    args = ["bench", "--variant", "vip_tiny", "--img-size", "112", *QUICK]
    result = Runner().invoke(main, args)
    assert result.exit_code == 1 and "nothing could be measured" in result.stderr


def test_busy_machine_and_wide_spread_are_warned() -> None:
    from dataclasses import replace

    from s2mlp_cli.bench.compare import warnings

    env = {"load_before": [3.5, 2.0, 1.0], "cpu_count": 2, "cpu_steal_pct": 7.5}
    row = Row("m", batch_size=8, throughput=10.0, throughput_iqr=[7.0, 12.0], throughput_ratio=1.0,
              throughput_ratio_range=[0.8, 1.3])  # fmt: skip
    quiet = replace(row, model="q", throughput_iqr=[9.8, 10.1], throughput_ratio_range=[0.99, 1.01])
    text = " | ".join(warnings(env, [row, quiet]))
    assert "busy before the run (load average 3.5 on 2 cores)" in text and "7.5% of CPU time" in text
    assert "m at batch 8: wide spread" in text and "q at batch" not in text
    own = replace(row, model="r", reference="r", throughput_ratio_range=[1.0, 1.0])  # the reference itself
    (said,) = [w for w in warnings({}, [own]) if w.startswith("r at batch")]
    assert "IQR 7.0–12.0 images/s)" in said and "× ref" not in said
    assert warnings({"load_before": [0.1, 0.1, 0.1], "cpu_count": 2}, [quiet]) == []


def test_the_gpu_estimate_makes_no_cuda_context_in_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent estimates without touching the GPU: its workers are the first to create a context."""
    from s2mlp_cli.bench import request
    from s2mlp_cli.bench.request import Plan, Settings
    from s2mlp_cli.zoo import get_card

    def probe(device: str) -> float:
        raise AssertionError(f"probed {device}")

    monkeypatch.setattr(request, "_matmul_gmacs", probe)
    plan = Plan(models=[get_card("small")], batch_sizes=[256], settings=Settings(device="cuda"), rounds=5)
    assert request._estimate(plan) > 0


def test_a_workers_peak_memory_is_its_own_not_its_parents() -> None:
    """getrusage's ru_maxrss survives exec: a worker started by a parent holding 512 MiB would report
    them. The peak is the worker's own (VmHWM)."""
    import subprocess
    import sys

    held = bytearray(512 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])  # resident, not just reserved
    code = "from s2mlp_cli.bench.ort import peak_rss_kib; print(peak_rss_kib() / 1024)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout) < 256, done.stdout
    del held
