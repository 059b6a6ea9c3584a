"""`s2mlp train` against timm's training on the same model, data, recipe and seed, side by side.

    python benchmarks/train_vs_timm.py [--timm-script PATH/train.py] [--model tiny|small] [--epochs 6]
                                       [--rounds 2] [--threads default,1] [--json OUT]

The work: an S²-MLPv2 (a card written here: `tiny`, the test suite's, whose step is about as long as
decoding and augmenting its batch; or `small`, 4x the work per image, where the model step bounds the
run) on digits-like images generated here (10 classes of rendered, rotated, noisy digits, 64 px JPEGs,
read at 56 px), with the paper recipe (RandAugment, colour jitter, random erasing, Mixup/CutMix, label
smoothing, drop path, EMA, AdamW, cosine) at batch 64 and the learning rate as given, one warm-up
epoch, seed 0, 2 loader workers, on the CPU. At 6 epochs of 1,800 images the recipe's regularisation
keeps both tools near chance: the top-1s show the same learning, not good learning.

timm's side is its own train.py when `--timm-script` names one (timm's repository has it; `pip install
timm` does not ship it), run through `python -m s2mlp_cli.timm_train` so that timm knows the card's
model, with the same values as train.py flags. Without it, the same loop is built from timm's training
components (`create_dataset`, `create_loader`, `create_optimizer_v2`, `create_scheduler_v2`,
`FastCollateMixup`, `SoftTargetCrossEntropy`, `ModelEmaV3`, train.py's per-update order), so the
benchmark runs anywhere timm is installed. With Pillow >= 13 timm's RandAugment stops at its first
0-bit posterize; both sides get s2mlp's posterize (Pillow 12's result: a black image).

Each setting ("default": each tool as a user runs it; "1": one intra-op thread in both) runs the tools
alternately (timm, s2mlp, timm, s2mlp, ...) so machine noise falls on both; medians are reported:
- training images/s: images trained / seconds in the training loops (validation excluded; each
  epoch's first batch, worker start-up included, is counted, as both tools count it);
- wall: the whole command, start to exit;
- top-1 of the model (not the EMA) after the last epoch, by each tool's own validation, with the 95%
  interval of the difference of two proportions on the validation set;
- the input pipeline alone: two epochs of each tool's training batches (same augmentations, Mixup and
  CutMix, 2 workers, no model step), images/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARD = "s2mlpv2_digits"
ARCHES = {
    # the test suite's tiny S²-MLPv2: a model step about as long as its batch's decoding and augmenting
    "tiny": {"layers": [1, 1, 1, 1], "embed_dims": [16, 16, 32, 32], "mlp_ratios": [1, 1, 1, 1]},
    # 4x the work per image: the model step bounds the run
    "small": {"layers": [2, 2, 2, 2], "embed_dims": [32, 64, 64, 64], "mlp_ratios": [2, 2, 2, 2]},
}
SIZE, STORED = 56, 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_digits(root: Path, train: int, val: int, seed: int = 0) -> None:
    """DATA/{train,val}/<digit>/*.jpg: each digit drawn in PIL's bitmap font, shifted, rotated, scaled
    and noised, so that classes are learnable but not trivial."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default()
    for split, per_class in (("train", train), ("val", val)):
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                glyph = Image.new("L", (16, 16), 0)
                ImageDraw.Draw(glyph).text((4, 2), str(digit), 255, font)
                left, top, right, bottom = glyph.getbbox()  # the digit fills the frame, as in 8x8 digits
                m = rng.integers(0, 3, 4)
                glyph = glyph.crop((left - m[0], top - m[1], right + m[2], bottom + m[3]))
                glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
                big = np.asarray(glyph.resize((STORED, STORED), Image.BILINEAR), dtype=np.float32)
                ink = rng.uniform(0.6, 1.0, 3) * 255
                pixels = big[..., None] / 255 * ink + rng.normal(0, 8, (STORED, STORED, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))
                image.save(folder / f"{digit}_{i}.jpg", quality=90)


def write_card(zoo: Path, model: str) -> None:
    import yaml

    zoo.mkdir(parents=True, exist_ok=True)
    arch = {**ARCHES[model], "transitions": [False, True, False, False], "patch_size": 7, "num_classes": 10}
    card = {
        "name": CARD,
        "family": "s2mlpv2",
        "description": f"the {model} S²-MLPv2 of benchmarks/train_vs_timm.py",
        "arch": arch,
        "preprocess": {
            "input_size": SIZE,
            "crop_pct": 0.875,
            "interpolation": "bicubic",
            "mean": list(MEAN),
            "std": list(STD),
        },
        "weights": {"published": False, "repo": None, "note": "benchmark card"},
        "counts": {"params": 1, "gmacs": 0.0},
        "paper": {"title": "benchmark"},
        "peers": [],
        "sources": {"preprocess": "benchmark card"},
    }
    (zoo / f"{CARD}.yaml").write_text(yaml.safe_dump(card))


# --- the recipe, as each tool takes it ----------------------------------------------------------------

LR, BATCH, WARMUP, WORKERS = 2e-3, 64, 1, 2
TRAIN, VAL = 180, 50  # images per class


def trained(epochs: int) -> int:
    """Images trained in `epochs`: full batches only, in both tools."""
    return epochs * (10 * TRAIN // BATCH) * BATCH


def recipe_values() -> dict:
    """The paper recipe's values with this benchmark's epochs, batch, learning rate and warm-up."""
    from s2mlp_cli.train import load

    return dict(load("paper").values)


def timm_flags(r: dict, epochs: int) -> list[str]:
    """The recipe as timm train.py's flags (every value given, none left to train.py's defaults)."""
    return [
        "--model", CARD, "--num-classes", "10", "-b", str(BATCH), "--epochs", str(epochs),
        "--opt", r["opt"], "--lr", str(LR), "--weight-decay", str(r["weight_decay"]),
        "--sched", r["sched"], "--min-lr", str(r["min_lr"]), "--warmup-lr", str(r["warmup_lr"]),
        "--warmup-epochs", str(WARMUP), "--cooldown-epochs", "0",
        "--aa", r["auto_augment"], "--color-jitter", str(r["color_jitter"]),
        "--train-interpolation", r["train_interpolation"],
        "--scale", *map(str, r["scale"]), "--ratio", *map(str, r["ratio"]), "--hflip", str(r["hflip"]),
        "--reprob", str(r["reprob"]), "--remode", r["remode"], "--recount", str(r["recount"]),
        "--mixup", str(r["mixup"]), "--cutmix", str(r["cutmix"]), "--mixup-prob", str(r["mixup_prob"]),
        "--mixup-switch-prob", str(r["mixup_switch_prob"]), "--mixup-mode", r["mixup_mode"],
        "--smoothing", str(r["smoothing"]), "--drop-path", str(r["drop_path"]),
        "--model-ema", "--model-ema-decay", str(r["ema_decay"]),
        "--seed", str(r["seed"]), "-j", str(WORKERS), "--device", "cpu",
        "--log-interval", "1", "--checkpoint-hist", "1",
    ]  # fmt: skip


def s2mlp_flags(epochs: int) -> list[str]:
    return [
        "--variant", CARD, "--num-classes", "10", "--epochs", str(epochs), "--batch-size", str(BATCH),
        "--lr", str(LR), "--set", f"warmup_epochs={WARMUP}", "--device", "cpu", "--workers", str(WORKERS),
    ]  # fmt: skip


def as_timm_script(script: str, args: list[str]) -> None:
    """In the child: timm's train.py as `python -m s2mlp_cli.timm_train` runs it (our posterize too)."""
    from s2mlp_cli import timm_train

    timm_child()
    timm_train.main([script, *args])


# --- one run of each side, as a child process -----------------------------------------------------------

TIMM_TRAIN = re.compile(r"Train: (\d+) \[\s*(\d+)/(\d+) .*?\(([\d.]+)s,\s*[\d.]+/s\)")
TIMM_TEST = re.compile(r"^Test: \[\s*(\d+)/(\d+)\].*Acc@1:\s*[\d.]+ \(\s*([\d.]+)\)", re.M)


def child_env(work: Path, threads: str) -> dict:
    env = {**os.environ, "S2MLP_ZOO": str(work / "zoo"), "S2MLP_HOME": str(work / "home")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("OMP_NUM_THREADS", None)
    if threads == "1":
        env["OMP_NUM_THREADS"] = "1"  # torch's intra-op threads at start-up, in both tools
    return env


def run_s2mlp(work: Path, out: Path, epochs: int, threads: str) -> dict:
    cmd = [sys.executable, "-m", "s2mlp_cli", "train", "--data", str(work / "data"), "--output", str(out)]
    cmd += s2mlp_flags(epochs) + (["--threads", "1"] if threads == "1" else []) + ["--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=child_env(work, threads), capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"s2mlp train failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    seconds = sum(row["seconds"] for row in log)
    return {"images_per_s": trained(epochs) / seconds, "wall_s": wall, "top1": log[-1]["val"]["top1"]}


def run_timm_script(work: Path, out: Path, epochs: int, threads: str, script: str) -> dict:
    args = ["--data-dir", str(work / "data"), "--train-split", "train", "--val-split", "val"]
    args += ["--output", str(out), *timm_flags(recipe_values(), epochs)]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--as-timm-script", script, "--", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=child_env(work, threads), capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    text = done.stdout + done.stderr
    if done.returncode:
        raise SystemExit(f"timm train.py failed ({done.returncode}): {text.strip()[-2000:]}")
    per_epoch = {}
    for epoch, _, updates, mean in TIMM_TRAIN.findall(text):  # the last line: the epoch's mean update
        per_epoch[int(epoch)] = int(updates) * float(mean)
    tests = [(int(i), int(n), float(top1)) for i, n, top1 in TIMM_TEST.findall(text)]
    if len(per_epoch) != epochs or not tests:
        raise SystemExit(f"timm train.py logged {len(per_epoch)} of {epochs} epochs")
    top1 = [t for i, n, t in tests if i == n][-1]  # the model's last validation (not the EMA's)
    return {"images_per_s": trained(epochs) / sum(per_epoch.values()), "wall_s": wall, "top1": top1}


def timm_loaders(data: Path, model) -> tuple:
    """What timm's train.py builds on the CPU by default: its dataset, the prefetching loader with
    Mixup/CutMix in the collate, normalising and erasing in the main process; and its eval loader."""
    import torch
    from timm.data import FastCollateMixup, create_dataset, create_loader, resolve_data_config

    r, cfg = recipe_values(), resolve_data_config({}, model=model)
    mixup = FastCollateMixup(
        mixup_alpha=r["mixup"], cutmix_alpha=r["cutmix"], prob=r["mixup_prob"],
        switch_prob=r["mixup_switch_prob"], mode=r["mixup_mode"], label_smoothing=r["smoothing"],
        num_classes=10,
    )  # fmt: skip
    common = {"mean": cfg["mean"], "std": cfg["std"], "num_workers": WORKERS, "device": torch.device("cpu")}
    train = create_loader(
        create_dataset("", root=str(data / "train"), is_training=True),
        input_size=cfg["input_size"], batch_size=BATCH, is_training=True, use_prefetcher=True,
        scale=r["scale"], ratio=r["ratio"], hflip=r["hflip"], color_jitter=r["color_jitter"],
        auto_augment=r["auto_augment"], interpolation=r["train_interpolation"], re_prob=r["reprob"],
        re_mode=r["remode"], re_count=r["recount"], collate_fn=mixup, **common,
    )  # fmt: skip
    val = create_loader(
        create_dataset("", root=str(data / "val")), input_size=cfg["input_size"], batch_size=BATCH,
        is_training=False, use_prefetcher=True, interpolation=cfg["interpolation"],
        crop_pct=cfg["crop_pct"], **common,
    )  # fmt: skip
    return train, val


def as_timm_components(data: Path, epochs: int) -> None:
    """In the child: train.py's loop (one process, CPU, no AMP) from timm's factories; a JSON line out."""
    import torch
    from timm import create_model
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, accuracy

    timm_child()
    r = recipe_values()
    torch.manual_seed(r["seed"])
    model = create_model(CARD, num_classes=10, drop_path_rate=r["drop_path"])
    ema = ModelEmaV3(model, decay=r["ema_decay"])
    train, val = timm_loaders(data, model)
    opt = create_optimizer_v2(model, opt=r["opt"], lr=LR, weight_decay=r["weight_decay"])
    sched, _ = create_scheduler_v2(
        opt, sched=r["sched"], num_epochs=epochs, warmup_epochs=WARMUP, warmup_lr=r["warmup_lr"],
        min_lr=r["min_lr"], cooldown_epochs=0, updates_per_epoch=len(train),
    )  # fmt: skip
    loss_fn, seconds, updates = SoftTargetCrossEntropy(), 0.0, 0
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in train:
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            updates += 1
            ema.update(model, step=updates)
            sched.step_update(num_updates=updates)
            float(loss)  # train.py reads the loss every update
        seconds += time.perf_counter() - start
        model.eval()
        with torch.inference_mode():
            hits = [accuracy(model(x), y, topk=(1,))[0] * len(y) for x, y in val]
            for x, _ in val:
                ema.module.eval()(x)  # train.py validates the EMA too
        top1 = float(sum(hits)) / len(val.dataset)
        sched.step(epoch + 1)
    print(json.dumps({"seconds": seconds, "top1": top1}))


def timm_child() -> None:
    """In a child running timm: the card's model registered with timm, and timm's posterize ops replaced
    by ours (Pillow >= 13 refuses the 0 bits timm's RandAugment asks for at magnitude 10), so that both
    tools augment alike."""
    from timm.data import auto_augment

    import s2mlp_cli.models  # noqa: F401 (registers the card)
    from s2mlp_cli.train.data import posterize

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = posterize


def run_timm_components(work: Path, out: Path, epochs: int, threads: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--as-timm-components", str(work / "data")]
    cmd += ["--epochs", str(epochs)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=child_env(work, threads), capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"timm components failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"images_per_s": trained(epochs) / result["seconds"], "wall_s": wall, "top1": result["top1"]}


# --- the input pipeline alone ---------------------------------------------------------------------------


def as_pipeline(tool: str, data: Path, epochs: int) -> None:
    """In the child: `epochs` epochs of one tool's training batches as its step takes them (normalised,
    erased, Mixup/CutMix applied: timm in its collate and prefetcher, s2mlp in its workers), no model
    step; a JSON line with the seconds."""
    import torch

    if tool == "timm":
        from timm import create_model

        timm_child()
        batches, _ = timm_loaders(data, create_model(CARD, num_classes=10))
        epoch_batches = [lambda: iter(batches)] * epochs
    else:
        from s2mlp_cli.train import data as train_data
        from s2mlp_cli.train.request import TrainOptions, plan
        from s2mlp_cli.train.session import mixing

        options = TrainOptions(
            variant=CARD, data=data, output=data.parent / "pipeline-run", num_classes=10, progress=False,
            workers=WORKERS, device="cpu", overrides=[f"batch_size={BATCH}", f"lr={LR}", "epochs=1"],
        )  # fmt: skip
        p, problems = plan(options)
        if problems or p is None:
            raise SystemExit(f"s2mlp cannot plan the run: {problems}")
        r = p.recipe  # the run's own feed, as `s2mlp train` builds it
        feed = train_data.Feed.of(p.train.samples, r, p.card.preprocess, mixing(r, 10)[0], WORKERS, False)
        n = len(p.train.samples)
        epoch_batches = [
            (lambda e=e: feed.epoch(train_data.batches(n, BATCH, r.seed, e, 0, 0, 1))) for e in range(epochs)
        ]
    start = time.perf_counter()
    count = 0
    for make in epoch_batches:
        for x, _ in make():  # each tool mixes before the batch comes out
            count += 1
            last = x
    seconds = time.perf_counter() - start
    x = last
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32, "not the batch a model takes"
    print(json.dumps({"seconds": seconds, "batches": count}))


def run_pipeline(work: Path, tool: str, epochs: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--as-pipeline", tool, str(work / "data")]
    cmd += ["--epochs", str(epochs)]
    done = subprocess.run(cmd, env=child_env(work, "default"), capture_output=True, text=True, cwd=work)
    if done.returncode:
        raise SystemExit(f"{tool} pipeline failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"images_per_s": result["batches"] * BATCH / result["seconds"]}


# --- side by side -----------------------------------------------------------------------------------


def interval(p1: float, p2: float, n: int) -> float:
    """Half-width of the 95% interval of the difference of two top-1s (in %) on n images each."""
    a, b = p1 / 100, p2 / 100
    return 100 * 1.96 * math.sqrt(max(a * (1 - a), 1e-12) / n + max(b * (1 - b), 1e-12) / n)


def conditions() -> dict:
    import platform

    import timm
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def side_by_side(args: argparse.Namespace, work: Path) -> dict:
    timm_side = (
        (lambda out, t: run_timm_script(work, out, args.epochs, t, args.timm_script))
        if args.timm_script
        else (lambda out, t: run_timm_components(work, out, args.epochs, t))
    )
    result: dict = {"before": conditions(), "timm": "train.py" if args.timm_script else "components"}
    for threads in args.threads.split(","):
        runs: dict = {"timm": [], "s2mlp": []}
        for k in range(args.rounds):
            for tool, go in (("timm", timm_side), ("s2mlp", None)):
                out = work / "runs" / f"{tool}-{threads}-{k}"
                shutil.rmtree(out, ignore_errors=True)
                r = go(out, threads) if go else run_s2mlp(work, out, args.epochs, threads)
                runs[tool].append(r)
                print(f"threads {threads}, round {k + 1}, {tool}: {r}", file=sys.stderr)
        result[f"threads={threads}"] = summarise(runs)
    pipes: dict = {"timm": [], "s2mlp": []}
    for _ in range(args.rounds):
        for tool in ("timm", "s2mlp"):
            pipes[tool].append(run_pipeline(work, tool, 2))
    result["pipeline"] = {
        tool: statistics.median(r["images_per_s"] for r in rows) for tool, rows in pipes.items()
    }
    result["pipeline"]["ratio"] = result["pipeline"]["s2mlp"] / result["pipeline"]["timm"]
    result["after"] = conditions()
    return result


def summarise(runs: dict) -> dict:
    med = {
        tool: {key: statistics.median(r[key] for r in rows) for key in ("images_per_s", "wall_s", "top1")}
        for tool, rows in runs.items()
    }
    med["images_per_s_ratio"] = med["s2mlp"]["images_per_s"] / med["timm"]["images_per_s"]
    med["wall_ratio"] = med["s2mlp"]["wall_s"] / med["timm"]["wall_s"]
    med["top1_interval"] = interval(med["s2mlp"]["top1"], med["timm"]["top1"], 10 * VAL)
    med["runs"] = runs
    return med


def print_table(result: dict) -> None:
    after = result["after"]["load_average"]
    print(f"model {result['model']}, timm side {result['timm']}; before {result['before']}")
    print(f"load average after: {after}")
    print("| threads | timm img/s | s2mlp img/s | ratio | wall s2mlp/timm | top-1 timm | top-1 s2mlp |")
    print("|---|---|---|---|---|---|---|")
    for key, m in result.items():
        if key.startswith("threads="):
            print(
                f"| {key[8:]} | {m['timm']['images_per_s']:.0f} | {m['s2mlp']['images_per_s']:.0f} "
                f"| {m['images_per_s_ratio']:.2f}x | {m['wall_ratio']:.2f} | {m['timm']['top1']:.1f} "
                f"| {m['s2mlp']['top1']:.1f} (±{m['top1_interval']:.1f} for the difference, 95%) |"
            )
    pipe = result["pipeline"]
    print(
        f"input pipeline alone (2 epochs, {WORKERS} workers): timm {pipe['timm']:.0f} img/s, s2mlp "
        f"{pipe['s2mlp']:.0f} img/s, {pipe['ratio']:.2f}x"
    )


def main() -> None:
    global TRAIN, VAL  # --per-class: the parent's counts (the children read the data as it is)
    if len(sys.argv) > 2 and sys.argv[1] == "--as-timm-script":
        return as_timm_script(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm-script", help="timm's train.py (else timm's components)")
    parser.add_argument("--model", choices=sorted(ARCHES), default="tiny")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tool per setting, alternating")
    parser.add_argument("--threads", default="default,1", help="settings: default, 1, or both")
    parser.add_argument("--per-class", default=f"{TRAIN},{VAL}", help="train,val images per class")
    parser.add_argument("--work", help="a folder for data and runs (default: a temporary one)")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--as-timm-components", help=argparse.SUPPRESS)
    parser.add_argument("--as-pipeline", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_timm_components:
        return as_timm_components(Path(args.as_timm_components), args.epochs)
    if args.as_pipeline:
        return as_pipeline(args.as_pipeline[0], Path(args.as_pipeline[1]), args.epochs)
    TRAIN, VAL = (int(n) for n in args.per_class.split(","))
    with tempfile.TemporaryDirectory(prefix="train-vs-timm-") as tmp:
        work = Path(args.work or tmp).resolve()
        if not (work / "data").is_dir():
            make_digits(work / "data", TRAIN, VAL)
        write_card(work / "zoo", args.model)
        result = {"model": args.model, **side_by_side(args, work)}
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
