"""An evaluation request, and every problem with it found before anything is loaded: names, paths,
weight sources, sizes, output files. No torch, no network."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from s2mlp_cli import report, sources
from s2mlp_cli.errors import S2MLPError, UnknownModelError
from s2mlp_cli.runtime import DECODE, RunSettings, amp_problem
from s2mlp_cli.zoo import Card, Preprocess, get_card

PREDICTION_FORMATS = (".jsonl", ".csv")
MAX_RESIZE = 4096  # the shorter side an image is resized to before the crop (memory grows with its square)


@dataclass(frozen=True)
class EvalOptions(RunSettings):
    """One evaluation request; None means the card's value or the device's default."""

    variants: Sequence[str]
    data: str | Path | Sequence[str | Path]  # one set or several, each PATH or NAME=PATH
    labels: str | Path | None = None
    devkit: str | Path | None = None
    weights: str | Path | None = None  # one variant only
    img_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    batch_size: int | None = None  # 256 on the GPU, 32 on the CPU
    workers: int | None = None  # CPU cores (per process under torchrun), at most 16
    limit: int | None = None
    cache: bool = True  # read / build the decoded-crop cache (s2mlp_cli.data.cache) where the disk has room
    decode: str = "cpu"  # "gpu": torchvision's nvJPEG decode and antialiased resize on the device
    output: str | Path | None = None  # .json, .csv or .md, written atomically
    save_predictions: str | Path | None = None  # .jsonl or .csv
    progress: bool = True
    real_labels: str | Path | None = None  # ReaL's real.json: the val set is also scored as ImageNet-ReaL
    compare_with: str | Path | None = None  # an earlier run's --save-predictions .jsonl, for paired tests


def check(opts: EvalOptions) -> list[S2MLPError]:
    """Every problem with the request, each naming its argument (`param`); no torch, no network."""
    problems: list[S2MLPError] = []
    cards = cards_of(opts.variants, problems)
    if not cards and not problems:
        problems.append(S2MLPError("name at least one variant", param="variants"))
    if opts.weights is not None and len(cards) > 1:
        problems.append(
            S2MLPError("a weights file loads into one model: evaluate a single variant", param="weights")
        )
    specs = data_specs(opts.data)
    for _, root in specs:
        if not root.exists():
            problems.append(S2MLPError(f"{root}: no such file or folder", param="data"))
    names = [n or str(r) for n, r in specs]
    if len(set(names)) < len(names):
        problems.append(
            S2MLPError("the same set is named twice; give each a NAME=PATH of its own", param="data")
        )
    if not specs:
        problems.append(S2MLPError("name at least one data set", param="data"))
    for name in ("labels", "devkit", "real_labels", "compare_with"):
        path = getattr(opts, name)
        if path is not None and not Path(path).expanduser().exists():
            problems.append(S2MLPError(f"{path}: no such file or folder", param=name))
    for name in ("mean", "std"):
        values = getattr(opts, name)
        if values is not None and not all(math.isfinite(v) and (name == "mean" or v > 0) for v in values):
            what = "finite numbers" if name == "mean" else "finite numbers above 0"
            problems.append(S2MLPError(f"{name} must be three {what}, got {tuple(values)}", param=name))
    if (problem := amp_problem(opts.device, opts.amp)) is not None:
        problems.append(problem)
    if opts.decode not in DECODE:
        problems.append(S2MLPError(f"decode must be cpu or gpu, got {opts.decode!r}", param="decode"))
    elif opts.decode == "gpu" and opts.device == "cpu":
        problems.append(S2MLPError("GPU decoding needs the GPU, not the CPU device", param="decode"))
    for card in cards:
        problems += _size_problems(card, opts.img_size)
        if (p := preprocess(card, opts)).resize > MAX_RESIZE:
            what = (
                f"crop_pct {p.crop_pct} at input {p.input_size} would resize every image to {p.resize:,} px"
            )
            problems.append(S2MLPError(f"{what} (at most {MAX_RESIZE:,})", param="crop_pct"))
            break
    problems += _output_problems(opts.output, report.FORMATS, "output")
    problems += _output_problems(opts.save_predictions, PREDICTION_FORMATS, "save_predictions")
    for card in cards:
        if (problem := sources.precheck(card, opts.weights)) is not None:
            problems.append(problem)
    return problems


def data_specs(data: str | Path | Sequence[str | Path]) -> list[tuple[str | None, Path]]:
    """Each set asked for as (NAME or None, path): `PATH` or `NAME=PATH` (a NAME of letters, digits,
    - and _; a path that merely holds `=` stays a path when the part before it is not such a name)."""
    items = [data] if isinstance(data, (str, Path)) else list(data)
    specs = []
    for item in items:
        text = str(item)
        name, sep, path = text.partition("=")
        if sep and name and all(c.isalnum() or c in "-_" for c in name) and path:
            specs.append((name, Path(path).expanduser()))
        else:
            specs.append((None, Path(text).expanduser()))
    return specs


def cards_of(names: Sequence[str], problems: list[S2MLPError]) -> list[Card]:
    """The cards named (each once, in order); an unknown name is a problem of `variants`."""
    cards: dict[str, Card] = {}
    for name in (n.strip() for n in names if n.strip()):
        try:
            card = get_card(name)
        except UnknownModelError as e:
            problems.append(S2MLPError(e.message, param="variants", next_step=e.next_step, advice=e.advice))
            continue
        cards.setdefault(card.name, card)
    return list(cards.values())


def _size_problems(card: Card, img_size: int | None) -> list[S2MLPError]:
    """An input size the model cannot take: some run at their card's size only (ViP); the others need at
    least their stride (GFNet resizes its filters to any size)."""
    if img_size is None:
        return []
    if card.family_facts.one_size and img_size != card.preprocess.input_size:
        return [
            S2MLPError(
                f"{card.name} runs only at {card.preprocess.input_size} (segment_dim fixes its token grid)",
                param="img_size",
            )
        ]
    if (stride := card.stride) is not None and img_size < stride:
        return [S2MLPError(f"{card.name} needs an input of at least {stride} (its stride)", param="img_size")]
    return []


def _output_problems(path: str | Path | None, formats: Sequence[str], param: str) -> list[S2MLPError]:
    if path is None:
        return []
    if not str(path).strip():
        return [S2MLPError("an empty file name; name a file, or leave the option out", param=param)]
    path = Path(path).expanduser()
    if path.suffix.lower() not in formats:
        return [S2MLPError(f"{path}: use a {' or '.join(formats)} file", param=param)]
    if path.is_dir():
        return [S2MLPError(f"{path} is a folder; name a file", param=param)]
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not os.access(folder, os.W_OK | os.X_OK):
        return [S2MLPError(f"{path}: cannot write in {folder}", param=param)]
    return []


def preprocess(card: Card, opts: EvalOptions) -> Preprocess:
    """The card's eval transform with the request's overrides."""
    p = card.preprocess
    return Preprocess(
        input_size=opts.img_size or p.input_size,
        crop_pct=opts.crop_pct or p.crop_pct,
        interpolation=opts.interpolation or p.interpolation,
        mean=tuple(opts.mean or p.mean),
        std=tuple(opts.std or p.std),
    )
