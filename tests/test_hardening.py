"""Hardening (issue 14): a malicious Hub, bad data and bad arguments lose nothing and run nothing.

Each test here failed on the code before the fix it names.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import traceback
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
from fakehub import FakeHub
from helpers import Runner, one_line_error, run, run_eval, tiny_weights
from safetensors.torch import save, save_file

from s2mlp_cli.cli import main
from s2mlp_cli.data import decode
from s2mlp_cli.errors import WeightsError, WeightsUnavailableError
from s2mlp_cli.weights import read_state_dict

# --- a malicious Hub -----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [4, 8])
def test_traversal_etag_deletes_and_writes_nothing_outside_the_cache(
    fake_hub: FakeHub, tmp_path, depth
) -> None:
    data, _ = tiny_weights()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.etags["model.safetensors"] = "../" * depth + str(victim).lstrip("/")
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "not a plain hex checksum")
    assert victim.read_text() == "keep me"
    assert fake_hub.gets("model.safetensors") == []  # refused before any byte was written


def test_etag_naming_a_folder_outside_with_the_right_hash_is_refused(fake_hub: FakeHub, tmp_path) -> None:
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    outside = tmp_path / "pwn_dir"
    fake_hub.etags["model.safetensors"] = (
        f"../../../../../../../../{outside}/{hashlib.sha256(data).hexdigest()}"
    )
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "not a plain hex checksum")
    assert not outside.exists()


def test_a_snapshot_pointing_outside_the_cache_is_repaired_and_its_target_untouched(
    fake_hub, tmp_path
) -> None:
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    assert run("pull", "hubtiny")[0] == 0
    snapshot = next(Path(os.environ["HF_HOME"]).rglob("snapshots/*/model.safetensors"))
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"not weights")
    snapshot.unlink()
    snapshot.symlink_to(victim)  # a cache tampered with, or a blob written outside by an old client
    code, stdout, stderr = run("pull", "hubtiny", "--json")
    assert code == 0, stderr  # treated as absent: fetched again and placed by us
    assert json.loads(stdout)["results"][0]["cached"] is False and snapshot.resolve().read_bytes() == data
    assert victim.read_bytes() == b"not weights"
    assert snapshot.resolve().is_relative_to(Path(os.environ["HF_HOME"]).resolve())


# The fake Hub's faults and what the user must read. Each ends in one line, exit 1, within seconds, with no
# partial file left in the cache and nothing remembered as the variant's source.
FAULTS = [
    (("status", 500), "server error (HTTP 500)"),
    (("status", 503), "server error (HTTP 503)"),
    (("status", 429), "limiting requests (HTTP 429"),
    (("no_etag",), "sent no ETag"),
    (("truncate", 1000), "nothing was kept"),
    (("trickle", 0.3), "too slowly"),
    (("hang",), "ReadTimeout"),
]


@pytest.mark.parametrize("fault, needle", FAULTS, ids=[f[0][0] + str(f[0][1:]) for f in FAULTS])
def test_fake_hub_fault_matrix(fake_hub: FakeHub, monkeypatch, fault, needle) -> None:

    import huggingface_hub.constants

    from s2mlp_cli.sources import download

    monkeypatch.setattr(download, "STALL_S", 1.0)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.faults["model.safetensors"] = fault
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, needle)
    assert "could not reach" not in stderr
    cache = Path(os.environ["HF_HOME"])
    assert not list(cache.rglob("*.incomplete")) and not list(cache.rglob("blobs/*"))
    del fake_hub.faults["model.safetensors"]  # the Hub recovers: the next run gets the file
    code, _, stderr = run("pull", "hubtiny")
    assert code == 0, stderr


@pytest.mark.slow  # processes
def test_a_download_killed_midway_leaves_no_partial_file(fake_hub: FakeHub, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    data, _ = tiny_weights()
    fake_hub.add("testorg/hubtiny", {"model.safetensors": data})
    fake_hub.faults["model.safetensors"] = ("trickle", 0.05)
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2mlp_cli", "pull", "hubtiny"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scratch = Path(os.environ["S2MLP_HOME"]) / "tmp"
    deadline = time.monotonic() + 60
    while not list(scratch.glob("*/incoming")) and time.monotonic() < deadline:  # the download has begun
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(scratch.glob("*/incoming")), "the download never started"
    cache = Path(os.environ["HF_HOME"])
    assert not list(cache.rglob("blobs/*")), "a partial file reached the cache"

    del fake_hub.faults["model.safetensors"]
    code, _, stderr = run("pull", "hubtiny")
    assert code == 0, stderr
    assert [p.name for p in scratch.iterdir()] == []  # the killed run's partial is gone, not left for ever
    assert all(rng is None for _, _, rng in fake_hub.gets("model.safetensors"))  # no resume from it


@pytest.mark.parametrize("repo", ["", "a/b/c", "nameonly", "../x/y", "a/ b"])
def test_a_repo_that_is_not_owner_name_is_a_usage_error(fake_hub: FakeHub, repo: str) -> None:
    code, _, stderr = run("pull", "s2mlpv2_tiny", "--repo", repo, "--revision", "main")
    one_line_error(code, stderr, 2, "--repo")
    assert fake_hub.requests == []


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/abs/model.safetensors", "", "a/../../b"])
def test_a_filename_outside_the_repository_is_a_usage_error(fake_hub: FakeHub, filename: str) -> None:
    code, _, stderr = run("pull", "hubtiny", "--filename", filename)
    one_line_error(code, stderr, 2, "--filename")
    assert fake_hub.requests == []


@pytest.mark.parametrize("flag", ["--revision", "--filename"])
def test_a_revision_or_filename_without_a_repository_to_apply_it_to_is_a_usage_error(zoo: Path, flag) -> None:
    code, _, stderr = run("pull", "vip_tiny", flag, "main")  # found by tests/test_fuzz_cli.py
    one_line_error(code, stderr, 2, f"{flag}: vip_tiny has no Hub repository of its own")


def test_every_hub_card_pins_a_commit_and_says_where_its_pins_come_from() -> None:
    from s2mlp_cli.sources import hub_source
    from s2mlp_cli.zoo import cards

    hub_cards = [c for c in cards().values() if c.weights.repo]
    assert len(hub_cards) >= 4
    for card in hub_cards:
        w, where = card.weights, card.sources.get("weights_pin", "")
        assert w.revision and len(w.revision) == 40, card.name  # a full commit, never a branch
        assert w.revision in where, card.name
        if w.sha256:
            assert "sha256: the file page" in where, card.name
        else:
            assert "no sha256 pin" in where, card.name
        src = hub_source(card)
        assert src.revision == w.revision and src.sha256 == w.sha256  # what pull asks the Hub for


def test_unpublished_cards_name_no_repository() -> None:
    from s2mlp_cli.zoo import cards

    for card in cards().values():
        if not card.weights.published:
            assert card.weights.repo is None, card.name


# --- bad files ---------------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (8-bit gray) and whose pixel data is empty: all a decoder
    that trusts headers needs to be asked for gigapixels, at no cost to make."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(200_000, 1), (1, 200_000), (40_000, 40_000)])
def test_image_bombs_are_refused_from_the_header(size) -> None:
    data = _png(*size)
    assert len(data) < 2_000_000
    with pytest.raises(ValueError, match="refusing to decode"):
        decode(data)


def test_only_the_image_decoders_we_mean_are_used() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(Exception) as info:
        decode(eps)
    assert "cannot identify image file" in str(info.value)


def test_a_bomb_in_the_set_is_a_skipped_image_not_gigabytes(setup, tmp_path, items_small) -> None:
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    bomb = next(root.rglob("*.JPEG"))
    bomb.write_bytes(_png(200_000, 1))
    code, doc, stderr = run_eval(weights, "--data", str(root), "--no-cache")
    assert code == 0, stderr
    assert (
        doc["results"][0]["skipped"] == 1
        and "refusing to decode" in doc["results"][0]["skipped_files"][0]["error"]
    )


def test_text_and_odd_pickles_are_clear_errors_without_unsafe_advice(tmp_path: Path) -> None:
    cases = {
        "text.pth": b"hello world\n" * 10,
        "random.pth": os.urandom(300),
        "set.pth": pickle.dumps({"a": {1, 2}}),
    }
    torch.save({"w": torch.zeros(2)}, tmp_path / "ok.pth")
    whole = (tmp_path / "ok.pth").read_bytes()
    cases["truncated.pth"] = whole[: len(whole) // 2]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError) as info:
            read_state_dict(tmp_path / name)
        message = str(info.value)
        assert "weights_only" not in message and "can still be loaded" not in message, message
        assert len(message) < 300, message


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64, torch.int64], ids=str)
def test_tensors_of_another_dtype_do_not_load_strictly(zoo: Path, tmp_path: Path, dtype) -> None:
    from s2mlp_cli import create_model
    from s2mlp_cli.api import load_weights

    model = create_model("hubtiny")
    state = {k: v.to(dtype) if k == "head.weight" else v for k, v in model.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="head.weight has dtype"):
        load_weights(create_model("hubtiny"), path)
    save_file({k: v.double() for k, v in model.state_dict().items()}, str(path))  # fp64 -> fp32 is fine
    load_weights(create_model("hubtiny"), path)


def test_integer_keys_and_non_tensor_values_are_clear_errors(tmp_path: Path) -> None:
    torch.save({0: torch.zeros(2), 1: torch.zeros(3)}, tmp_path / "int_keys.pth")
    with pytest.raises(WeightsError, match="no tensors named"):
        read_state_dict(tmp_path / "int_keys.pth")


# --- results -----------------------------------------------------------------------------------------


def test_nan_weights_are_an_error_row_and_json_stays_valid(setup, tmp_path: Path, items_small) -> None:
    weights, labels, _ = setup
    state = dict(torch.load(weights, weights_only=True) if str(weights).endswith(".pth") else {})
    from safetensors.torch import load_file

    state = load_file(str(weights))
    state["head.bias"][0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    bad.write_bytes(save(state))
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    out = tmp_path / "r.json"
    code, _, stderr = run_eval(bad, "--data", str(root), "--output", str(out), "--no-cache")
    assert code == 1, stderr
    assert "non-finite" in stderr

    def bare(constant: str):
        raise AssertionError(f"bare {constant} in the JSON")

    doc = json.loads(out.read_text(), parse_constant=bare)  # strict JSON: no bare NaN or Infinity
    r = doc["results"][0]
    assert r["status"] == "error" and r["top1"] is None and "non-finite" in r["detail"]


def test_a_result_file_that_cannot_be_written_still_prints_the_results(
    setup, tmp_path, items_small, monkeypatch
):
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    from s2mlp_cli import report

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_text_atomic", disk_full)
    result = Runner().invoke(
        main,
        [
            "eval",
            "--variant",
            "evaltiny",
            "--weights",
            str(weights),
            "--data",
            str(root),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--output",
            str(tmp_path / "r.json"),
            "--no-cache",
        ],  # fmt: skip
    )
    assert result.exit_code == 1
    assert "evaltiny" in result.stdout and "top-1" in result.stdout  # the finished results, not thrown away
    assert "could not write" in result.stderr and "No space left on device" in result.stderr


# --- usage errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--variant", "evaltiny", "--data", ".", "--crop-pct", "nan"],
        ["eval", "--variant", "vip_tiny", "--data", ".", "--img-size", "17"],
        ["eval", "--variant", "evaltiny", "--data", ".", "--img-size", "16", "--weights", "x"],
        ["eval", "--variant", "evaltiny", "--data", ".", "--output", ""],
        ["eval", "--variant", "evaltiny", "--data", ".", "--mean", "nan,0,0"],
        ["bench", "--variant", "tiny", "--timeout", "inf"],
        ["bench", "--variant", "tiny", "--timeout", "nan"],
        ["bench", "--variant", "tiny", "--timeout", "1e308"],
        ["bench", "--variant", "tiny", "--output", ""],
    ],
)
def test_bad_arguments_exit_2(zoo: Path, args: list[str]) -> None:
    code, _, stderr = run(*args)
    assert code == 2, stderr
    assert "Traceback" not in stderr


def test_a_symlinked_output_is_written_through_not_replaced(setup, tmp_path, items_small) -> None:
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    real = tmp_path / "results" / "real.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, _, stderr = run_eval(weights, "--data", str(root), "--output", str(link), "--no-cache")
    assert code == 0, stderr
    assert link.is_symlink() and json.loads(real.read_text())["results"][0]["model"] == "evaltiny"


# --- imports -----------------------------------------------------------------------------------------


def _two_vip_files(reference: Path, tmp_path: Path) -> tuple[Path, Path]:
    from s2mlp_cli import create_model

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_file(create_model("vip_tiny").state_dict(), str(other))
    return reference / "vip_tiny_official.pth.tar", other


def test_an_import_killed_before_its_record_keeps_the_previous_import(
    zoo: Path, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    from s2mlp_cli import api, files, sources
    from s2mlp_cli.sources import store
    from s2mlp_cli.zoo import get_card

    first, second = _two_vip_files(reference, tmp_path)
    card = get_card("vip_tiny")
    good = api.import_file(card, first)

    real = files.atomic_path

    def killed_at_the_record(target):
        if Path(target).name == "source.json":
            raise KeyboardInterrupt  # the process dies between writing the file and naming it
        return real(target)

    monkeypatch.setattr(store, "atomic_path", killed_at_the_record)
    with pytest.raises(KeyboardInterrupt):
        api.import_file(card, second)
    monkeypatch.setattr(store, "atomic_path", real)
    again = sources.resolve(card)  # the previous import, intact and still the source
    assert again.sha256 == good.sha256 and Path(again.path).is_file()


def test_concurrent_imports_end_in_one_consistent_state(zoo: Path, reference: Path, tmp_path: Path) -> None:
    import threading

    from s2mlp_cli import api, sources
    from s2mlp_cli.zoo import get_card

    files_ = _two_vip_files(reference, tmp_path)
    card = get_card("vip_tiny")
    errors: list[BaseException] = []

    def importer(k: int) -> None:
        try:
            for i in range(3):
                api.import_file(card, files_[(k + i) % 2])
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(15):
                try:
                    sources.resolve(card)
                except WeightsUnavailableError:
                    pass  # no import has finished yet
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=importer, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, ["".join(traceback.format_exception(e)) for e in errors]
    final = sources.resolve(card)  # whichever import came last, whole and verified
    folder = Path(final.path).parent
    assert sorted(p.name for p in folder.glob("*.safetensors")) == [Path(final.path).name]
    assert not list(folder.glob(".*.tmp"))


# --- labels ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["webdataset", "parquet"])
@pytest.mark.parametrize("bad", [-1, 1000, 5000])
def test_shard_labels_out_of_range_are_refused_when_scanning(tmp_path, items_small, layout, bad) -> None:
    from s2mlp_cli.data import DataError, find_dataset

    labels = [3, 4, 5, bad, 6, 7]
    root = getattr(fi, layout)(tmp_path / "shards", items_small, labels)
    with pytest.raises(DataError, match=f"label '{bad}' is not an ImageNet-1k class index"):
        find_dataset(root)


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"a.JPEG,\xff\xfe3\n", "not a UTF-8 text file (byte 7)"),
        ("a.JPEG,1\nb.JPEG,\u00b2\n".encode(), ":2: label '\u00b2' is neither a wnid nor an index 0-999"),
        ("a.JPEG,1\nb.JPEG,\u0663\n".encode(), ":2: label '\u0663' is neither a wnid nor an index 0-999"),
    ],
    ids=["not-utf8", "superscript-two", "arabic-three"],
)
def test_a_labels_file_with_odd_bytes_is_a_clear_error(tmp_path, items_small, content, needle) -> None:
    from s2mlp_cli.data import DataError, find_dataset

    fi.labels_file(tmp_path / "imgs", items_small, [1] * len(items_small), as_wnid=False)
    root, bad = tmp_path / "imgs", tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(DataError) as info:
        find_dataset(root, labels=bad)
    assert needle in str(info.value)


def _flat_set(tmp_path: Path, items: list) -> Path:
    """Flat ILSVRC2012_val_* images, every one labelled class 1, with a devkit beside them."""
    named = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", data) for i, (_, data) in enumerate(items)]
    return fi.flat_with_devkit(tmp_path / "flat", named, [1] * len(items))


@pytest.mark.parametrize("value", ["0", "1001", "-3", "x"])
def test_devkit_ids_outside_1_to_1000_are_a_clear_error(tmp_path, items_small, value) -> None:
    from s2mlp_cli.data import DataError, find_dataset

    root = _flat_set(tmp_path, items_small)
    truth = tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    lines = truth.read_text().split()
    lines[2] = value
    truth.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ground_truth.txt:3: .* is not an ILSVRC2012_ID"):
        find_dataset(root)


@pytest.mark.parametrize(
    "meta", [b"", b"MATLAB 5.0 MAT-file" + b"\0" * 10, None], ids=["empty", "cut", "no-synsets"]
)
def test_an_empty_or_damaged_meta_mat_is_a_clear_error(tmp_path, items_small, meta) -> None:
    from scipy.io import savemat

    from s2mlp_cli.data import DataError, find_dataset

    root = _flat_set(tmp_path, items_small)
    path = tmp_path / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"
    if meta is None:
        savemat(str(path), {"other": [1, 2, 3]})
    else:
        path.write_bytes(meta)
    with pytest.raises(DataError, match="not a readable ILSVRC2012 devkit meta.mat"):
        find_dataset(root)


def test_an_unreadable_class_folder_is_left_out_not_fatal(tmp_path, items_small, monkeypatch) -> None:
    from s2mlp_cli.data import find_dataset, synsets

    labels = [1, 1, 2, 2, 3, 3]
    root = fi.class_folders(tmp_path / "val", items_small, labels)
    locked = root / synsets()[2]
    real = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    ds = find_dataset(root)
    assert sorted({s.label for s in ds.samples}) == [1, 3]
    assert any("could not be read" in n and synsets()[2] in n for n in ds.notes)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_out_of_memory_while_decoding_is_an_error_not_a_skipped_image(
    setup, tmp_path, items_small, monkeypatch, workers
) -> None:
    from s2mlp_cli.data import images

    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items_small, labels[: len(items_small)])
    real = images.decode
    calls = []

    def decode_oom(raw: bytes):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError
        return real(raw)

    monkeypatch.setattr(images, "decode", decode_oom)
    out = tmp_path / "r.json"
    code, doc, stderr = run_eval(
        weights, "--data", str(root), "--no-cache", "--workers", workers, "--output", str(out)
    )
    assert code == 1 and "Traceback" not in stderr, stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("Error:")] == [
        "Error: out of memory while decoding or evaluating images (MemoryError); no result was computed; "
        "lower --batch-size or --workers, or free memory"
    ]
    assert "skipped" not in stderr
    assert not out.exists()  # no result file claims a number


# --- bench processes ---------------------------------------------------------------------------------


def test_a_cpu_allocation_failure_is_out_of_memory_and_auto_batch_retries(zoo: Path, monkeypatch) -> None:
    from s2mlp_cli.bench import Settings, Spec, measure
    from s2mlp_cli.bench import measurement as measuring

    real = measuring.make_input

    def allocate(settings, batch, img_size):
        if batch > 2:
            torch.empty(1 << 50, dtype=torch.uint8)  # a real refusal of the CPU allocator (1 PiB)
        return real(settings, batch, img_size)

    monkeypatch.setattr(measuring, "make_input", allocate)
    r = measure(Spec("tiny", 8, Settings(iters=2, warmup=0), bs1_iters=2))
    assert r.status == "oom" and "out of memory at batch 8" in r.detail
    assert "can't allocate memory" in r.extra["oom_message"]
    r = measure(Spec("tiny", 8, Settings(iters=2, warmup=0, auto_batch=True), bs1_iters=2))
    assert r.status == "ok" and r.batch_size == 2 and "batch 8 ran out of memory; measured at 2" in r.detail


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its parent's reaping is left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.slow  # processes
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killing_bench_stops_its_worker(zoo: Path, tmp_path: Path, sig: str) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "s2mlp_cli", "bench", "--variant", "tiny", "--batch-size", "2"]
    cmd += ["--warmup", "0", "--iters", "1000000", "--timeout", "600", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []
    for line in proc.stderr:  # bench says when the worker is warmed up; its timed rounds follow at once
        said.append(line)
        if "warmed up" in line:
            break
    assert said and "warmed up" in said[-1], "".join(said)
    workers = _children(proc.pid)
    assert len(workers) == 1, workers
    proc.send_signal(getattr(signal, sig))
    code = proc.wait(timeout=60)
    stderr = "".join(said) + proc.stderr.read()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "the worker outlived bench"
    if sig == "SIGTERM":
        assert code == 143 and "Traceback" not in stderr, stderr
        assert json.loads(out.read_text())["partial"] is True  # what was finished is kept, marked partial
