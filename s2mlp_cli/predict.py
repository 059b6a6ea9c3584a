"""`run(PredictOptions(...))`: what is in these images. Each image through the card's eval preprocessing,
exactly as `s2mlp eval` feeds it (the same decoder, crop and normaliser), batched; per image the top-k
classes with their names (ImageNet-1k's, or the classes a run of your own was trained on, from the
weights' metadata) and probabilities. Unreadable images are listed and skipped, as eval does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli import report, sources
from s2mlp_cli.console import Bar
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.runtime import RunSettings, amp_problem, use_cpu_threads
from s2mlp_cli.zoo import get_card, requested_card

FORMATS = (".json", ".jsonl", ".csv")
MAX_IMAGES = 10_000_000


@dataclass(frozen=True)
class PredictOptions(RunSettings):
    variant: str
    paths: Sequence[str | Path]  # images, or folders searched recursively
    weights: str | Path | None = None
    topk: int = 5
    batch_size: int | None = None  # 256 on the GPU, 32 on the CPU
    workers: int | None = None  # decoding processes: CPU cores, at most 8
    output: str | Path | None = None  # .json, .jsonl or .csv, written atomically
    progress: bool = True


def check(opts: PredictOptions) -> list[S2MLPError]:
    """Every problem with the request, before torch is imported."""
    problems: list[S2MLPError] = []
    try:
        card = requested_card(opts.variant)
    except S2MLPError as e:
        return [e]
    if not opts.paths:
        problems.append(S2MLPError("name at least one image or folder", param="paths"))
    for path in opts.paths:
        if not Path(path).expanduser().exists():
            problems.append(S2MLPError(f"{path}: no such file or folder", param="paths"))
    if not 1 <= opts.topk <= 1000:
        problems.append(S2MLPError(f"topk must be 1 to 1000, got {opts.topk}", param="topk"))
    if opts.output is not None and Path(opts.output).suffix.lower() not in FORMATS:
        problems.append(S2MLPError(f"{opts.output}: use a {', '.join(FORMATS)} file", param="output"))
    elif opts.output is not None and Path(opts.output).expanduser().is_dir():
        problems.append(S2MLPError(f"{opts.output} is a folder; name a file", param="output"))
    if (problem := amp_problem(opts.device, opts.amp)) is not None:
        problems.append(problem)
    if (problem := sources.precheck(card, opts.weights)) is not None:
        problems.append(problem)
    return problems


def images(paths: Sequence[str | Path]) -> list[Any]:
    """The images named: files as given, folders searched recursively (sorted), each once."""
    from s2mlp_cli.data import IMAGE_EXTS, ImageFile, Sample

    found: dict[str, Any] = {}
    for given in paths:
        root = Path(given).expanduser()
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if f.suffix.lower() in IMAGE_EXTS or f == root:
                key = str(f) if f == root else str(Path(given) / f.relative_to(root))
                found.setdefault(str(f.resolve()), Sample(key, -1, ImageFile(str(f))))
        if len(found) > MAX_IMAGES:
            raise S2MLPError(f"more than {MAX_IMAGES:,} images under {given}; name fewer", param="paths")
    if not found:
        raise S2MLPError("no images (.jpeg, .jpg, .png, .webp, .bmp) under the paths given", param="paths")
    return list(found.values())


def run(opts: PredictOptions) -> dict[str, Any]:
    """The document `{"env", "results", "skipped"}`: one row per image read (its top-k), the images
    that could not be read with why. Written to `opts.output` when asked."""
    if problems := check(opts):
        from s2mlp_cli.errors import ProblemsError

        raise ProblemsError(problems)
    samples = images(opts.paths)
    from s2mlp_cli.data import imagenet_names
    from s2mlp_cli.runtime import default_batch, device_for, environment, set_math_mode, threads_kept

    device = device_for(opts.device, opts.amp)
    set_math_mode(device, opts.tf32)
    card, pulled, own, model = _model(opts, device)
    names = list(own) if own else list(imagenet_names())
    batch = opts.batch_size or default_batch(device)
    workers = min(8, os.cpu_count() or 1) if opts.workers is None else opts.workers
    with threads_kept():
        threads = use_cpu_threads(device, workers, 1, opts.threads)
        rows, skipped = _top_k(opts, model, card.preprocess, samples, names, device, batch, workers)
    env = environment(device, opts.amp, opts.tf32)
    env.update(thread_rule=threads)
    env.update(
        variant=card.name,
        weights=pulled.source,
        weights_sha256=pulled.sha256,
        classes="the run's own" if own else "ImageNet-1k",
        preprocess=card.preprocess.to_dict(),
        batch_size=batch,
        workers=workers,
    )
    doc = report.document(env, rows, skipped=skipped)
    if opts.output:
        try:
            write(opts.output, doc)
        except OSError as e:
            doc["write_errors"] = [f"could not write {opts.output}: {e.strerror or e}"]
    return doc


def _model(opts: PredictOptions, device: str) -> tuple[Any, Any, list[str] | None, Any]:
    """The card, its verified weights, the classes they name (a run's own, or None) and the model."""
    import torch

    from s2mlp_cli import api
    from s2mlp_cli.classes import of_file

    card = get_card(opts.variant)
    pulled = sources.resolve(card, opts.weights, progress=opts.progress)
    own = of_file(pulled.path)
    model = api.build_for(card, pulled, own, card.preprocess.input_size).eval().to(device)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if opts.compile:
        from s2mlp_cli.runtime import compiled

        model = compiled(model)
    return card, pulled, own, model


def _top_k(
    opts: PredictOptions,
    model: Any,
    prep: Any,
    samples: list,
    names: list[str],
    device: str,
    batch: int,
    workers: int,
) -> tuple[list[dict], list[dict]]:
    """Each readable image's top-k classes (eval's decoder, crop and one normaliser for the pass), and
    the images that could not be read."""
    import torch

    from s2mlp_cli.data import EvalSet, Normalizer
    from s2mlp_cli.runtime import autocast

    k = min(opts.topk, len(names))
    loader = torch.utils.data.DataLoader(
        EvalSet(samples, prep), batch_size=batch, num_workers=workers, pin_memory=device == "cuda"
    )
    normalize = Normalizer(prep.mean, prep.std, device)
    rows, skipped = [], []
    with (
        Bar(desc="predict", total=len(samples), unit="img", enabled=opts.progress) as bar,
        torch.inference_mode(),
    ):
        for x, _, idx, errors in loader:
            x = normalize(x.to(device, non_blocking=True))
            if opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, opts.amp):
                prob, top = model(x).float().softmax(-1).topk(k, dim=-1)
            for i, error, p, t in zip(idx.tolist(), errors, prob.tolist(), top.tolist(), strict=True):
                if error:
                    skipped.append({"image": samples[i].key, "error": error})
                    continue
                top_k = [
                    {"class": c, "name": names[c], "prob": round(q, 6)} for c, q in zip(t, p, strict=True)
                ]
                rows.append({"image": samples[i].key, "top": top_k})
            bar.advance(len(errors), 0.0)
    return rows, skipped


def write(path: str | Path, doc: dict[str, Any]) -> None:
    """`doc` as .json (the document), .jsonl (one image a line) or .csv (one image a row, the top-k in
    `name:prob` pairs), atomically."""
    import csv
    import io
    import json

    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        text = report.to_json(doc)
    elif suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in doc["results"])
    else:
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(["image", "class", "name", "prob", "top_k"])
        for r in doc["results"]:
            first = r["top"][0]
            rest = ";".join(f"{t['name']}:{t['prob']:.4f}" for t in r["top"])
            out.writerow([r["image"], first["class"], first["name"], first["prob"], rest])
        text = buf.getvalue()
    report.write_text_atomic(path, text)
