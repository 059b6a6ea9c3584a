"""The ImageNet test sets beyond val, intervals and paired tests, on generated sets with known answers.

As in test_eval.py, each label is a chosen rank of the fixed model's own ranking of the image (through
timm's reference transform), so every set's top-1 / top-5 is known exactly before the run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
from helpers import RANKS, cli, timm_reference
from safetensors.torch import load_file

from s2mlp_cli import create_model
from s2mlp_cli.data.labels import synsets, timm_info
from s2mlp_cli.evaluate.significance import mcnemar, wilson

CPU = ["--device", "cpu", "--workers", "0", "--batch-size", "5", "--no-cache"]


def logits_of(weights: Path, items) -> torch.Tensor:
    model = create_model("evaltiny").eval()
    model.load_state_dict(load_file(str(weights)))
    with torch.no_grad():
        return model(timm_reference(items))


def eval_json(weights: Path, *args: str) -> dict:
    result = cli("eval", "--variant", "evaltiny", "--weights", str(weights), *CPU, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def expected(n: int) -> tuple[float, float]:
    top1 = round(100 * sum(RANKS[i % 3] == 0 for i in range(n)) / n, 3)
    top5 = round(100 * sum(RANKS[i % 3] < 5 for i in range(n)) / n, 3)
    return top1, top5


def write(root: Path, items, folders: list[str], names: list[str] | None = None) -> Path:
    for i, ((name, data), folder) in enumerate(zip(items, folders, strict=True)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / (names[i] if names else name)).write_bytes(data)
    return root


# --- the statistics against reference computations ------------------------------------------------------


def test_wilson_against_a_reference_computation() -> None:
    # Wilson (1927): (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n); here by the quadratic's roots
    for hits, n in [(40_000, 50_000), (0, 10), (10, 10), (7, 12)]:
        z = 1.959963984540054
        a, b, c = n + z * z, -(2 * hits + z * z), hits * hits / n
        roots = sorted(((-b - s * math.sqrt(b * b - 4 * a * c)) / (2 * a)) for s in (1, -1))
        assert wilson(hits, n) == pytest.approx((100 * roots[0], 100 * roots[1]), abs=1e-3)
    lo, hi = wilson(40_000, 50_000)
    assert hi - lo == pytest.approx(0.70, abs=0.01)  # ±0.35 points at 80% of 50,000
    assert wilson(0, 0) is None


def test_mcnemar_against_the_binomial_by_hand() -> None:
    # 2 vs 8 discordant images: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert mcnemar(2, 8) == pytest.approx(112 / 1024, rel=1e-12)
    assert mcnemar(8, 2) == mcnemar(2, 8)
    assert mcnemar(0, 0) == 1.0 and mcnemar(5, 5) == 1.0
    assert mcnemar(0, 30) == pytest.approx(2 * 0.5**30, rel=1e-9)
    tail = sum(math.comb(2700, i) for i in range(1201)) / 2**2700  # exact integers
    assert mcnemar(1200, 1500) == pytest.approx(2 * tail, rel=1e-9)


# --- each set -------------------------------------------------------------------------------------------


def test_v2_folder_indices(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    root = write(tmp_path / "imagenetv2-matched-frequency-format-val", items, [str(k) for k in labels])
    doc = eval_json(weights, "--data", str(root))
    (r,) = doc["results"]
    assert (r["set"], r["set_name"], (r["top1"], r["top5"])) == ("v2", "ImageNet-V2", expected(len(items)))
    assert r["layout"].startswith("ImageNet-V2 class folders") and r["paper_top1"] is None


@pytest.mark.parametrize("kind", ["a", "r"])
def test_a_and_r_restrict_the_logits_to_their_200_classes(setup, tmp_path: Path, items, kind) -> None:
    weights, _, _ = setup
    logits = logits_of(weights, items)
    index = {w: i for i, w in enumerate(synsets())}
    valid = sorted(index[w] for w in timm_info(f"imagenet_{kind}_synsets.txt").split())
    restricted = logits[:, valid]
    order = restricted.argsort(dim=1, descending=True)
    labels = [valid[int(order[i, RANKS[i % 3]])] for i in range(len(items))]
    full = logits.argsort(dim=1, descending=True)
    # the restriction matters: unrestricted, fewer of these labels would be the top-1
    assert sum(int(full[i, 0]) == labels[i] for i in range(len(items))) < expected(len(items))[0] / 100 * len(
        items
    )
    root = write(tmp_path / f"imagenet-{kind}", items, [synsets()[k] for k in labels])
    doc = eval_json(weights, "--data", str(root))
    (r,) = doc["results"]
    assert (r["set"], r["classes"], (r["top1"], r["top5"])) == (kind, 200, expected(len(items)))
    n1 = round(r["top1"] * r["images"] / 100)
    assert tuple(r["top1_ci95"]) == wilson(n1, r["images"])


def test_sketch_is_named_by_its_file_names(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    names = [f"sketch_{i}.JPEG" for i in range(len(items))]
    root = write(tmp_path / "data", items, [synsets()[k] for k in labels], names)
    (r,) = eval_json(weights, "--data", str(root))["results"]
    assert (r["set"], (r["top1"], r["top5"])) == ("sketch", expected(len(items)))


def test_real_labels_multi_label_and_empty_lists(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    logits = logits_of(weights, items)
    order = logits.argsort(dim=1, descending=True)
    names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(items))]
    root = write(tmp_path / "val", items, [synsets()[k] for k in labels], names)
    real = []
    for i in range(len(items)):  # 4 kinds, in turn: top-1 in the list / only a top-5 / a miss / empty
        kind = i % 4
        real.append(
            [int(order[i, 40]), int(order[i, 0])] if kind == 0
            else [int(order[i, 3]), int(order[i, 60])] if kind == 1
            else [int(order[i, 50])] if kind == 2
            else []
        )  # fmt: skip
    (tmp_path / "real.json").write_text(json.dumps(real))
    doc = eval_json(weights, "--data", str(root), "--real-labels", str(tmp_path / "real.json"))
    val, rl = doc["results"]
    assert (val["set"], rl["set"], rl["set_name"]) == ("val", "real", "ImageNet-ReaL")
    assert (val["top1"], val["top5"]) == expected(len(items))
    scored = [i for i in range(len(items)) if i % 4 != 3]
    top1 = round(100 * sum(i % 4 == 0 for i in scored) / len(scored), 3)
    top5 = round(100 * sum(i % 4 in (0, 1) for i in scored) / len(scored), 3)
    assert (rl["top1"], rl["top5"], rl["images"], rl["left_out"]) == (top1, top5, 9, 3)


def test_imagenet_c_per_corruption_and_severity(setup, tmp_path: Path, items) -> None:
    from s2mlp_cli.evaluate.sets import ALEXNET_ERRORS

    weights, labels, _ = setup
    root = tmp_path / "imagenet-c"
    for severity in "12345":
        write(root / "gaussian_noise" / severity, items, [synsets()[k] for k in labels])
    write(root / "fog" / "1", items, [synsets()[k] for k in labels])
    doc = eval_json(weights, "--data", f"c={root}")
    assert len(doc["results"]) == 6 and {r["set"] for r in doc["results"]} >= {
        "c/gaussian_noise/3",
        "c/fog/1",
    }
    error = round(100 - expected(len(items))[0], 3)
    summary = {s["corruption"]: s for s in doc["corruption"]}
    noise = summary["gaussian_noise"]
    assert noise["errors"] == {s: error for s in "12345"} and noise["mean_error"] == error
    assert noise["ce"] == pytest.approx(5 * error / sum(ALEXNET_ERRORS["gaussian_noise"]), abs=1e-3)
    assert summary["fog"]["ce"] is None  # one severity of five: no normalised CE
    assert summary["mCE"]["ce"] is None and summary["mCE"]["corruptions"] == 1
    result = cli("eval", "--variant", "evaltiny", "--weights", str(weights), *CPU, "--data", f"c={root}")
    assert "on ImageNet-C" in result.stdout and "no mCE: 1 of the 15" in result.stdout


# --- several models and sets, paired tests -------------------------------------------------------------


def test_models_by_sets_with_paired_comparisons(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    val = fi.class_folders(tmp_path / "val", items, labels)
    v2 = write(tmp_path / "v2", items, [str(k) for k in labels])
    other = tmp_path / "other.safetensors"
    torch.manual_seed(9)
    state = create_model("evaltiny").state_dict()
    state["head.weight"] = state["head.weight"] * 50
    from safetensors.torch import save_file

    save_file(state, str(other))
    preds = tmp_path / "first.jsonl"
    first = eval_json(weights, "--data", str(val), "--data", f"v2={v2}", "--save-predictions", str(preds))
    assert [r["set"] for r in first["results"]] == ["val", "v2"]
    saved = [json.loads(line) for line in preds.read_text().splitlines()]
    assert {p["set"] for p in saved} == {"val", "v2"}

    # evaltiny (these weights) against the saved predictions of the first run: the same answers, p = 1
    second = eval_json(weights, "--data", str(val), "--compare-with", str(preds))
    (c,) = second["comparisons"]
    assert (c["a"], c["b"], c["set"], c["a_only"], c["b_only"], c["p_value"]) == (
        "evaltiny", "evaltiny (first.jsonl)", "val", 0, 0, 1.0,
    )  # fmt: skip

    # another model on the same images, through its own saved predictions: the counts by hand
    theirs = tmp_path / "theirs.jsonl"
    eval_json(other, "--data", str(val), "--save-predictions", str(theirs))
    mine = {p["key"]: p["top5"][0] == p["label"] for p in saved if p["set"] == "val"}
    them = {p["key"]: p["top5"][0] == p["label"] for p in map(json.loads, theirs.read_text().splitlines())}
    a_only = sum(mine[k] and not them[k] for k in mine)
    b_only = sum(them[k] and not mine[k] for k in mine)
    (c,) = eval_json(weights, "--data", str(val), "--compare-with", str(theirs))["comparisons"]
    assert (c["a_only"], c["b_only"]) == (a_only, b_only) and a_only + b_only > 0
    assert c["p_value"] == pytest.approx(mcnemar(a_only, b_only), rel=1e-3)

    result = cli("eval", "--variant", "evaltiny", "--weights", str(weights), *CPU,
                 "--data", str(val), "--data", f"v2={v2}")  # fmt: skip
    assert "top-1 % (95% CI) by set" in result.stdout and " val " in result.stdout and " v2" in result.stdout


def test_compare_with_other_images_is_refused(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    val = fi.class_folders(tmp_path / "val", items, labels)
    preds = tmp_path / "p.jsonl"
    eval_json(weights, "--data", str(val), "--limit", "6", "--save-predictions", str(preds))
    result = cli("eval", "--variant", "evaltiny", "--weights", str(weights), *CPU, "--data", str(val),
                 "--compare-with", str(preds))  # fmt: skip
    assert result.exit_code == 2 and "--compare-with" in result.stderr and "same images" in result.stderr


def test_paper_number_inside_the_interval_is_said(setup, tmp_path: Path, items) -> None:
    weights, labels, _ = setup
    val = fi.class_folders(tmp_path / "val", items, labels)
    (r,) = eval_json(weights, "--data", str(val))["results"]
    lo, hi = r["top1_ci95"]
    assert r["paper_top1"] == 70.0 and r["paper_in_ci95"] == (lo <= 70.0 <= hi)
