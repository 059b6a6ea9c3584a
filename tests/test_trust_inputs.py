"""Trust, round 3: every structured input of the newest commands is read through one validation layer
(`s2mlp_cli.schema`), what a run writes mid-way is swept, what a cache or an earlier run left is checked
before it is believed, and a fuzz of the new surface finds no unexpected error, no odd exit code and no
file outside its place."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from fakehub import FakeHub
from helpers import one_line_error, run, tiny_weights
from safetensors.torch import save_file

from s2mlp_cli import create_model

CPU = ["--device", "cpu", "--workers", "0"]
SHORT = ["--epochs", "1", "--batch-size", "6", "--lr", "0.01", "--set", "mixup=0", "--set", "cutmix=0"]


@pytest.fixture
def weights(zoo: Path, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "evaltiny.safetensors"
    save_file(create_model("evaltiny").state_dict(), str(path))
    return path


def _eval(weights: Path, data: Path, *extra: str) -> tuple[int, str, str]:
    return run("eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(data), *CPU, *extra)


# --- 1. ReaL labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, needle",
    [
        ('[["x"]]', "expected a whole number, got 'x'"),
        ("[[null]]", "expected a whole number, got None"),
        ("[[[1]]]", "expected a whole number, got [1]"),
        ("[" * 5000 + "]" * 5000, "not valid JSON (nested too deep)"),
        ("[[3.7]]", "expected a whole number, got 3.7"),
        ("[[-1]]", "expected 0 to 999, got -1"),
        ("[[5000]]", "expected 0 to 999, got 5000"),
        ("[[NaN]]", "not valid JSON (NaN is not a number JSON allows)"),
    ],
    ids=["string", "null", "nested-list", "deep", "float", "negative", "too-big", "nan"],
)
def test_real_labels_are_checked_whole(demo: Path, weights: Path, content: str, needle: str) -> None:
    (demo / "bad_real.json").write_text(content)
    code, _, stderr = _eval(weights, demo / "val", "--real-labels", str(demo / "bad_real.json"))
    one_line_error(code, stderr, 2, "--real-labels", needle)
    assert "unexpected" not in stderr


def test_real_labels_from_a_device_that_never_ends_are_cut_off(demo: Path, weights: Path) -> None:
    code, _, stderr = _eval(weights, demo / "val", "--real-labels", "/dev/zero")
    one_line_error(code, stderr, 2, "--real-labels", "larger than 64 MiB")


# --- 2. recipes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ("values:\n  lr:\n    source: mine\n", "lr: an entry needs a `value:`"),
        ("values:\n  3: 1\n", "3: a recipe key is a name"),
        ("values:\n  auto_augment: garbage\n", "auto_augment: expected none"),
        ("values:\n  auto_augment: rand-m9-zz3\n", "'zz3' is not a rand setting"),
        ("values:\n  lr: .inf\n", "lr: expected a finite number, got inf"),
        ("values:\n  lr: 1.0e999\n", "lr: expected a finite number, got inf"),
    ],
    ids=["no-value", "int-key", "garbage-augment", "bad-rand-part", "inf", "overflow"],
)
def test_recipe_files_are_checked_before_any_work(
    zoo: Path, demo: Path, tmp_path: Path, recipe: str, needle
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(recipe)
    code, _, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(demo), "--recipe", str(path), *SHORT, *CPU,
        "--output", str(tmp_path / "run"),
    )  # fmt: skip
    one_line_error(code, stderr, 2, "--recipe", needle)
    assert not (tmp_path / "run").exists()


def test_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads `1e-3` and `1.0e308` as strings; in a recipe they are numbers."""
    from s2mlp_cli.train.recipe import load

    path = tmp_path / "mine.yaml"
    path.write_text("values:\n  lr: 1e-3\n  warmup_lr: 1.0e308\n  min_lr: 2E-6\n")
    values = load(path, ["batch_size=1024"]).values
    assert (values["lr"], values["warmup_lr"], values["min_lr"]) == (1e-3, 1e308, 2e-6)
    assert load("paper", ["lr=1e-3"]).values["lr"] == 1e-3


# --- 3. what a killed run leaves, and what it saved -------------------------------------------------------


def test_a_half_written_checkpoint_is_swept_by_the_next_run(zoo: Path, demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--variant", "evaltiny", "--data", str(demo), *SHORT, *CPU, "--output", str(out)]
    code, _, stderr = run(*args)
    assert code == 0, stderr
    stale = out / ".last.safetensors.k9x2m1.tmp"  # what kill -9 during a write leaves
    stale.write_bytes(b"half")
    (out / "notes.txt").write_text("mine")  # not ours: left alone
    code, _, stderr = run(*args, "--resume")
    assert code == 0, stderr
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert "removed 1 half-written file(s)" in stderr


@pytest.mark.parametrize(
    "tamper, needle",
    [
        (lambda s: s.update(step=10**6), "counters are off"),
        (
            lambda s: s["model"].update({k: v[:1] for k, v in list(s["model"].items())[:1]}),
            "does not fit the model",
        ),
        (lambda s: s["model"].update({k: v * float("nan") for k, v in list(s["model"].items())[-1:]}), "NaN"),
        (lambda s: s["model"].pop(next(iter(s["model"]))), "another model's"),
        (lambda s: s.pop("optimizer"), "no optimizer in the state"),
        (lambda s: s["recipe"].update(lr=9.0), "another recipe (lr differ"),
    ],
    ids=["counter", "shape", "nan", "foreign", "missing", "recipe"],
)
def test_a_tampered_state_is_one_line_before_resume(
    zoo: Path, demo: Path, tmp_path: Path, tamper, needle
) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        "--variant",
        "evaltiny",
        "--data",
        str(demo),
        *SHORT,
        "--set",
        "epochs=2",
        *CPU,
        "--output",
        str(out),
    ]
    from s2mlp_cli.train import loop

    stop = lambda epoch, step: epoch == 1  # noqa: E731  (stop after the first epoch, as Ctrl-C would)
    with pytest.MonkeyPatch.context() as m:
        real = loop.run
        m.setattr(loop, "run", lambda opts, **kw: real(opts, stop=stop, **kw))
        code, _, _ = run(*args)
    assert code == 130
    state = torch.load(out / "state.pt", weights_only=True)
    tamper(state)
    torch.save(state, out / "state.pt")
    code, _, stderr = run(*args, "--resume")
    one_line_error(code, stderr, 2, "--output", needle)


def test_a_truncated_state_is_one_line(zoo: Path, demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--variant", "evaltiny", "--data", str(demo), *SHORT, *CPU, "--output", str(out)]
    assert run(*args)[0] == 0
    data = (out / "state.pt").read_bytes()
    (out / "state.pt").write_bytes(data[: len(data) // 2])
    code, _, stderr = run(*args, "--resume")
    assert code in (1, 2) and "unexpected" not in stderr and "cannot read the training state" in stderr


# --- 4. push evidence ------------------------------------------------------------------------------------


@pytest.fixture
def hub(zoo: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeHub() as server:
        server.tokens = {"tok": "me"}
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "tok")
        yield server


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"top1": float("nan")}, "not valid JSON (NaN"),
        ({"top1": float("inf")}, "not valid JSON (Infinity"),
        ({"top1": 150.0}, "top1 of hubtiny is 150.0"),
        ({"images": -5}, "images of hubtiny is -5"),
    ],
    ids=["nan", "inf", "150%", "negative-images"],
)
def test_push_refuses_evidence_no_run_could_produce(
    hub: FakeHub, tmp_path: Path, row: dict, needle: str
) -> None:
    data, _ = tiny_weights()
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(data)
    base = {"model": "hubtiny", "status": "ok", "top1": 1.0, "top5": 5.0, "loss": 6.9, "images": 10,
            "skipped": 0, "set": "val", "dtype": "float32",
            "weights_sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    doc = {"env": {"device": "cpu", "device_name": "cpu", "date": "2026-12-04"}, "results": [{**base, **row}]}
    (tmp_path / "eval.json").write_text(json.dumps(doc))  # json.dumps writes NaN as NaN: not JSON
    code, _, stderr = run(
        "push", "hubtiny", "--weights", str(weights), "--repo", "me/x", "--eval", str(tmp_path / "eval.json")
    )
    one_line_error(code, stderr, 2, "--eval", needle)
    assert hub.commits_made == []


def test_bench_evidence_with_a_nan_throughput_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    data, _ = tiny_weights()
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(data)
    row = {"model": "hubtiny", "status": "ok", "batch_size": 8, "throughput": -1.0}
    (tmp_path / "bench.json").write_text(json.dumps({"env": {"device": "cpu"}, "results": [row]}))
    code, _, stderr = run(
        "push",
        "hubtiny",
        "--weights",
        str(weights),
        "--repo",
        "me/x",
        "--bench",
        str(tmp_path / "bench.json"),
    )
    one_line_error(code, stderr, 2, "--bench", "throughput of hubtiny is -1.0")


def test_model_card_text_from_evidence_is_escaped() -> None:
    from s2mlp_cli.report import markdown_table

    (line,) = markdown_table(
        [("set", lambda r: r["set"])], [{"set": "val | <img src=x onerror=1>\n# Heading"}]
    )[2:]
    assert line == "| val \\| \\<img src=x onerror=1\\> # Heading |"


# --- 5. the crop cache's error map ------------------------------------------------------------------------


def test_a_forged_error_map_does_not_skip_good_images(demo: Path, weights: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _eval(weights, demo / "val", "--json")
    assert code == 0, stderr
    (entry,) = [p for p in (tmp_path / "s2mlp_home" / "cache").iterdir() if (p / "meta.json").is_file()]
    meta = json.loads((entry / "meta.json").read_text())
    meta["errors"] = {"0": "forged", "3": "forged"}
    (entry / "meta.json").write_text(json.dumps(meta))
    code, stdout, stderr = _eval(weights, demo / "val", "--json")
    assert code == 0, stderr
    assert (
        json.loads(stdout)["results"][0]["skipped"] == 0 and json.loads(stdout)["results"][0]["images"] == 6
    )


# --- 6. the network's leftovers -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://localhost:99999", "http://[::1", "ftp://host"])
def test_a_broken_hf_endpoint_is_one_line(zoo: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "HF_ENDPOINT")


def test_a_download_past_its_overall_deadline_is_given_up(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = tiny_weights()
    hub.add("testorg/hubtiny", {"model.safetensors": data})
    hub.faults["model.safetensors"] = ("trickle", 0.01)  # a byte every 10 ms: slow, never silent
    monkeypatch.setenv("S2MLP_DOWNLOAD_DEADLINE", "0.5")
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "did not finish sending", "S2MLP_DOWNLOAD_DEADLINE allows")
    monkeypatch.setenv("S2MLP_DOWNLOAD_DEADLINE", "-3")
    code, _, stderr = run("pull", "hubtiny")
    one_line_error(code, stderr, 1, "S2MLP_DOWNLOAD_DEADLINE='-3': expected a number of seconds above 0")


# --- 7. checks before the pass ---------------------------------------------------------------------------


def test_compare_with_other_images_is_refused_before_any_image_is_decoded(
    demo: Path, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s2mlp_cli.evaluate import loop

    preds = tmp_path / "p.jsonl"
    code, _, stderr = _eval(weights, demo / "val", "--save-predictions", str(preds), "--limit", "4")
    assert code == 0, stderr
    monkeypatch.setattr(loop, "_one_pass", lambda *a, **k: pytest.fail("a pass started"))
    code, _, stderr = _eval(weights, demo / "val", "--compare-with", str(preds))
    one_line_error(code, stderr, 2, "--compare-with", "scored on other images than set val (4 saved, 6 here")
    (tmp_path / "bad.jsonl").write_text('{"model": "m", "key": "k", "label": "3", "top5": [1]}\n')
    code, _, stderr = _eval(weights, demo / "val", "--compare-with", str(tmp_path / "bad.jsonl"))
    one_line_error(code, stderr, 2, "--compare-with", "prediction 1: not a saved prediction")


# --- 8. a fuzz of the new surface ------------------------------------------------------------------------

_VALUES = [
    None,
    True,
    0,
    -1,
    3.7,
    1e309,
    "",
    "x",
    "1e-3",
    "rand-m9",
    [],
    [1],
    {"a": 1},
    "🦉",
    "../../x",
    "\x00",
]


def _fuzz_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(4 if depth < 3 else 1)
    if kind == 1:
        return [_fuzz_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 2:
        return {rng.choice(["top1", "images", "results", "env", "model", "key", "label", "top5", "x"]):
                _fuzz_json(rng, depth + 1) for _ in range(rng.randrange(4))}  # fmt: skip
    return rng.choice(_VALUES)


@pytest.mark.slow  # ~60 commands, in process
def test_fuzz_of_the_new_surface(zoo: Path, demo: Path, weights: Path, tmp_path: Path) -> None:
    """Seeded and bounded: recipes and --set values, ReaL files, saved predictions, push evidence and
    predict/export arguments. Every outcome is exit 0, 1 or 2 with no unexpected error and nothing
    written outside the test's folder."""
    rng = random.Random(20261204)
    outside = tmp_path.parent / f"{tmp_path.name}-outside-marker"
    before = set(tmp_path.parent.iterdir())
    attempts = unhandled = 0
    for i in range(60):
        f = tmp_path / f"fuzz{i}"
        kind = i % 5
        if kind == 0:
            key = rng.choice(["lr", "epochs", "auto_augment", "scale", "mixup", "ema", "seed", "nope", "3"])
            value = json.dumps(_fuzz_json(rng)) if rng.random() < 0.5 else str(rng.choice(_VALUES))
            f.write_text(f"values:\n  {key}: {value}\n")
            args = ["train", "--variant", "evaltiny", "--data", str(demo), "--recipe", str(f),
                    "--set", f"{key}={value}", *SHORT, *CPU,
                    "--output", str(tmp_path / f"run{i}")]  # fmt: skip
            if rng.random() < 0.7:  # mostly stop at the checks: a run is seconds
                args += ["--set", "epochs=0"]
        elif kind == 1:
            f.write_text(json.dumps(_fuzz_json(rng)))
            args = ["eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(demo / "val"),
                    "--real-labels", str(f), *CPU, "--limit", "2"]  # fmt: skip
        elif kind == 2:
            f.write_text("\n".join(json.dumps(_fuzz_json(rng)) for _ in range(3)))
            args = ["eval", "--variant", "evaltiny", "--weights", str(weights), "--data", str(demo / "val"),
                    "--compare-with", str(f), *CPU]  # fmt: skip
        elif kind == 3:
            f.write_text(json.dumps(_fuzz_json(rng)))
            args = ["push", "hubtiny", "--weights", str(weights), "--repo", "me/x", "--eval", str(f)]
        else:
            args = rng.choice([
                ["predict", "--variant", "evaltiny", "--weights", str(weights), str(demo / "val"), "--topk",
                 str(rng.choice([0, 1, 5, 2000])), *CPU],
                ["export", "--variant", rng.choice(["evaltiny", "nosuch", "../x"]), "--random", "--output",
                 str(tmp_path / rng.choice(["m.onnx", "m.txt", "../../x.onnx", "dir/"]))],
                ["demo", str(tmp_path / rng.choice(["d", "fuzz0", "", "../../demo-out"]))],
            ])  # fmt: skip
        attempts += 1
        code, stdout, stderr = run(*args)
        if code not in (0, 1, 2) or "unexpected" in stderr or "Traceback" in stderr:
            unhandled += 1
            pytest.fail(f"{args}: exit {code}\n{stderr[-1500:]}")
    written = set(tmp_path.parent.iterdir()) - before
    assert attempts == 60 and unhandled == 0
    assert not outside.exists() and all(p.name.startswith(tmp_path.name) or p == tmp_path for p in written), (
        written
    )
