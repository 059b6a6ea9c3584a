"""Trust by construction (issue 23): what a hostile Hub, a bad file or a killed process can do to us.

Each test reproduces one finding of the adversarial run and fails on the code before the fix: nothing is
written outside our folders, caches hold and remove only what they made, and no result is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakehub import FakeHub
from helpers import one_line_error, run, tiny_weights


def _outside(tmp_path: Path) -> Path:
    """A folder outside every cache and home of the test, and an ETag that climbs to it."""
    return tmp_path / "outside"


def _climb(target: Path) -> str:
    return "../" * 12 + str(target).lstrip("/") + "/any_name"


# --- 1. a hostile Hub names no path -------------------------------------------------------------------


def test_a_second_head_cannot_name_where_a_download_lands(fake_hub: FakeHub, tmp_path: Path) -> None:
    """The Hub answers the first HEAD honestly and every later one with a path: only one HEAD is asked,
    and its answer alone names the blob (huggingface_hub's download asked again and wrote there)."""
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.later_etags["model.safetensors"] = _climb(_outside(tmp_path))
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr
    assert not _outside(tmp_path).exists()
    heads = [r for r in fake_hub.requests if r[0] == "HEAD" and r[1].endswith("/model.safetensors")]
    assert len(heads) == 1
    row = json.loads(stdout)[0]
    assert Path(row["path"]).resolve().read_bytes() == data
    code, _, stderr = run("pull", "hubtiny", "--refresh")  # asked again, the Hub now answers a path
    one_line_error(code, stderr, 1, "not a plain hex checksum")
    assert not _outside(tmp_path).exists()
    code, _, stderr = run("pull", "hubtiny")  # and the verified file in the cache is still served
    assert code == 0, stderr


def test_push_reads_the_target_config_without_writing_what_the_hub_names(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    fake_hub.tokens["tok"] = "me"
    monkeypatch.setenv("HF_TOKEN", "tok")
    fake_hub.add("me/target", {"config.json": b'{"architecture": "hubtiny"}'})
    fake_hub.etags["config.json"] = _climb(_outside(tmp_path))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(tiny_weights()[0])
    code, _, stderr = run("push", "hubtiny", "--weights", str(weights), "--repo", "me/target")
    one_line_error(code, stderr, 1, "not a plain hex checksum")
    assert not _outside(tmp_path).exists() and fake_hub.commits_made == []


def test_timm_hf_hub_config_is_fetched_by_us(fake_hub: FakeHub, tmp_path: Path) -> None:
    """`timm.create_model("hf-hub:...")` after `import s2mlp_cli.models`: the config goes through one
    verified HEAD and GET, never through a client that names a file after a later answer."""
    import timm

    import s2mlp_cli.models  # noqa: F401  (registers the zoo and guards timm's Hub config fetch)

    config = {"architecture": "hubtiny", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 56, 56]}}
    fake_hub.add(
        "me/cfg", {"config.json": json.dumps(config).encode(), "model.safetensors": tiny_weights()[0]}
    )
    fake_hub.later_etags["config.json"] = _climb(_outside(tmp_path))
    model = timm.create_model("hf-hub:me/cfg", pretrained=True)
    assert model.num_classes == 10 and not _outside(tmp_path).exists()
    fake_hub.etags["config.json"] = _climb(_outside(tmp_path))  # a first answer that climbs is refused
    with pytest.raises(Exception, match="not a plain hex checksum"):
        timm.create_model("hf-hub:me/cfg@main", pretrained=False)
    assert not _outside(tmp_path).exists()


# --- 6. temporary files live under S2MLP_HOME and go with any exit --------------------------------------


def test_scratch_folders_are_ours_and_a_killed_runs_are_swept(tmp_path: Path) -> None:
    from s2mlp_cli.files import s2mlp_home, scratch, sweep_scratch

    code = (
        "from s2mlp_cli.files import scratch\nimport os\nwith scratch('t') as f:\n    print(f, flush=True)\n"
    )
    code += "    os.kill(os.getpid(), 9)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    left = Path(done.stdout.strip())
    assert done.returncode == -9 and left.is_dir() and left.parent == s2mlp_home() / "tmp"
    foreign = s2mlp_home() / "tmp" / "not-ours"
    foreign.mkdir()
    with scratch("u") as mine:
        assert mine.is_dir() and not left.exists()  # swept: its lock died with its process
        assert sweep_scratch() == []  # a live one is never swept
    assert not mine.exists() and foreign.is_dir()  # nothing unmarked is touched


def test_sigterm_during_a_download_unwinds_and_leaves_nothing(fake_hub: FakeHub) -> None:
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.faults["model.safetensors"] = ("trickle", 0.05)
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2mlp_cli", "pull", "hubtiny"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    scratch = Path(os.environ["S2MLP_HOME"]) / "tmp"
    while not list(scratch.glob("*/incoming")) and proc.poll() is None:  # the download has begun
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and b"stopped by SIGTERM" in stderr and b"Traceback" not in stderr
    assert list(scratch.iterdir()) == []  # removed by the unwinding run itself, no sweep needed
