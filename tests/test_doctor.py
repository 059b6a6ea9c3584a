"""`s2mlp doctor` on a machine without a GPU: every check reported, a failing one is exit 1."""

from __future__ import annotations

import json

import pytest
from helpers import one_line_error, run


def test_doctor_reports_every_check_on_the_cpu_and_exits_0() -> None:
    code, stdout, stderr = run("doctor", "--device", "cpu", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    checks = {c["check"]: c for c in doc["checks"]}
    for name in ("torch", "cuda (torch build)", "nvidia driver", "cudnn", "nccl", "triton", "device",
                 "fp32 matmul precision", "c compiler", "python headers", "cpu count",
                 "device output = cpu output", "timing = wall clock"):  # fmt: skip
        assert name in checks, name
    assert doc["device"] == "cpu" and doc["failed"] == []
    assert all(c["verdict"] in ("ok", "warn", "fail") for c in doc["checks"])
    assert checks["device output = cpu output"]["verdict"] == "ok"
    assert all(c["next_step"] for c in doc["checks"] if c["verdict"] != "ok")  # never a bare warning


def test_doctor_for_a_gpu_that_is_not_here_fails_in_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    code, stdout, stderr = run("doctor", "--device", "cuda", "--json")
    one_line_error(code, stderr, 1, "1 check(s) failed: device")
    assert json.loads(stdout)["checks"][-1] == {
        "check": "device", "verdict": "fail", "value": "cuda",
        "next_step": "no CUDA device is available here; run on the CPU",
    }  # fmt: skip


def test_timing_band_warns_for_a_host_bound_model_and_fails_only_past_the_wall_clock() -> None:
    from s2mlp_cli.bench.doctor import _timing_check

    assert _timing_check(0.95)["verdict"] == "ok"
    assert _timing_check(0.4)["verdict"] == "warn"  # a tiny model: launches and syncs between calls
    assert _timing_check(1.2)["verdict"] == "fail"  # time counted that did not pass
