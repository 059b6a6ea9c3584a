"""From each pass's per-image top-5 to what papers report: 95% intervals on every top-1 and top-5, the
ReaL score of the val pass, paired comparisons of models on the same images (and against the saved
predictions of an earlier run), and ImageNet-C's errors, corruption errors and mCE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s2mlp_cli.data.samples import Dataset
from s2mlp_cli.data.testsets import CORRUPTIONS, SETS
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.evaluate.significance import ALPHA, contains, mcnemar, wilson
from s2mlp_cli.schema import read_json

# AlexNet's top-1 error per corruption and severity 1-5 on ImageNet-C: the normaliser of the corruption
# error (CE) and so of the mCE. Values as published with the benchmark (Hendrycks and Dietterich, ICLR
# 2019) and as timm's ImageNet-C tooling carries them; each row's mean is the per-corruption AlexNet error
# the benchmark's papers quote (gaussian_noise 0.886428, shot_noise 0.894468, ...).
ALEXNET_ERRORS = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}


def hits(ds: Dataset, ranked: tuple[Any, Any]) -> tuple[Any, Any]:
    """Per image read (in index order): top-1 right, top-5 right."""
    import numpy as np

    idx, top = ranked
    labels = np.array([ds.samples[i].label for i in idx], dtype=np.int64)
    if not len(idx):
        return np.zeros(0, bool), np.zeros(0, bool)
    return top[:, 0] == labels, (top == labels[:, None]).any(axis=1)


def with_intervals(row: dict[str, Any], top1: Any, top5: Any) -> None:
    """Wilson 95% intervals of the row's top-1 and top-5, and whether the paper's top-1 lies inside."""
    n = int(len(top1))
    row["top1_ci95"] = None if row.get("top1") is None else wilson(int(top1.sum()), n)
    row["top5_ci95"] = None if row.get("top5") is None else wilson(int(top5.sum()), n)
    row["paper_in_ci95"] = contains(row["top1_ci95"], row.get("paper_top1"))


def real_hits(ds: Dataset, ranked: tuple[Any, Any]) -> tuple[list[int], Any, Any]:
    """Per image read that has ReaL labels (their positions in `ranked`): top-1 right, top-5 right,
    where right means a class in the image's list. Images with an empty list are not among them."""
    import numpy as np

    idx, top = ranked
    keep = [k for k, i in enumerate(idx) if ds.real[i]]
    one = np.array([int(top[k, 0]) in ds.real[idx[k]] for k in keep], dtype=bool)
    five = np.array([bool(set(top[k].tolist()) & set(ds.real[idx[k]])) for k in keep], dtype=bool)
    return keep, one, five


def real_row(row: dict[str, Any], read: int, real: tuple[list[int], Any, Any]) -> dict[str, Any]:
    """The val row scored with ReaL labels (`real_hits`); of the `read` images, those with an empty
    list are left out (and counted)."""
    keep, one, five = real
    n = len(keep)
    out = {
        **row,
        "set": "real",
        "set_name": SETS["real"],
        "top1": round(100 * one.sum() / n, 3) if n else None,
        "top5": round(100 * five.sum() / n, 3) if n else None,
        "loss": None,
        "images": n,
        "left_out": read - n,
        "paper_top1": None,
        "delta_top1": None,
    }
    with_intervals(out, one, five)
    return out


def compare(
    set_name: str, keys: list[str], correct: dict[str, Any], saved: dict[str, dict[str, bool]]
) -> list[dict[str, Any]]:
    """McNemar's exact test for every pair of models on one set's images; and every model against each
    saved run's model whose images are these (by key)."""
    names = list(correct)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rows.append(_pair(a, b, set_name, correct[a], correct[b]))
    for b, by_key in saved.items():
        missing = [k for k in keys if k not in by_key]
        if missing or len(by_key) != len(keys):
            raise S2MLPError(
                f"{b} was scored on other images than set {set_name} ({len(by_key):,} saved, {len(keys):,} "
                f"here, {len(missing):,} of these missing there): a paired test needs the same images",
                param="compare_with",
            )
        import numpy as np

        theirs = np.array([by_key[k] for k in keys], dtype=bool)
        rows += [_pair(a, b, set_name, correct[a], theirs) for a in names]
    return rows


def _pair(a: str, b: str, set_name: str, right_a: Any, right_b: Any) -> dict[str, Any]:
    a_only, b_only = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = mcnemar(a_only, b_only)
    return {
        "a": a,
        "b": b,
        "set": set_name,
        "a_only": a_only,
        "b_only": b_only,
        "p_value": float(f"{p:.4g}"),
        "significant": p < ALPHA,
    }


PREDICTIONS_MAX_BYTES = 512 * 2**20  # ImageNet val's 50,000 predictions of several models: ~30 MB


def read_saved(path: str | Path, labels: dict[str, dict[str, int]]) -> dict[str, dict[str, dict[str, bool]]]:
    """An earlier run's `--save-predictions` JSON lines as {set: {"model (file)": {key: top-1 right}}}.
    A row without `set` belongs to the val set. Labels must agree with this run's (`labels[set][key]`)."""
    path = Path(path).expanduser()
    out: dict[str, dict[str, dict[str, bool]]] = {}
    rows = read_json(path, "saved predictions", PREDICTIONS_MAX_BYTES, param="compare_with", lines=True)
    for n, r in enumerate(rows, 1):
        try:
            model, key, label, top5 = r["model"], r["key"], r["label"], r["top5"]
            set_name = r.get("set", "val")
            ok = isinstance(model, str) and isinstance(key, str) and isinstance(set_name, str)
            ok = ok and isinstance(label, int) and not isinstance(label, bool) and isinstance(top5, list)
            ok = ok and all(isinstance(c, int) and not isinstance(c, bool) for c in top5)
        except (KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise S2MLPError(
                f"{path}: prediction {n}: not a saved prediction (model, key, label, top5)",
                param="compare_with",
            )
        if set_name in labels and labels[set_name].get(key, label) != label:
            raise S2MLPError(
                f"{path}:{n}: {key} is labelled {label} there and {labels[set_name][key]} here",
                param="compare_with",
            )
        name = f"{model} ({path.name})"
        out.setdefault(set_name, {}).setdefault(name, {})[key] = bool(top5) and int(top5[0]) == label
    for set_name, by_model in out.items():  # before any image is decoded: the same images, or nothing
        keys = labels.get(set_name)
        for model, by_key in by_model.items():
            if keys is not None and set(by_key) != set(keys):
                missing = len(set(keys) - set(by_key))
                raise S2MLPError(
                    f"{model} was scored on other images than set {set_name} ({len(by_key):,} saved, "
                    f"{len(keys):,} here, {missing:,} of these missing there): a paired test needs the "
                    "same images",
                    param="compare_with",
                )
    return out


def corruption_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and corruption: top-1 error by severity, its mean, and the corruption error normalised
    by AlexNet's (CE, for the 15 benchmark corruptions with all five severities); per model the mCE when
    all 15 are there."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        if r.get("corruption") and r.get("top1") is not None:
            err = round(100 - r["top1"], 3)
            table.setdefault(r["model"], {}).setdefault(r["corruption"], {})[r["severity"]] = err
    out = []
    for model, by_corruption in table.items():
        ces = []
        for corruption, errors in by_corruption.items():
            complete = corruption in ALEXNET_ERRORS and sorted(errors) == [1, 2, 3, 4, 5]
            ce = None
            if complete:
                ce = round(100 * sum(errors.values()) / (100 * sum(ALEXNET_ERRORS[corruption])), 3)
                ces.append(ce)
            out.append(
                {
                    "model": model,
                    "corruption": corruption,
                    "errors": {str(s): e for s, e in sorted(errors.items())},
                    "mean_error": round(sum(errors.values()) / len(errors), 3),
                    "ce": ce,
                }
            )
        mce = round(sum(ces) / len(CORRUPTIONS), 3) if len(ces) == len(CORRUPTIONS) else None
        out.append({"model": model, "corruption": "mCE", "ce": mce, "corruptions": len(ces)})
    return out
