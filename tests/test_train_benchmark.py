"""benchmarks/train_vs_timm.py runs end to end (timm's components in place of its train.py, which only
timm's repository has) and reads timm's log lines as train.py writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import train_vs_timm  # noqa: E402


def test_timm_log_lines_give_each_epochs_mean_update() -> None:
    log = (
        "Train: 0 [   0/28 (  4%)]  Loss: 2.31 (2.31)  Time: 0.902s,   70.95/s  (0.902s,   70.95/s)\n"
        "Train: 0 [  27/28 (100%)]  Loss: 2.35 (2.32)  Time: 0.052s, 1224.94/s  (0.089s,  717.00/s)\n"
        "Test: [   7/7]  Time: 0.014 (0.066)  Loss:   2.437 ( 2.415)  Acc@1:  12.500 ( 11.600)\n"
        "Test (EMA): [   7/7]  Time: 0.014 (0.035)  Loss:   2.441 ( 2.417)  Acc@1:   0.000 ( 10.000)\n"
    )
    assert train_vs_timm.TIMM_TRAIN.findall(log)[-1] == ("0", "27", "28", "0.089")
    assert train_vs_timm.TIMM_TEST.findall(log) == [("7", "7", "11.600")]  # the model's, not the EMA's


@pytest.mark.slow
def test_side_by_side_runs_and_reports_every_ratio(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    args = ["--per-class", "16,4", "--epochs", "2", "--rounds", "1", "--threads", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(BENCH / "train_vs_timm.py"), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["timm"] == "components" and result["model"] == "tiny"
    one = result["threads=1"]
    assert one["images_per_s_ratio"] > 0 and one["wall_ratio"] > 0 and 0 <= one["s2mlp"]["top1"] <= 100
    assert result["pipeline"]["ratio"] > 0
    assert "| 1 |" in done.stdout and "input pipeline alone" in done.stdout
