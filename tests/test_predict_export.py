"""`s2mlp predict` agrees with eval image by image; `s2mlp export` writes ONNX that onnxruntime runs as
PyTorch does, for every family (or says why not); bench measures onnxruntime beside torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import one_line_error, run
from safetensors.torch import save_file
from tinyzoo import write_card

from s2mlp_cli import create_model

CPU = ["--device", "cpu", "--workers", "0"]


@pytest.fixture
def weights(zoo: Path, tmp_path: Path) -> Path:
    """evaltiny with spread logits, so top-1 is decided by the image and not by ties."""
    torch.manual_seed(3)
    model = create_model("evaltiny")
    with torch.no_grad():
        model.head.weight.mul_(50)
    path = tmp_path / "evaltiny.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def test_predict_top1_is_evals_on_a_labelled_folder(demo: Path, weights: Path, tmp_path: Path) -> None:
    preds = tmp_path / "eval.jsonl"
    args = ["--variant", "evaltiny", "--weights", str(weights)]
    code, _, stderr = run("eval", *args, "--data", str(demo / "val"), *CPU, "--save-predictions", str(preds))
    assert code == 0, stderr
    by_eval = {json.loads(ln)["key"]: json.loads(ln)["top5"][0] for ln in preds.read_text().splitlines()}
    out = tmp_path / "p.jsonl"
    code, stdout, stderr = run("predict", *args, str(demo / "val"), *CPU, "--json", "--output", str(out))
    assert code == 0, stderr
    doc = json.loads(stdout)
    got = {r["image"].removeprefix(f"{demo / 'val'}/"): r["top"][0]["class"] for r in doc["results"]}
    assert got == by_eval and len(got) == 6
    top = doc["results"][0]["top"]
    assert len(top) == 5 and top[0]["prob"] >= top[1]["prob"] and isinstance(top[0]["name"], str)
    assert [json.loads(ln)["image"] for ln in out.read_text().splitlines()] == [
        r["image"] for r in doc["results"]
    ]


def test_predict_names_a_runs_own_classes_and_skips_what_it_cannot_read(
    zoo: Path, demo: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    code, _, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(demo / "colours"), "--num-classes", "3",
        "--epochs", "1", "--batch-size", "6", *CPU, "--output", str(run_dir),
    )  # fmt: skip
    assert code == 0, stderr
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    code, stdout, stderr = run(
        "predict", "--variant", "evaltiny", "--weights", str(run_dir / "best.safetensors"),
        str(demo / "colours" / "val" / "red"), str(tmp_path / "broken.jpg"), "--topk", "2", *CPU,
        "--output", str(out), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert [s["image"] for s in doc["skipped"]] == [str(tmp_path / "broken.jpg")]
    assert doc["skipped"][0]["error"].startswith("UnidentifiedImageError")
    rows = out.read_text().splitlines()
    assert rows[0] == "image,class,name,prob,top_k" and len(rows) == 3
    assert all(r.split(",")[2] in ("red", "green", "blue") for r in rows[1:])


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--variant", "nosuch", "x.jpg"], 2, "unknown model"),
        (["--variant", "evaltiny", "/no/such/file.jpg"], 2, "no such file or folder"),
        (["--variant", "evaltiny", ".", "--output", "p.txt"], 2, "use a .json, .jsonl, .csv file"),
    ],
)
def test_predict_refuses_bad_requests_before_work(zoo: Path, args, code: int, needle: str) -> None:
    status, _, stderr = run("predict", *args)
    one_line_error(status, stderr, code, needle)


def _family_cards(zoo: Path) -> list[str]:
    """One tiny card per family: ours from their constructors, timm's at a small input."""
    write_card(zoo, "s2mlp_tiny", "s2mlp", {"embed_dim": 32, "depth": 1, "patch_size": 8, "num_classes": 10})
    write_card(zoo, "gfnet_tiny", "gfnet", {"embed_dim": 32, "depth": 1, "patch_size": 8, "num_classes": 10})
    pyramid = {"embed_dim": [16, 16, 32, 32], "depth": [1, 1, 1, 1], "patch_size": 4, "num_classes": 10}
    write_card(zoo, "gfnet_h_tiny", "gfnet_pyramid", {**pyramid, "img_size": 64})
    write_card(zoo, "mixer_s16_224", "mixer", {"num_classes": 10, "img_size": 32})
    write_card(zoo, "resmlp_12_224", "resmlp", {"num_classes": 10, "img_size": 32})
    write_card(zoo, "gmlp_ti16_224", "gmlp", {"num_classes": 10, "img_size": 32})
    return ["s2mlpv2_tiny", "s2mlp_tiny", "vip_tiny", "gfnet_tiny", "gfnet_h_tiny", "mixer_s16_224",
            "resmlp_12_224", "gmlp_ti16_224"]  # fmt: skip


@pytest.mark.slow  # eight exports
def test_every_family_exports_and_verifies(zoo: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    for name in _family_cards(zoo):
        out = tmp_path / f"{name}.onnx"
        code, stdout, stderr = run("export", "--variant", name, "--random", "--output", str(out), "--json")
        assert code == 0, f"{name}: {stderr}"
        row = json.loads(stdout)["results"][0]
        assert row["max_abs_diff"] <= 1e-4 and row["batch"] == "dynamic" and row["opset"] == 18, row
        sidecar = json.loads((tmp_path / f"{name}.onnx.json").read_text())
        assert sidecar["preprocess"]["input_size"] == row["input"][2] and len(sidecar["class_names"]) == 1000
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["x"]


def test_export_is_atomic_and_refuses_what_it_cannot_verify(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s2mlp_cli import export

    out = tmp_path / "m.onnx"
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # nothing can pass: nothing may be written
    code, _, stderr = run("export", "--variant", "s2mlpv2_tiny", "--random", "--output", str(out))
    one_line_error(code, stderr, 1, "differ from PyTorch's by up to", "nothing was written")
    assert not out.exists() and not list(tmp_path.glob("*.onnx*"))
    code, _, stderr = run(
        "export", "--variant", "s2mlpv2_tiny", "--random", "--output", str(tmp_path / "m.pt")
    )
    one_line_error(code, stderr, 2, "--output", "name a .onnx file")
    monkeypatch.setattr(export, "missing_packages", lambda: ["onnxruntime"])
    code, _, stderr = run("export", "--variant", "s2mlpv2_tiny", "--random", "--output", str(out))
    one_line_error(code, stderr, 1, "ONNX export needs onnxruntime: pip install 's2mlp[onnx]'")


def test_export_carries_a_runs_classes(zoo: Path, tmp_path: Path) -> None:
    from s2mlp_cli.classes import metadata
    from s2mlp_cli.weights import save_safetensors

    model = create_model("evaltiny", num_classes=3)
    path = tmp_path / "w.safetensors"
    save_safetensors(path, model.state_dict(), metadata(["cat", "dog", "fox"], 3))
    out = tmp_path / "m.onnx"
    code, _, stderr = run("export", "--variant", "evaltiny", "--weights", str(path), "--output", str(out))
    assert code == 0, stderr
    assert json.loads((tmp_path / "m.onnx.json").read_text())["class_names"] == ["cat", "dog", "fox"]


@pytest.mark.slow  # worker processes, an export in each onnxruntime worker
def test_bench_measures_torch_compiled_and_onnxruntime_side_by_side(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S2MLP_COMPILE_BACKEND", "eager")  # the compiled path, without generating kernels
    quick = ["--batch-size", "2", "--iters", "2", "--rounds", "2", "--warmup", "1", "--device", "cpu"]
    code, stdout, stderr = run(
        "bench", "--variant", "tiny", "--compare", "vip_tiny", *quick,
        "--runtime", "torch,compiled,onnxruntime", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    rows = json.loads(stdout)["results"]
    assert [(r["model"], r["runtime"]) for r in rows] == [
        (m, rt) for m in ("s2mlpv2_tiny", "vip_tiny") for rt in ("torch", "torch compiled", "onnxruntime")
    ]
    assert all(r["status"] == "ok" and r["throughput"] > 0 for r in rows), rows
    ort = {r["model"]: r for r in rows if r["runtime"] == "onnxruntime"}
    assert ort["vip_tiny"]["reference"] == "s2mlpv2_tiny"  # ratios within one runtime
    assert "[6/6] vip_tiny (onnxruntime):" in stderr
    assert not list((tmp_path / "s2mlp_home").rglob("*.onnx"))  # the graphs lived in scratch only


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        (["--runtime", "onnxruntime", "--amp", "bf16"], "--amp is torch's"),
    ],
)
def test_bench_runtimes_are_checked_before_work(zoo: Path, extra: list[str], needle: str) -> None:
    code, _, stderr = run("bench", "--variant", "tiny", "--device", "cpu", *extra)
    one_line_error(code, stderr, 2, "--runtime", needle)
