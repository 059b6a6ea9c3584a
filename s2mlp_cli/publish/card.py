"""The two files a push writes besides the weights: timm's Hub config (`config.json`) and the model card
(`README.md`), which claims only what the given result files show."""

from __future__ import annotations

import math
from typing import Any

from s2mlp_cli.publish.request import Evidence
from s2mlp_cli.report import Column, markdown_table
from s2mlp_cli.report.cells import md_escape
from s2mlp_cli.zoo import Card

WEIGHTS_FILE = "model.safetensors"


def config_json(card: Card, classes: list[str] | None = None) -> dict[str, Any]:
    """timm's Hub config: `timm.create_model("hf-hub:...")` builds `architecture` with this data config;
    weights trained on a run's own `classes` name them (`label_names`)."""
    p = card.preprocess
    num_classes = len(classes) if classes else card.arch.get("num_classes", 1000)
    config = {
        "architecture": card.name,
        "num_classes": num_classes,
        "pretrained_cfg": {
            "tag": "s2mlp",
            "input_size": [3, p.input_size, p.input_size],
            "fixed_input_size": card.family_facts.fixed_input,
            "interpolation": p.interpolation,
            "crop_pct": p.crop_pct,
            "crop_mode": "center",
            "mean": list(p.mean),
            "std": list(p.std),
            "num_classes": num_classes,
            "license": None,
        },
    }
    if classes:
        config["label_names"] = config["pretrained_cfg"]["label_names"] = list(classes)
    return config


def model_card(
    card: Card, repo: str, sha256: str, evidence: Evidence, classes: list[str] | None = None
) -> str:
    """The repository's README.md: what the file is, and only the measurements the result files show."""
    p = card.preprocess
    paper = card.paper
    lines = [
        "---",
        "library_name: timm",
        "tags:",
        "- image-classification",
        "- timm",
        "- s2mlp",
        f"- {card.family}",
        "---",
        "",
        f"# {card.name}",
        "",
        f"{card.description}. Weights pushed with `s2mlp push`.",
        "",
        "| | |",
        "|---|---|",
        f"| variant | `{card.name}` (family `{card.family}`) |",
        f"| paper | {paper['title']}" + (f" ({paper['arxiv']})" if paper.get("arxiv") else "") + " |",
        f"| params | {card.params:,} ({card.params / 1e6:.2f} M) |",
        f"| GMACs | {card.gmacs:.2f} (1×3×{p.input_size}×{p.input_size}) |",
        f"| weights | `{WEIGHTS_FILE}`, sha256 `{sha256}` |",
        f"| eval transform | resize {p.resize} {p.interpolation}, centre crop {p.input_size} (crop_pct "
        f"{p.crop_pct}), mean {list(p.mean)}, std {list(p.std)} |",
        f"| transform source | {card.sources.get('preprocess', 'not stated')} |",
        *_classes_row(classes),
        "",
        "## Use",
        "",
        "```",
        f"s2mlp pull {card.name} --repo {repo}",
        f"s2mlp eval --variant {card.name} --data "
        + ("VAL_FOLDER_OF_THESE_CLASSES" if classes else "/imagenet/val"),
        "```",
        "",
        "```python",
        "import timm",
        "import s2mlp_cli.models  # registers the architecture with timm",
        "",
        f'model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()',
        "```",
        "",
    ]
    lines += _eval_section(evidence) + _bench_section(evidence)
    if not evidence.eval_rows and not evidence.bench_rows:
        lines += ["No evaluation or benchmark results were published with these weights.", ""]
    return "\n".join(lines)


def _classes_row(classes: list[str] | None) -> list[str]:
    """Weights trained on a run's own classes: their names in label order (as the metadata holds them)."""
    if not classes:
        return ["| classes | ImageNet-1k's 1000 (sorted synsets) |"]
    shown = ", ".join(md_escape(c) for c in classes[:50]) + (
        f", ... ({len(classes)} in all)" if len(classes) > 50 else ""
    )
    return [f"| classes | {len(classes)} of the run's own, in label order: {shown} |"]


def _eval_section(evidence: Evidence) -> list[str]:
    if not evidence.eval_rows:
        return []
    env = evidence.eval_env
    columns: list[Column] = [
        ("model", lambda r: r["model"]),
        ("top-1", lambda r: _cell(r.get("top1"), ".3f")),
        ("top-5", lambda r: _cell(r.get("top5"), ".3f")),
        ("loss", lambda r: _cell(r.get("loss"), ".5f")),
        ("images", lambda r: _cell(r.get("images"), ",")),
        ("skipped", lambda r: _cell(r.get("skipped"), "d")),
        (
            "set",
            lambda r: " ".join(filter(None, [r.get("set_name"), r.get("set_shape") or r.get("set")])) or "-",
        ),
        ("device", lambda r: _device(env)),
        ("dtype", lambda r: r.get("dtype") or env.get("dtype") or "-"),
        ("date", lambda r: env.get("date") or "not recorded"),
    ]
    lines = ["## Evaluation", "", "From the `s2mlp eval` result file given at push time.", ""]
    lines += markdown_table(columns, evidence.eval_rows)
    sha = {r.get("weights_sha256") for r in evidence.eval_rows} - {None}
    lines += [
        "",
        f"Weights evaluated: sha256 `{sha.pop()}`." if len(sha) == 1 else "Weights' sha256 not recorded.",
        "",
    ]
    return lines


def _bench_section(evidence: Evidence) -> list[str]:
    if not evidence.bench_rows:
        return []
    env = evidence.bench_env

    def iqr(r: dict[str, Any]) -> str:
        low, high = r.get("throughput_iqr") or [None, None]
        return f"{_cell(low, '.1f')}–{_cell(high, '.1f')}"

    columns: list[Column] = [
        ("model", lambda r: r["model"]),
        ("batch", lambda r: _cell(r.get("batch_size"), "d")),
        ("images/s", lambda r: _cell(r.get("throughput"), ".1f")),
        ("IQR", iqr),
        ("ms bs1 p50", lambda r: _cell((r.get("latency_bs1_ms") or {}).get("p50"), ".2f")),
        ("peak MiB", lambda r: _cell(r.get("peak_memory_mib"), ".0f")),
        ("device", lambda r: _device(env)),
        ("dtype", lambda r: env.get("dtype") or "-"),
        ("date", lambda r: env.get("date") or "not recorded"),
    ]
    lines = ["## Speed", "", "From the `s2mlp bench` result file given at push time.", ""]
    return lines + markdown_table(columns, evidence.bench_rows) + [""]


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _device(env: dict[str, Any]) -> str:
    name = env.get("device_name")
    return f"{name} ({env.get('device')})" if name else str(env.get("device") or "-")
