"""benchmarks/gpu_check.sh and gpu_check.py: valid bash (shellcheck-clean where shellcheck is installed),
one line and exit 3 without a GPU, and the driver's bookkeeping: time boxes, steps not reached, steps
that need others, and a summary that names every step. CI runs the whole dry run (`--dry-run`)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCH / "gpu_check.sh"


def _driver():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_the_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_without_a_gpu_it_stops_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        env={"PY": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1, lines
    assert lines[0].startswith("gpu_check: no CUDA device is visible to torch ") and not out.exists()


def test_usage_errors_exit_2() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash benchmarks/gpu_check.sh [--dry-run] OUT_DIR" in done.stderr


def test_steps_are_boxed_and_the_summary_names_every_one(tmp_path: Path) -> None:
    """A step past its box fails, one whose needs failed and one without its minimum left are not
    reached; a failing command's last line is the note; figures are read from the step's JSON."""
    gc = _driver()
    check = gc.Check(tmp_path, dry=True)
    check.budget = 30.0
    py = sys.executable
    write = f"import json; json.dump({{'x': 1}}, open(r'{tmp_path / 'ok.json'}', 'w'))"
    assert check.run(gc.Step("ok", 10, [py, "-c", write], min_s=1, figures="ok.json"))
    assert not check.run(gc.Step("slow", 1, [py, "-c", "import time; time.sleep(5)"], min_s=0.5))
    assert not check.run(gc.Step("bad", 10, [py, "-c", "raise SystemExit('it broke')"], min_s=1))
    assert not check.run(gc.Step("after_bad", 10, [py, "-c", "pass"], min_s=1, needs=("bad",)))
    assert not check.run(gc.Step("too_big", 10, [py, "-c", "pass"], min_s=1000))
    doc = check.summary()
    by = {e["name"]: e for e in doc["steps"]}
    assert [e["name"] for e in doc["steps"]] == ["ok", "slow", "bad", "after_bad", "too_big"]
    assert by["ok"]["status"] == "ok" and by["ok"]["figures"] == {"x": 1}
    assert by["slow"]["status"] == "fail" and "time box of 1 s" in by["slow"]["note"]
    assert by["bad"]["status"] == "fail" and by["bad"]["note"] == "exit 1: it broke"
    assert by["after_bad"]["status"] == "not reached" and "needs bad" in by["after_bad"]["note"]
    assert by["too_big"]["status"] == "not reached" and "budget" in by["too_big"]["note"]
    assert doc["figures_exist"] == ["ok"] and doc["failed"] == ["slow", "bad"]
    assert doc["not_reached"] == ["after_bad", "too_big"]
    json.dumps(doc)  # what summary.json holds


def test_a_result_row_that_did_not_run_fails_its_step(tmp_path: Path) -> None:
    gc = _driver()
    check = gc.Check(tmp_path, dry=True)
    rows = {"results": [{"model": "a", "status": "ok"}, {"model": "b", "status": "oom", "detail": "x"}]}
    write = f"import json; json.dump({rows!r}, open(r'{tmp_path / 'bench.json'}', 'w'))"
    assert not check.run(gc.Step("bench", 10, [sys.executable, "-c", write], min_s=1, figures="bench.json"))
    assert check.entries[0]["note"] == "rows not ok: b"


def test_every_real_step_writes_under_the_output_folder(tmp_path: Path) -> None:
    """The plan of the real run: every path it names is under OUT_DIR (or the repository it reads)."""
    gc = _driver()
    check = gc.Check(tmp_path / "out", dry=False)
    plan = gc.steps(check)
    names = [s.name for s in plan]
    assert names[:4] == ["env", "doctor", "pytest_gpu", "bench_compiled"]  # most important first
    assert len(set(names)) == len(names)
    for step in plan:
        for arg in step.argv:
            if arg.startswith("/") and not arg.startswith((sys.executable, str(BENCH))):
                assert arg.startswith(str(tmp_path / "out")), (step.name, arg)
    assert all(v.startswith(str(tmp_path / "out")) for k, v in check.base_env().items() if k.endswith("DIR"))
