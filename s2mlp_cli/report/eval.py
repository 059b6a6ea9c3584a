"""`s2mlp eval` on the terminal: one table of models for one set, or models x sets (each top-1 with its
95% interval) for several; `≈` marks a model whose top-1 is within noise of the set's best (McNemar
p >= 0.05 on the same images); then the paired comparisons, ImageNet-C's table, each model's
preprocessing and weights, and the conditions."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from s2mlp_cli.report.cells import ORIGIN, Column, num, pct, span
from s2mlp_cli.report.tables import table

EVAL_COLUMNS: list[Column] = [
    ("model", lambda r: r["model"]),
    ("set", lambda r: str(r.get("set") or "val")),
    ("top-1", lambda r: pct(r["top1"])),
    ("95% CI", lambda r: span(r.get("top1_ci95"), ".2f")),
    ("top-5", lambda r: pct(r["top5"])),
    ("loss", lambda r: num(r["loss"], ".4f")),
    ("images", lambda r: f"{r['images']:,}"),
    ("skipped", lambda r: str(r["skipped"])),
    ("images/s", lambda r: num(r["images_per_s"], ".1f")),
    ("paper", lambda r: pct(r["paper_top1"])),
    ("Δ", lambda r: num(r["delta_top1"], "+.2f") + ("*" if r.get("paper_in_ci95") else "")),
]


NOISE = "≈"


def eval_tables(doc: dict[str, Any]) -> list[Any]:
    results = [r for r in doc["results"] if not r.get("corruption")]
    corrupted = [r for r in doc["results"] if r.get("corruption")]
    comparisons = doc.get("comparisons") or []
    sets = list(dict.fromkeys(str(r.get("set") or "val") for r in results))
    partial = " (partial)" if doc.get("partial") else ""
    parts: list[Any] = []
    if len(sets) <= 1 and results:
        name = results[0].get("set_name") or "ImageNet-1k val"
        columns = [
            c if c[0] != "top-1" else ("top-1", _top1_cell(comparisons, results)) for c in EVAL_COLUMNS
        ]
        columns = [c for c in columns if c[0] != "set"]
        if all(r.get("paper_top1") is None for r in results):  # a run's own classes: no paper to compare
            columns = [c for c in columns if c[0] not in ("paper", "Δ")]
        parts.append(table(f"s2mlp eval: {name}{partial}", columns, results))
    elif results:
        parts.append(_sets_table(results, sets, comparisons, partial))
    if len(sets) <= 1 and any(r.get("paper_in_ci95") for r in results):
        parts.append(Text("Δ*: the paper's top-1 lies inside this run's 95% interval"))
    if any(_within_noise(comparisons, results, r) for r in results):
        parts.append(Text(f"{NOISE}: within noise of the set's best model (McNemar's exact test, p >= 0.05)"))
    parts += [Text(line) for line in _comparison_lines(comparisons)]
    if corrupted:
        parts += _corruption_tables(doc.get("corruption") or [])
    env = doc["env"]
    seen = set()
    for r in doc["results"]:
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        p = r["preprocess"]
        parts.append(
            Text(
                f"{r['model']}: resize {p['resize']} {p['interpolation']}, centre crop {p['input_size']} "
                f"(crop_pct {p['crop_pct']}), mean {tuple(p['mean'])}, std {tuple(p['std'])}; "
                f"weights {r['weights']} ({ORIGIN[r.get('weights_origin', 'card')]})"
            )
        )
    for name in sets if len(sets) > 1 else sets[:1]:
        row = next(r for r in results if str(r.get("set") or "val") == name)
        shape = row.get("set_shape") or row.get("set")
        if row.get("left_out") is not None:  # ReaL: the val images that have ReaL labels
            shape = f"{row['images']:,} of the val images have ReaL labels ({row['left_out']:,} left out)"
        parts.append(Text(f"{name} ({row.get('set_name') or 'ImageNet-1k val'}): {shape}"))
    parts.append(
        Text(
            f"{env['device_name']} ({env['device']}), {env['math_mode']}, batch {env['batch_size']}, "
            f"{env['workers']} workers, "
            + (f"cpu threads {env['threads']}, " if env["device"] == "cpu" and "threads" in env else "")
            + f"torch {env['torch']}"
        )
    )
    return parts


def _top1_cell(comparisons: list[dict], results: list[dict]) -> Any:
    def cell(r: dict) -> str:
        return pct(r["top1"]) + (f" {NOISE}" if _within_noise(comparisons, results, r) else "")

    return cell


def _within_noise(comparisons: list[dict], results: list[dict], r: dict) -> bool:
    """Whether `r` is not the best of its set and its pair with the best is not significant."""
    same = [o for o in results if o.get("set") == r.get("set") and o.get("top1") is not None]
    if r.get("top1") is None or len(same) < 2:
        return False
    best = max(same, key=lambda o: o["top1"])
    if best is r:
        return False
    for c in comparisons:
        if c["set"] == r.get("set") and {c["a"], c["b"]} == {r["model"], best["model"]}:
            return not c["significant"]
    return False


def _sets_table(results: list[dict], sets: list[str], comparisons: list[dict], partial: str) -> Any:
    by = {(r["model"], str(r.get("set") or "val")): r for r in results}
    models = list(dict.fromkeys(r["model"] for r in results))

    def column(name: str) -> Column:
        def cell(row: dict) -> str:
            r = by.get((row["model"], name))
            if r is None or r.get("top1") is None:
                return "-"
            ci = r.get("top1_ci95")
            noise = f" {NOISE}" if _within_noise(comparisons, results, r) else ""
            return f"{r['top1']:.2f} ({span(ci, '.1f')}){noise}" if ci else f"{r['top1']:.2f}{noise}"

        return (name, cell)

    columns: list[Column] = [("model", lambda row: row["model"]), *[column(s) for s in sets]]
    return table(f"s2mlp eval: top-1 % (95% CI) by set{partial}", columns, [{"model": m} for m in models])


def _comparison_lines(comparisons: list[dict]) -> list[str]:
    lines = []
    for c in comparisons:
        verdict = "significant" if c["significant"] else "within noise"
        lines.append(
            f"{c['set']}: {c['a']} vs {c['b']}: right only for one of them on {c['a_only']:,} vs "
            f"{c['b_only']:,} images, p = {c['p_value']:.3g} ({verdict})"
        )
    return lines


def _corruption_tables(summary: list[dict]) -> list[Any]:
    parts: list[Any] = []
    for model in dict.fromkeys(s["model"] for s in summary):
        rows = [s for s in summary if s["model"] == model and s["corruption"] != "mCE"]
        mce = next(s for s in summary if s["model"] == model and s["corruption"] == "mCE")
        columns: list[Column] = [("corruption", lambda s: s["corruption"])]
        columns += [(f"err {k}", _severity(k)) for k in "12345"]
        columns += [("mean", lambda s: num(s["mean_error"], ".2f")), ("CE", lambda s: num(s["ce"], ".2f"))]
        parts.append(table(f"{model} on ImageNet-C: top-1 error % by severity", columns, rows))
        if mce["ce"] is not None:
            parts.append(
                Text(f"{model}: mCE {mce['ce']:.2f} (normalised by AlexNet's errors, 15 corruptions)")
            )
        else:
            parts.append(
                Text(
                    f"{model}: no mCE: {mce['corruptions']} of the 15 corruptions have all five severities "
                    "(the mean errors above are unnormalised)"
                )
            )
    return parts


def _severity(k: str) -> Any:
    return lambda s: num(s["errors"].get(k), ".2f")
