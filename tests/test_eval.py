"""`s2mlp eval` on generated sets in every layout, with labels chosen so the exact result is known.

The labels come from a fixed model's own ranking of each image, computed through timm's reference
transform: rank 0 (top-1 and top-5 hit), rank 2 (top-5 only) or rank 40 (a miss). So a layout that
mislabels, renumbers a subset, or preprocesses differently from timm cannot give the expected numbers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
from helpers import MEAN, STD, Runner, check, one_line_error, run_eval, timm_reference
from PIL import Image
from safetensors.torch import load_file
from torch.nn import functional as F

from s2mlp_cli.api import create_model
from s2mlp_cli.cli import main
from s2mlp_cli.data import DataError, Preprocess, decode, eval_transform, find_dataset, normalize, synsets
from s2mlp_cli.evaluate import chance_warning


def ours(items, size=56, crop_pct=0.875, interpolation="bicubic", mean=MEAN, std=STD):
    prep = Preprocess(size, crop_pct, interpolation, mean, std)
    transform = eval_transform(prep)
    crops = torch.stack([transform(decode(data)) for _, data in items])
    return normalize(crops, mean, std)


@pytest.mark.parametrize(
    "size,crop_pct,interpolation", [(56, 0.875, "bicubic"), (48, 0.9, "bilinear"), (40, 1.0, "nearest")]
)
def test_transform_equals_timms_create_transform(items, size, crop_pct, interpolation) -> None:
    assert torch.equal(
        ours(items, size, crop_pct, interpolation), timm_reference(items, size, crop_pct, interpolation)
    )


def test_odd_images_decode_to_rgb(items) -> None:
    modes = [Image.open(io.BytesIO(data)).mode for _, data in items[-3:]]
    assert modes == ["L", "CMYK", "RGB"] and Image.open(io.BytesIO(items[-1][1])).format == "PNG"
    assert all(decode(data).mode == "RGB" for _, data in items)


def test_class_folders(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0, stderr
    r = check(doc, expected)
    assert (
        r["layout"].startswith("A. class folders")
        and r["set_shape"].startswith("a subset: 12 images")
        and r["set"] == "val"
    )
    assert r["preprocess"] == {
        "input_size": 56,
        "resize": 64,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": list(MEAN),
        "std": list(STD),
    }
    assert "layout: A. class folders" in stderr


def test_class_subset_keeps_global_indices(tmp_path: Path, setup, items) -> None:
    _, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    ds = find_dataset(root)
    assert sorted({s.label for s in ds.samples}) == sorted(set(labels))
    assert max(labels) > len(set(labels))  # the labels are spread over 0..999, not 0..k-1
    assert {s.key.split("/")[0]: s.label for s in ds.samples} == {synsets()[y]: y for y in labels}


def test_flat_folder_with_shuffled_devkit(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.flat_with_devkit(tmp_path / "flat", items, labels)
    code, doc, stderr = run_eval(weights, "--data", str(root))  # the devkit beside it is found
    assert code == 0, stderr
    assert check(doc, expected)["layout"].startswith("B. flat")
    assert "devkit: " in stderr
    code, doc, _ = run_eval(weights, "--data", str(root), "--devkit", str(tmp_path / "ILSVRC2012_devkit_t12"))
    check(doc, expected)


def test_devkit_ids_are_not_indices(tmp_path: Path, items) -> None:
    """With a shuffled meta.mat, ID - 1 would be wrong for nearly every image; we go through the wnid."""
    labels = [5, 65, 999, 0, 400, 123, 7, 8, 9, 10, 11, 12]
    root = fi.flat_with_devkit(tmp_path / "flat", items, labels, seed=3)
    gt = (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text()
    assert [int(v) - 1 for v in gt.split()] != labels
    assert [s.label for s in find_dataset(root).samples] == labels


def test_flat_folder_without_devkit_says_what_to_pass(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = tmp_path / "lonely"
    root.mkdir()
    for name, data in items:
        (root / name).write_bytes(data)
    code, _, stderr = run_eval(weights, "--data", str(root))
    assert code == 1 and "--devkit DIR" in stderr and len(stderr.strip().splitlines()) == 1


def test_kaggle(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.kaggle(tmp_path / "kaggle", items, labels)
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0, stderr
    assert check(doc, expected)["layout"].startswith("C. Kaggle")
    images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    code, doc, stderr = run_eval(
        weights, "--data", str(images), "--labels", str(root / "LOC_val_solution.csv")
    )
    assert code == 0, stderr
    check(doc, expected)


def test_parquet(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.parquet(tmp_path / "imagenet-1k", items, labels)
    code, doc, stderr = run_eval(weights, "--data", str(root), "--workers", "2")  # decoding in subprocesses
    assert code == 0, stderr
    assert check(doc, expected)["layout"].startswith("D. Hugging Face parquet")


def test_webdataset(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.webdataset(tmp_path / "wds", items, labels)
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0, stderr
    assert check(doc, expected)["layout"].startswith("E. WebDataset")


@pytest.mark.parametrize("as_wnid", [True, False])
def test_generic_labels_file(setup, tmp_path: Path, items, as_wnid: bool) -> None:
    weights, labels, expected = setup
    path = fi.labels_file(tmp_path / "imgs", items, labels, as_wnid)
    code, doc, stderr = run_eval(weights, "--data", str(tmp_path / "imgs"), "--labels", str(path))
    assert code == 0, stderr
    check(doc, expected)


def test_truncated_file_is_skipped_named_and_counted(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    bad = root / synsets()[labels[0]] / "ILSVRC2012_val_00000999.JPEG"
    bad.write_bytes(fi.truncated(items[0][1]))
    code, doc, stderr = run_eval(weights, "--data", str(root))
    assert code == 0, stderr
    r = check(doc, expected)  # the same numbers: the broken file is not counted as a miss
    assert r["skipped"] == 1 and r["skipped_files"][0]["key"].endswith("ILSVRC2012_val_00000999.JPEG")
    assert "skipped" in stderr and "ILSVRC2012_val_00000999.JPEG" in stderr


def test_several_variants_share_a_pass_when_the_crop_matches(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    for name in ("evaltiny_b", "evaltiny_c"):  # the same weights under other cards
        (tmp_path / f"{name}.safetensors").write_bytes(weights.read_bytes())
    # --weights takes one variant; import the file for the others the way users would
    for name in ("evaltiny", "evaltiny_b", "evaltiny_c"):
        assert Runner().invoke(main, ["pull", name, "--from", str(weights)]).exit_code == 0
    result = Runner().invoke(
        main,
        [
            "eval",
            "--variant",
            "evaltiny,evaltiny_b,evaltiny_c",
            "--data",
            str(root),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    a, b, c = json.loads(result.stdout)["results"]
    check({"results": [a]}, expected)
    assert a["shared_pass_with"] == ["evaltiny_b"] and b["shared_pass_with"] == ["evaltiny"]
    assert c["shared_pass_with"] == [] and c["preprocess"]["crop_pct"] == 1.0
    # b normalised the shared crops with its own mean/std 0.5, c cropped differently: both as timm would
    model = create_model("evaltiny").eval()
    model.load_state_dict(load_file(str(weights)))
    y = torch.tensor(labels)
    for r, args in ((b, (56, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)), (c, (56, 1.0, "bicubic"))):
        with torch.no_grad():
            logits = model(timm_reference(items, *args))
        assert r["top1"] == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item(), abs=1e-3)
        assert r["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-4)


def test_overrides_are_applied_and_reported(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    code, doc, stderr = run_eval(
        weights,
        "--data",
        str(root),
        "--crop-pct",
        "1.0",
        "--interpolation",
        "bilinear",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.5,0.5,0.5",
    )
    assert code == 0, stderr
    r = doc["results"][0]
    assert r["preprocess"] == {
        "input_size": 56,
        "resize": 56,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    model = create_model("evaltiny").eval()
    model.load_state_dict(load_file(str(weights)))
    with torch.no_grad():
        logits = model(timm_reference(items, 56, 1.0, "bilinear", (0.5,) * 3, (0.5,) * 3))
    top1 = 100 * (logits.argmax(1) == torch.tensor(labels)).float().mean().item()
    assert r["top1"] == pytest.approx(top1, abs=1e-3)


def test_outputs_limit_and_predictions(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    out, preds = tmp_path / "o" / "r.json", tmp_path / "p.jsonl"
    code, doc, stderr = run_eval(
        weights, "--data", str(root), "--limit", "7", "--output", str(out), "--save-predictions", str(preds)
    )
    assert code == 0, stderr
    assert json.loads(out.read_text()) == doc and doc["results"][0]["images"] == 7
    assert {"device", "torch", "math_mode", "workers"} <= set(doc["env"])
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 7 and all(len(r["top5"]) == 5 and r["model"] == "evaltiny" for r in rows)
    hits = sum(r["top5"][0] == r["label"] for r in rows)
    assert 100 * hits / 7 == pytest.approx(doc["results"][0]["top1"], abs=1e-3)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.mkdir(), "no images in a layout we recognise; accepted layouts"),
        (lambda p: (p.mkdir(), (p / "cat.jpg").write_bytes(b"x")), "1 images but no labels in a layout"),
        (lambda p: (p.mkdir(), (p / "n99999999").mkdir()), "folder n99999999 is not an ImageNet-1k synset"),
        (lambda p: None, "no such file or folder"),
    ],
    ids=["empty", "unlabelled", "unknown-wnid", "missing"],
)
def test_wrong_folders_give_one_line_errors(setup, tmp_path: Path, make, needle) -> None:
    weights, _, _ = setup
    make(tmp_path / "data")
    code, _, stderr = run_eval(weights, "--data", str(tmp_path / "data"))
    if not (tmp_path / "data").exists():  # a bad argument: a usage error, before anything is loaded
        assert code == 2 and "--data: " in stderr and needle in stderr
        return
    assert code == 1 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert needle in stderr


def test_variant_without_weights_is_a_clear_error(zoo: Path, tmp_path: Path, items) -> None:
    root = fi.class_folders(tmp_path / "val", items[:2], [1, 2])
    result = Runner().invoke(main, ["eval", "--variant", "evaltiny", "--data", str(root), "--device", "cpu"])
    assert result.exit_code == 1 and "no pretrained weights are published for evaltiny" in result.stderr


def test_chance_warning() -> None:
    assert "label mapping" in chance_warning(0.12, 50_000)
    assert chance_warning(0.12, 200) is None and chance_warning(75.0, 50_000) is None


def test_find_dataset_errors_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="accepted layouts"):
        find_dataset(tmp_path)


@pytest.mark.gpu
def test_cuda_eval_gives_the_cpu_numbers(setup, tmp_path: Path, items) -> None:
    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    code, doc, stderr = run_eval(weights, "--data", str(root), "--device", "cuda", "--channels-last")
    assert code == 0, stderr
    check(doc, expected)
    assert doc["env"]["math_mode"] == "fp32, TF32 off (full precision)"


def test_every_problem_is_named_at_once_before_torch_is_imported(zoo: Path, tmp_path: Path) -> None:
    """Bad paths, several variants without weights and bad outputs: one message, exit 2, no torch."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from s2mlp_cli.cli import main
        args = ["eval", "--variant", "evaltiny,evaltiny_b,nosuch", "--data", {str(tmp_path / "nope")!r},
                "--devkit", {str(tmp_path / "nokit")!r}, "--output", "r.txt", "--std", "0.2,0,0.2"]
        result = CliRunner().invoke(main, args)
        print(result.exit_code)
        err = result.stderr.strip().splitlines()
        print(" | ".join(err[next(i for i, e in enumerate(err) if e.startswith("Error:")):]))
        print(",".join(m for m in ("torch", "timm", "torchvision") if m in sys.modules) or "none")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    exit_code, message, heavy = done.stdout.strip().splitlines()
    assert exit_code == "2" and heavy == "none" and message.startswith("Error: 7 problems: |   - ")
    for needle in (
        "--variant: unknown model 'nosuch'",
        f"--data: {tmp_path / 'nope'}: no such file or folder",
        "--devkit: ",
        "--std: std must be three finite numbers above 0",
        "--output: r.txt: use a .json or .csv or .md file",
        "no pretrained weights are published for evaltiny;",
        "no pretrained weights are published for evaltiny_b",
    ):
        assert needle in message, (needle, message)


def test_missing_weights_alone_exit_1_naming_every_variant(zoo: Path, tmp_path: Path, items) -> None:
    root = fi.class_folders(tmp_path / "val", items[:2], [1, 2])
    args = ["eval", "--variant", "evaltiny,evaltiny_c", "--data", str(root), "--device", "cpu"]
    result = Runner().invoke(main, args)
    one_line_error(result.exit_code, result.stderr, 1, "Error: 2 problems:", "published for evaltiny;",
                   "published for evaltiny_c;")  # fmt: skip
