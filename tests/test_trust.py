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
    row = json.loads(stdout)["results"][0]
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
    """`timm.create_model("hf-hub:...")` after `import s2mlp_cli.models`, for a repository a card names:
    the config goes through one verified HEAD and GET, never through a client that names a file after a
    later answer. (Other repositories' configs go through timm's own download: tests/test_timm_citizen.py.)"""
    import timm

    import s2mlp_cli.models  # registers the zoo and guards timm's Hub config fetch for our repositories

    s2mlp_cli.models.register()  # the tiny zoo's cards, if another test imported the package first

    config = {"architecture": "hubtiny", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 56, 56]}}
    fake_hub.add(
        "testorg/hubtiny",
        {"config.json": json.dumps(config).encode(), "model.safetensors": tiny_weights()[0]},
    )
    fake_hub.later_etags["config.json"] = _climb(_outside(tmp_path))
    model = timm.create_model("hf-hub:testorg/hubtiny", pretrained=True)
    assert model.num_classes == 10 and not _outside(tmp_path).exists()
    fake_hub.etags["config.json"] = _climb(_outside(tmp_path))  # a first answer that climbs is refused
    with pytest.raises(Exception, match="not a plain hex checksum"):
        timm.create_model("hf-hub:testorg/hubtiny@main", pretrained=False)
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


# --- 2, 3, 4, 5, 10. the crop cache: ours only, current, whole, never fatal ------------------------------


def test_cache_clear_all_removes_only_entries_it_made(setup, tmp_path: Path, items, monkeypatch) -> None:
    import fakeimagenet as fi
    from helpers import run_eval

    weights, labels, _ = setup
    user = tmp_path / "home"
    (user / "Documents").mkdir(parents=True)
    (user / "Documents" / "thesis.tex").write_text("years of work")
    (user / "notes").mkdir()
    (user / "notes" / "meta.json").write_text('{"version": 3}')  # looks like an entry, is not ours
    monkeypatch.setenv("S2MLP_CACHE", str(user))
    root = fi.class_folders(tmp_path / "val", items, labels)
    assert run_eval(weights, "--data", str(root))[0] == 0
    listed = json.loads(run("cache", "list", "--json")[1])["entries"]
    assert [e["status"] for e in listed] == ["complete"]  # foreign folders are not listed
    code, stdout, _ = run("cache", "clear", "--all", "--json")
    assert code == 0 and json.loads(stdout)["removed"] == [listed[0]["name"]]
    assert (user / "Documents" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in user.iterdir()) == ["Documents", "notes"]


def _bmp(item: bytes, invert: bool) -> bytes:
    """An image as BMP: the same dimensions always give the same number of bytes."""
    import io

    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(item)).convert("RGB")
    buf = io.BytesIO()
    (ImageOps.invert(img) if invert else img).save(buf, "BMP")
    return buf.getvalue()


def test_a_file_replaced_with_its_size_and_mtime_kept_is_never_served_stale(setup, tmp_path, items) -> None:
    import fakeimagenet as fi
    from helpers import run_eval

    weights, labels, _ = setup
    first, second = _bmp(items[0][1], False), _bmp(items[0][1], True)
    assert len(first) == len(second) and first != second
    root = fi.class_folders(tmp_path / "val", [(items[0][0], first), *items[1:]], labels)
    assert run_eval(weights, "--data", str(root))[0] == 0  # builds the entry
    path = next(root.rglob(items[0][0]))
    st = path.stat()
    path.write_bytes(second)  # `cp -p`, `rsync -t`, a re-extracted archive: size and mtime as before
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    code, cached, stderr = run_eval(
        weights, "--data", str(root), "--save-predictions", str(tmp_path / "a.jsonl")
    )
    assert code == 0 and not cached["env"]["cache"].startswith("read"), stderr
    code, fresh, _ = run_eval(
        weights, "--data", str(root), "--no-cache", "--save-predictions", str(tmp_path / "b.jsonl")
    )
    assert code == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()  # per image, as now
    keys = ("top1", "top5", "loss", "images")
    assert [cached["results"][0][k] for k in keys] == [fresh["results"][0][k] for k in keys]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_entry_is_a_miss_and_is_replaced(setup, tmp_path, items, damage) -> None:
    import fakeimagenet as fi
    from helpers import check, run_eval

    from s2mlp_cli.data import cache

    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    assert run_eval(weights, "--data", str(root))[0] == 0
    (entry,) = cache.entries()
    crops = Path(entry["path"]) / "crops.u8"
    data = bytearray(crops.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        crops.write_bytes(bytes(data))
    else:
        crops.write_bytes(bytes(data[: len(data) // 2]))
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0 and doc["env"]["cache"].startswith("built"), stderr
    check(doc, expected)
    code, doc, _ = run_eval(weights, "--data", str(root))  # the rebuilt entry is whole and read
    assert code == 0 and doc["env"]["cache"].startswith("read")
    check(doc, expected)


@pytest.mark.parametrize("where", ["a-file", "dev-null", "no-such-user", "read-only", "in-proc", "bad-meta"])
def test_a_cache_that_cannot_be_used_is_a_warning_and_an_uncached_run(
    setup, tmp_path, items, monkeypatch, where
) -> None:
    import fakeimagenet as fi
    from helpers import check, run_eval

    from s2mlp_cli.data import cache

    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    folder = tmp_path / "cache"
    if where == "a-file":
        folder.write_text("not a folder")
    elif where == "dev-null":
        folder = Path("/dev/null")
    elif where == "no-such-user":
        folder = Path("~nosuchuser_s2mlp/x")
    elif where == "read-only":
        folder.mkdir()
        folder.chmod(0o500)
    elif where == "in-proc":  # a folder nobody can make, root included
        folder = Path("/proc/s2mlp-cache")
    monkeypatch.setenv("S2MLP_CACHE", str(folder))
    if where == "bad-meta":
        assert run_eval(weights, "--data", str(root))[0] == 0
        (entry,) = cache.entries()
        (Path(entry["path"]) / "meta.json").write_text("[1, 2]")  # JSON, but not the record
    if where == "read-only" and os.access(folder, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0, stderr
    check(doc, expected)
    if where == "in-proc":  # a file system with no free space: never tried
        assert doc["env"]["cache"] == "off (not enough disk)"
    elif where != "bad-meta":
        assert "crop cache off" in stderr and doc["env"]["cache"].startswith("off (")
    code, doc, stderr = run_eval(weights, "--data", str(root))  # and every later run too
    assert code == 0, stderr
    check(doc, expected)
    if where == "bad-meta":  # the damaged entry was replaced by a whole one
        assert [e["status"] for e in cache.entries()] == ["complete"] and "warning" not in stderr


def test_a_disk_that_fills_while_building_is_a_warning_and_no_result_is_lost(
    setup, tmp_path, items, monkeypatch
) -> None:
    import errno

    import fakeimagenet as fi
    from helpers import check, run_eval

    from s2mlp_cli.data import cache

    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    writes = []

    def pwrite(fd, data, offset):
        writes.append(offset)
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwrite(fd, data, offset)

    monkeypatch.setattr(cache.os, "pwrite", pwrite)
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0 and "No space left on device" in stderr, stderr
    check(doc, expected)
    assert cache.entries() == [] and not any(cache.cache_root().iterdir())  # no partial folder left


def test_clear_never_removes_an_entry_another_run_is_building(setup, tmp_path, items) -> None:
    import fakeimagenet as fi

    from s2mlp_cli.data import Preprocess, cache, find_dataset

    _, labels, _ = setup
    ds = find_dataset(fi.class_folders(tmp_path / "val", items, labels))
    prep = Preprocess(56, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    writer = cache.Writer(ds.root, ds.samples, prep, cache.fingerprint(ds.samples, prep))
    (entry,) = cache.entries()
    assert entry["status"] == "building (another run)"
    assert cache.clear() == [] and writer.tmp.is_dir()
    writer.abort()


# --- 8. push publishes only evidence that says which weights it measured ---------------------------------


def _eval_doc(sha: str | None, **row: object) -> dict:
    base = {"model": "hubtiny", "status": "ok", "top1": 1.0, "top5": 5.0, "loss": 6.9, "images": 10,
            "skipped": 0, "set": "a subset", "dtype": "float32"}  # fmt: skip
    if sha is not None:
        base["weights_sha256"] = sha
    return {
        "env": {"device": "cpu", "device_name": "cpu", "date": "2026-11-29"},
        "results": [{**base, **row}],
    }


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"sha": None}, "no weights_sha256"),
        ({"top1": "80.1"}, "top1 of hubtiny is '80.1'"),
        ({"images": 10.5}, "images of hubtiny is 10.5"),
        ({"env": [1, 2]}, "env is a list"),
        ({"rows": ["a", 3]}, "has no finished result for hubtiny"),
    ],
    ids=["no-hash", "string-top1", "float-images", "list-env", "odd-rows"],
)
def test_push_refuses_eval_evidence_it_cannot_stand_behind(
    fake_hub: FakeHub, tmp_path, change, needle
) -> None:
    import hashlib

    data, _ = tiny_weights()
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    doc = _eval_doc(change.pop("sha", sha), **{k: v for k, v in change.items() if k not in ("env", "rows")})
    if "env" in change:
        doc["env"] = change["env"]
    if "rows" in change:
        doc["results"] = change["rows"]
    (tmp_path / "eval.json").write_text(json.dumps(doc))
    code, _, stderr = run(
        "push", "hubtiny", "--weights", str(weights), "--repo", "me/x", "--eval", str(tmp_path / "eval.json")
    )
    one_line_error(code, stderr, 2, "--eval", needle)
    assert fake_hub.requests == [] and fake_hub.commits_made == []


# --- 9. torchrun: the same data everywhere, no silent hang, one process per GPU ---------------------------

_AGREE = """
import os, sys, time
import torch.multiprocessing as mp

def rank(r, port, values):
    os.environ.update(WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), S2MLP_DIST_TIMEOUT="3")
    from s2mlp_cli.errors import S2MLPError
    from s2mlp_cli import distributed
    shard = distributed.start("cpu")
    if values[r] == "STOP":  # a process that stops answering: the others must not wait in silence
        time.sleep(6)
        os._exit(0)
    try:
        shard.agree("data", values[r])
        os.write(1, f"rank {r}: agreed\\n".encode())  # one write a line: the two processes share stdout
    except S2MLPError as e:
        os.write(1, f"rank {r}: {e}\\n".encode())
    os._exit(0)  # without tearing the group down: a peer may be gone

if __name__ == "__main__":
    mp.spawn(rank, args=(int(sys.argv[1]), sys.argv[2:]), nprocs=2)
"""


@pytest.mark.slow  # processes
@pytest.mark.parametrize(
    "values, said",
    [
        (["a", "a"], "agreed"),
        (["a", "b"], "see different data: rank 1"),
        (["a", "STOP"], "stopped answering"),
    ],
    ids=["same", "different", "stopped"],
)
def test_processes_that_see_different_data_stop_before_any_work(tmp_path: Path, values, said) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "agree.py"
    script.write_text(_AGREE)
    done = subprocess.run(
        [sys.executable, str(script), str(port), *values], capture_output=True, text=True, timeout=120
    )
    lines = sorted(ln for ln in done.stdout.splitlines() if ln.startswith("rank"))
    speaking = ["rank 0"] if "STOP" in values else ["rank 0", "rank 1"]
    assert done.returncode == 0 and [ln.split(": ", 1)[0] for ln in lines] == speaking, done.stderr
    assert all(said in ln for ln in lines), lines


def test_more_processes_than_gpus_is_one_line_before_any_work(monkeypatch) -> None:
    import torch

    from s2mlp_cli import distributed
    from s2mlp_cli.errors import S2MLPError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(S2MLPError, match="2 processes on this machine but 1 GPU"):
        distributed.start("cuda")
    assert not torch.distributed.is_initialized()


# --- 11-17. results never lost, bounded downloads and resizes, clear words for odd input ----------------

QUICK = ["--batch-size", "2", "--iters", "2", "--warmup", "0", "--device", "cpu"]


def test_bench_rows_reach_stdout_when_the_output_file_cannot_be_written(
    zoo: Path, tmp_path, monkeypatch
) -> None:
    import errno

    from s2mlp_cli import report

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "write_text_atomic", disk_full)
    code, stdout, stderr = run(
        "bench", "--variant", "tiny", *QUICK, "--json", "--output", str(tmp_path / "b.json")
    )
    assert code == 1 and "could not write" in stderr and "No space left" in stderr
    doc = json.loads(stdout)
    assert doc["results"][0]["status"] == "ok" and doc["results"][0]["throughput"] > 0


def test_eval_of_a_folder_with_an_undecodable_name_writes_its_csv(setup, tmp_path, items) -> None:
    import fakeimagenet as fi
    from helpers import check, run_eval

    weights, labels, expected = setup
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/val-\xff"))
    root = fi.class_folders(odd, items, labels)
    out = tmp_path / "r.csv"
    code, doc, stderr = run_eval(weights, "--data", str(root), "--output", str(out))
    assert code == 0, stderr
    check(doc, expected)
    assert os.fsencode(str(odd)) in out.read_bytes()  # the folder's own bytes, as the file system has them


def test_a_download_too_slow_to_finish_is_given_up(fake_hub: FakeHub, monkeypatch) -> None:
    from s2mlp_cli.sources import download

    monkeypatch.setattr(download, "STALL_S", 3600.0)  # the per-window guard alone would never fire
    monkeypatch.setattr(download, "MIN_RATE_AFTER_S", 1.0)
    monkeypatch.setattr(download, "MIN_RATE", 10**9)
    fake_hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
    fake_hub.faults["model.safetensors"] = ("trickle", 0.01)
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "too slowly (on average")
    assert list((Path(os.environ["S2MLP_HOME"]) / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:99999", "http://[::1", "127.0.0.1:8080", "ftp://example.org"]
)
def test_an_hf_endpoint_that_is_no_http_url_is_one_line(zoo: Path, monkeypatch, value: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", value)
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "HF_ENDPOINT", "http(s)://HOST[:PORT]")


def test_a_resize_target_without_bound_is_a_usage_error(setup, tmp_path, items) -> None:
    import fakeimagenet as fi
    from helpers import run_eval

    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items[:2], labels[:2])
    code, _, stderr = run_eval(weights, "--data", str(root), "--crop-pct", "0.1", "--img-size", "2044")
    one_line_error(code, stderr, 2, "--crop-pct", "20,440 px")


def test_an_empty_batch_size_entry_is_a_usage_error(zoo: Path) -> None:
    code, _, stderr = run("bench", "--variant", "tiny", "--batch-size", "1,,2", "--device", "cpu")
    one_line_error(code, stderr, 2, "--batch-size", "empty entry")


def test_auto_batch_with_no_warmup_steps_down_instead_of_failing(zoo: Path, monkeypatch) -> None:
    import torch

    from s2mlp_cli.bench import Settings, Spec, measure, measurement

    real = measurement.Worker._call

    def call(self, x) -> None:  # activations that do not fit above batch 2: a real allocator refusal
        if x.shape[0] > 2:
            torch.empty(1 << 50, dtype=torch.uint8)
        real(self, x)

    monkeypatch.setattr(measurement.Worker, "_call", call)
    r = measure(Spec("tiny", 8, Settings(iters=2, warmup=0, auto_batch=True), bs1_iters=2))
    assert r.status == "ok" and r.batch_size == 2 and "batch 8 ran out of memory; measured at 2" in r.detail


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a.JPEG,1\nb.JPEG,2\na.JPEG,3\n", ":3: 'a.JPEG' is labelled again, differently (first on line 1)"),
        ("a.JPEG,n0144076\nb.JPEG,2\n", ":1: label 'n0144076' is neither a wnid nor an index"),
        ('a.JPEG,"' + "x" * 200_000 + '"\n', "not a readable labels file (field larger than field limit"),
    ],
    ids=["duplicate", "bad-first-row", "huge-field"],
)
def test_labels_files_that_say_two_things_are_refused(tmp_path, items_small, text, needle) -> None:
    import fakeimagenet as fi

    from s2mlp_cli.data import DataError, find_dataset

    fi.labels_file(tmp_path / "imgs", items_small, [1] * len(items_small), as_wnid=False)
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataError) as info:
        find_dataset(tmp_path / "imgs", labels=tmp_path / "l.csv")
    assert needle in str(info.value)


def test_what_class_folders_leave_out_is_said(tmp_path, items_small) -> None:
    import fakeimagenet as fi

    from s2mlp_cli.data import find_dataset, synsets

    root = fi.class_folders(tmp_path / "val", items_small, [1] * len(items_small))
    (root / "stray.JPEG").write_bytes(items_small[0][1])
    (root / "shard.parquet").write_bytes(b"PAR1")
    loop = root / synsets()[1] / "loop.JPEG"
    loop.symlink_to(loop)
    ds = find_dataset(root)
    assert len(ds.samples) == len(items_small)
    assert any("2 image or shard file(s) beside the class folders were not read" in n for n in ds.notes)
    assert any("1 image link(s) lead nowhere" in n and "loop.JPEG" in n for n in ds.notes)
    code, _, stderr = run("eval", "--variant", "tiny", "--data", "/dev/zero", "--device", "cpu")
    assert code in (1, 2) and "Traceback" not in stderr and "unexpected" not in stderr


def test_one_file_imports_to_one_hash_and_deep_nesting_is_found(zoo: Path, reference: Path, tmp_path):
    import torch

    from s2mlp_cli import api, create_model
    from s2mlp_cli.zoo import get_card

    card = get_card("vip_tiny")
    official = reference / "vip_tiny_official.pth.tar"
    assert api.import_file(card, official).sha256 == api.import_file(card, official).sha256
    state = create_model("vip_tiny").state_dict()
    torch.save({"model": {"state_dict": {"module": state}}}, tmp_path / "deep.pth")
    api.load_weights(create_model("vip_tiny"), tmp_path / "deep.pth")  # three levels down, found


def test_a_gfnet_checkpoint_with_no_grid_is_a_clear_error(tmp_path) -> None:
    import torch
    from safetensors.torch import save_file

    from s2mlp_cli import api, create_model
    from s2mlp_cli.errors import WeightsError

    gfnet = create_model("gfnet_ti").state_dict()
    gfnet["pos_embed"] = torch.zeros(1, 0, gfnet["pos_embed"].shape[2])
    save_file(gfnet, str(tmp_path / "g.safetensors"))
    with pytest.raises(WeightsError, match="pos_embed has shape .*no grid"):
        api.load_weights(create_model("gfnet_ti"), tmp_path / "g.safetensors")
