"""`s2mlp train` on the CPU: a learnable task (classes told apart by colour), exact resumes, torchrun
against one process, the checkpoints through eval and push, and every bad request refused before work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import one_line_error, run
from safetensors.torch import load_file

from s2mlp_cli.data.labels import synsets
from s2mlp_cli.errors import Interrupted
from s2mlp_cli.train import TrainOptions, load
from s2mlp_cli.train.loop import run as train

pytestmark = pytest.mark.usefixtures("zoo")
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
# small, fast and still the real recipe machinery: a short schedule on a tiny set
QUICK = ["--epochs", "3", "--batch-size", "12", "--lr", "0.01", "--set", "warmup_epochs=1"]
CPU = ["--device", "cpu", "--workers", "0"]


def colour_set(root: Path, names: list[str], train: int = 16, val: int = 6) -> Path:
    """DATA/train/<name>/*.jpg and DATA/val/<name>/*.jpg: class c is colour c under heavy noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.normal(0, 60, (64, 64, 3))
                pixels = np.clip(np.array(COLOURS[c])[None, None] + noise, 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{name}_{i}.jpg", quality=90)
    return root


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return colour_set(tmp_path / "colours", ["blue", "green", "red"])


@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    return colour_set(tmp_path / "imagenet", list(synsets()[:3]))


def log_of(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def options(data: Path, output: Path, **kw) -> TrainOptions:
    overrides = ["epochs=3", "batch_size=12", "lr=0.01", "warmup_epochs=1", *kw.pop("overrides", [])]
    kw.setdefault("device", "cpu")
    kw.setdefault("workers", 0)
    return TrainOptions(
        variant="s2mlpv2_tiny", data=data, output=output, num_classes=3, progress=False,
        overrides=overrides, **kw,
    )  # fmt: skip


# --- the recipe --------------------------------------------------------------------------------------


def test_paper_recipe_values_and_sources() -> None:
    r = load("paper")
    assert r.values["opt"] == "adamw" and r.values["weight_decay"] == 0.05 and r.values["epochs"] == 300
    assert (r.values["lr"], r.values["batch_size"], r.values["lr_batch"]) == (2e-3, 1024, 1024)
    assert (r.values["warmup_epochs"], r.values["warmup_lr"], r.values["min_lr"]) == (10, 1e-6, 1e-5)
    assert (r.values["mixup"], r.values["cutmix"], r.values["reprob"], r.values["smoothing"]) == (
        0.8,
        1.0,
        0.25,
        0.1,
    )
    assert r.values["auto_augment"] == "rand-m9-mstd0.5-inc1" and r.values["color_jitter"] == 0.4
    assert (r.values["drop_path"], r.values["ema"], r.values["ema_decay"]) == (0.1, True, 0.99996)
    assert all(r.sources[k].startswith("paper: ") and len(r.sources[k]) > 20 for k in r.values)
    assert "S²-MLPv2 §5" in r.sources["lr"] and "ViP" in r.sources["ema_decay"]


def test_lr_scales_with_the_global_batch_and_says_so() -> None:
    r = load("paper", ["batch_size=256"])
    assert r.values["lr"] == pytest.approx(5e-4)
    assert "scaled linearly" in r.sources["lr"] and "256/1024" in r.sources["lr"]
    given = load("paper", ["batch_size=256", "lr=1e-3"])  # a given lr is used as it is
    assert given.values["lr"] == 1e-3 and given.sources["lr"] == "command line"


def test_a_recipe_file_of_yours_fills_gaps_from_paper(tmp_path: Path) -> None:
    mine = tmp_path / "short.yaml"
    mine.write_text("name: short\nvalues:\n  epochs: 20\n  mixup: {value: 0.0, source: my ablation}\n")
    r = load(mine)
    assert (r.name, r.values["epochs"], r.values["mixup"], r.values["cutmix"]) == ("short", 20, 0.0, 1.0)
    assert r.sources["mixup"] == "short.yaml: my ablation" and r.sources["cutmix"].startswith("paper: ")


# --- training ----------------------------------------------------------------------------------------


def test_learns_then_evaluates_and_pushes(imagenet: Path, tmp_path: Path, fake_hub, monkeypatch) -> None:
    """The loss falls and top-1 rises far above chance; `eval --weights best` gives the log's number;
    the printed push command publishes it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the fake Hub speaks LFS
    fake_hub.tokens = {"hf_alice_token": "alice"}
    monkeypatch.setenv("HF_TOKEN", "hf_alice_token")
    out = tmp_path / "run"
    quick = ["--epochs", "4", "--batch-size", "12", "--lr", "0.01", "--set", "warmup_epochs=0"]
    easy = ["--set", "mixup=0", "--set", "cutmix=0", "--set", "auto_augment=none", "--set", "reprob=0"]
    code, stdout, stderr = run(
        "train", "--variant", "evaltiny", "--data", str(imagenet), "--output", str(out), *quick, *easy, *CPU
    )
    assert code == 0, stderr
    log = log_of(out)
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    best = max(log, key=lambda r: max(r["val"]["top1"], (r["ema_val"] or {}).get("top1") or 0))
    assert best["val"]["top1"] >= 90  # chance is 33% over three classes (0.1% over the 1000 outputs)
    assert "best top-1" in stdout and str(out / "best.safetensors") in stdout
    eval_cmd, push_cmd = [line.strip() for line in stderr.splitlines() if line.strip().startswith("s2mlp ")]
    assert eval_cmd.startswith("s2mlp eval --variant evaltiny --weights ")

    code, stdout, stderr = run(*eval_cmd.split()[1:], *CPU, "--json", "--no-cache")
    assert code == 0, stderr
    row = json.loads(stdout)["results"][0]
    chosen = best["val"] if best.get("best_from") == "model" else best["ema_val"]
    assert (row["top1"], row["images"]) == (chosen["top1"], 18)
    code, stdout, stderr = run(*push_cmd.replace("ORG/NAME", "alice/evaltiny").split()[1:], "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["repo"] == "alice/evaltiny"


@pytest.mark.parametrize("at", [2, 4], ids=["mid-epoch", "after-the-last-step"])
def test_resumed_run_is_bit_for_bit_the_uninterrupted_one(colours: Path, tmp_path: Path, at: int) -> None:
    """The paper's augmentation (RandAugment, Mixup/CutMix, erasing, drop path, EMA) all on; stopped in
    the middle of epoch 2, or after its last step and before its validation (4 steps an epoch)."""
    train(options(colours, tmp_path / "whole"))
    with pytest.raises(Interrupted) as stopped:
        train(options(colours, tmp_path / "parts"), stop=lambda epoch, step: (epoch, step) == (1, at))
    assert f"at epoch 2, step {at}" in stopped.value.kept
    assert not (tmp_path / "parts" / "log.jsonl").read_text().count("\n") > 1
    train(options(colours, tmp_path / "parts", resume=True))
    for name in ("last.safetensors", "best.safetensors"):
        assert same_weights(tmp_path / "whole" / name, tmp_path / "parts" / name)
    strip = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for r in log_of(tmp_path / "whole")
    ]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for r in log_of(tmp_path / "parts")
    ]


@pytest.mark.slow
def test_loader_workers_change_nothing(colours: Path, tmp_path: Path) -> None:
    """The paper's augmentation and Mixup/CutMix, made in 2 worker processes (which live for the whole
    run), give the weights that the main process alone gives, bit for bit."""
    train(options(colours, tmp_path / "none", threads=1))
    train(options(colours, tmp_path / "two", threads=1, workers=2))
    for name in ("last.safetensors", "best.safetensors"):
        assert same_weights(tmp_path / "none" / name, tmp_path / "two" / name)


def test_feed_keeps_its_workers_across_epochs() -> None:
    from s2mlp_cli.train import data

    class Pids:
        def __getitem__(self, key):
            return key if isinstance(key, data.StepSeed) else (torch.tensor(os.getpid()), key[0])

    def default_collate(items):
        from torch.utils.data import default_collate

        return default_collate(items[1:])

    feed = data.Feed(Pids(), default_collate, workers=2, pin=False)
    seen = []
    for epoch in range(3):
        keys = data.batches(8, 2, seed=0, epoch=epoch, start=0, rank=0, world=1)
        batches = list(feed.epoch(keys))
        assert [y.tolist() for _, y in batches] == [[i for i, _ in k[1:]] for k in keys]
        seen.append({int(pid) for x, _ in batches for pid in x})
    assert len(seen[0]) == 2 and seen[0] == seen[1] == seen[2] and os.getpid() not in seen[0]


def test_mixing_in_the_worker_is_the_steps_own() -> None:
    """Collate normalises and erases each image with its seed, then mixes with the step's seed: what the
    same draws give done one by one."""
    from s2mlp_cli.train import data
    from s2mlp_cli.train.session import mixing

    r = load("paper")
    transform = data.TrainTransform(r, _prep(8))
    mixup = mixing(r, 10)[0]
    images = [(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8), label, 100 + label) for label in range(6)]
    step = data.step_seed(0, 1, 2, 0)
    x, y = data.Collate(transform, mixup)([data.StepSeed(step), *images])
    want = []
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (_prep(8).mean, _prep(8).std))
    for image, _, seed in images:
        one = (image.permute(2, 0, 1).float() / 255 - mean) / std
        data.seed_all(seed, devices=False)
        want.append(transform.erasing(one))
    data.seed_all(step)
    want_x, want_y = mixup(torch.stack(want), torch.tensor([label for _, label, _ in images]))
    assert torch.allclose(x, want_x, atol=1e-6) and torch.equal(y, want_y) and y.shape == (6, 10)
    assert x.is_contiguous()  # NCHW, as ToTensor's images stack (not channels-last)


def test_the_two_part_transform_is_timms_one_piece() -> None:
    """With the random parts off, image then batch give timm's own training transform's tensor exactly."""
    from PIL import Image
    from timm.data import create_transform

    from s2mlp_cli.train import data

    off = ["auto_augment=none", "hflip=0", "scale=[1.0,1.0]", "ratio=[1.0,1.0]", "reprob=0"]
    r = load("paper", [*off, "color_jitter=0", "train_interpolation=bicubic"])
    prep = _prep(16)
    mine = data.TrainTransform(r, prep)
    timms = create_transform(
        input_size=16, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, color_jitter=0.0,
        auto_augment=None, interpolation="bicubic", mean=prep.mean, std=prep.std, re_prob=0.0,
    )  # fmt: skip
    noise = torch.randint(0, 256, (3, 24, 24, 3), dtype=torch.uint8).numpy()
    pictures = [Image.fromarray(n) for n in noise]
    batch = mine.batch(torch.stack([mine.image(p) for p in pictures]), [0, 1, 2])
    assert torch.equal(batch, torch.stack([timms(p) for p in pictures]))


def _prep(size: int):
    from s2mlp_cli.zoo import Preprocess

    return Preprocess(
        input_size=size, crop_pct=1.0, interpolation="bicubic", mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )  # fmt: skip


def test_posterize_to_zero_bits_is_black_as_before_pillow_13() -> None:
    """RandAugment's increasing posterize keeps 0 bits at magnitude 10 (m9, mstd 0.5 reaches it); Pillow
    13 raises for 0 bits, which stopped training runs in a loader worker."""
    from PIL import Image, ImageOps
    from timm.data import auto_augment

    from s2mlp_cli.train.data import TrainTransform, posterize

    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert posterize(img, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert posterize(img, 8) is img and posterize(img, 3).tobytes() == ImageOps.posterize(img, 3).tobytes()
    recipe = load("paper", ["auto_augment=rand-m10-mstd0-inc1"])
    steps = TrainTransform(recipe, _prep(8)).images.transforms
    ops = [op for step in steps for op in getattr(step, "ops", [])]
    poster = [op for op in ops if op.name == "PosterizeIncreasing"]
    assert poster and all(op.aug_fn is posterize for op in poster)
    assert auto_augment.NAME_TO_OP["PosterizeIncreasing"] is auto_augment.posterize  # timm's own: untouched
    poster[0].prob = 1.0
    assert poster[0](img).getextrema() == ((0, 0), (0, 0), (0, 0))


def test_init_with_another_head_starts_it_fresh_and_says_so(colours: Path, tmp_path: Path) -> None:
    train(options(colours, tmp_path / "first", overrides=["epochs=1", "warmup_epochs=0"]))
    init = tmp_path / "first" / "best.safetensors"

    def again(data: Path, classes: int, out: str) -> str:
        code, _, stderr = run(
            "train", "--variant", "s2mlpv2_tiny", "--data", str(data), "--num-classes", str(classes),
            "--output", str(tmp_path / out), "--init", str(init), "--epochs", "1",
            "--set", "warmup_epochs=0", "--batch-size", "12", *CPU,
        )  # fmt: skip
        assert code == 0, stderr
        return stderr

    assert "head starts fresh" not in again(colours, 3, "same")  # same classes: the head is kept
    four = colour_set(tmp_path / "four", ["a", "b", "c", "d"])
    assert again(four, 4, "four_run").count("has another number of classes: the head starts fresh") == 1


def test_eval_of_a_checkpoint_with_other_classes_says_so(colours: Path, tmp_path: Path, imagenet) -> None:
    """A run's own classes travel with its weights: ImageNet folders are not among them. Without those
    names (a file from elsewhere), a head of another size is one line saying what eval scores."""
    from safetensors.torch import load_file, save_file

    train(options(colours, tmp_path / "three", overrides=["epochs=1", "warmup_epochs=0"]))
    best = tmp_path / "three" / "best.safetensors"
    code, _, stderr = run(
        "eval", "--variant", "evaltiny", "--weights", str(best), "--data", str(imagenet / "val"), *CPU
    )
    one_line_error(
        code, stderr, 1, "folder 'n01440764' is not one of the 3 classes the weights were trained on"
    )
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(best)), str(bare))
    code, _, stderr = run(
        "eval", "--variant", "evaltiny", "--weights", str(bare), "--data", str(imagenet / "val"), *CPU
    )
    last = stderr.strip().splitlines()[-1]  # after the data lines: the file is read when the model is
    one_line_error(code, last, 1, "has a head for 3 classes; evaltiny has 1000", "scores ImageNet-1k's 1000")
    assert "reset_head" not in stderr


# --- refused before any work -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, needles",
    [
        (lambda d: (d / "train").rename(d / "training"), ("--data", "has no train/ folder")),
        (lambda d: [p.unlink() for p in (d / "train" / "red").iterdir()], ("1 class folder(s)", "red")),
        (lambda d: (d / "val").rename(d / "v"), ("--data", "has no val/ folder")),
    ],
)
def test_bad_data_is_one_line_before_work(colours: Path, tmp_path: Path, change, needles) -> None:
    change(colours)
    out = tmp_path / "run"
    code, _, stderr = run("train", "--variant", "tiny", "--data", str(colours), "--num-classes", "3",
                          "--output", str(out), *CPU)  # fmt: skip
    one_line_error(code, stderr, 2, *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--set", "lrr=0.1"], ("--set", "unknown recipe key 'lrr' (did you mean lr?)")),
        (["--set", "mixup=lots"], ("--set", "mixup: expected a finite number, got 'lots'")),
        (["--set", "epochs"], ("--set", "expected KEY=VALUE")),
        (["--recipe", "nosuch"], ("--recipe", "no such recipe file (built in: paper)")),
        (["--num-classes", "4"], ("--num-classes", "has 3 class folders, not 4")),
        (["--batch-size", "13"], ("--set", "per-process batch 13 must be even")),
        (["--batch-size", "4096"], ("--set", "fewer than one global batch of 4096")),
    ],
)
def test_bad_request_is_one_line_before_work(colours: Path, tmp_path: Path, args, needles) -> None:
    out = tmp_path / "run"
    classes = [] if "--num-classes" in args else ["--num-classes", "3"]
    code, _, stderr = run("train", "--variant", "tiny", "--data", str(colours), "--output", str(out),
                          *classes, *args, *CPU)  # fmt: skip
    one_line_error(code, stderr, 2, *needles)
    assert not out.exists()


def test_imagenet_folders_must_be_synsets(colours: Path, tmp_path: Path) -> None:
    code, _, stderr = run("train", "--variant", "evaltiny", "--data", str(colours), "--output",
                          str(tmp_path / "r"), *CPU)  # fmt: skip
    one_line_error(code, stderr, 2, "folder 'blue' is not an ImageNet-1k synset", "--num-classes N")


def test_output_folder_rules(colours: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    base = ["train", "--variant", "tiny", "--data", str(colours), "--num-classes", "3", *CPU]
    code, _, stderr = run(*base, "--output", str(theirs))
    one_line_error(code, stderr, 2, "--output", "holds files s2mlp did not make")
    train(options(colours, tmp_path / "done", overrides=["epochs=1", "warmup_epochs=0"]))
    code, _, stderr = run(*base, "--output", str(tmp_path / "done"))
    one_line_error(code, stderr, 2, "already holds a run", "--resume")
    again = ["--set", "epochs=1", "--set", "batch_size=12", "--set", "lr=0.02", "--set", "warmup_epochs=0"]
    code, _, stderr = run(*base, "--output", str(tmp_path / "done"), "--resume", *again)
    one_line_error(code, stderr, 2, "a resumed run keeps its recipe: lr is 0.01")
    code, _, stderr = run(*base, "--output", str(tmp_path / "none"), "--resume")
    one_line_error(code, stderr, 2, "no saved training state")


def test_help_and_checks_import_no_torch(colours: Path) -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom s2mlp_cli.cli import main\n"
        "r = CliRunner().invoke(main, ['train', '--help'])\nassert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(main, ['train', '--variant', 'tiny', '--data', {str(colours)!r}, "
        "'--output', 'x', '--set', 'nosuch=1'])\nassert r.exit_code == 2, r.output\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert done.stdout.strip() == "False", done.stderr


# --- processes ----------------------------------------------------------------------------------------


def _train_process(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["train", "--variant", "tiny", "--data", str(data), "--num-classes", "3", "--output", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "s2mlp_cli", *args, *QUICK, "--set", "epochs=6", *CPU, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_sigterm_saves_a_state_that_resumes_exactly(colours: Path, tmp_path: Path) -> None:
    whole = _train_process(colours, tmp_path / "whole")  # a process too: the same threads, the same sums
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    cut = _train_process(colours, tmp_path / "cut")
    log = tmp_path / "cut" / "log.jsonl"
    deadline = time.monotonic() + 300
    while not log.exists() and time.monotonic() < deadline:  # signalled during epoch 2
        time.sleep(0.05)
    cut.send_signal(signal.SIGTERM)
    _, stderr = cut.communicate(timeout=300)
    one_line_error(
        cut.returncode, stderr.strip().splitlines()[-1], 143, "saved a resumable state", "--resume"
    )
    assert not list((tmp_path / "cut").glob(".*.tmp"))
    rest = _train_process(colours, tmp_path / "cut", "--resume")
    assert rest.wait(timeout=300) == 0, rest.stderr.read()
    assert same_weights(tmp_path / "whole" / "last.safetensors", tmp_path / "cut" / "last.safetensors")


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one(colours: Path, tmp_path: Path) -> None:
    """The same global batch split over two gloo processes: the same weights within 1e-5 (Mixup pairs and
    drop-path masks are drawn per process, so they are off for the comparison)."""
    plain = ["--set", "mixup=0", "--set", "cutmix=0", "--set", "drop_path=0", "--set", "epochs=2"]
    args = ["train", "--variant", "tiny", "--data", str(colours), "--num-classes", "3", *QUICK, *plain, *CPU]
    code, _, stderr = run(*args, "--output", str(tmp_path / "one"))  # one process: this one
    assert code == 0, stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*torchrun, "-m", "s2mlp_cli", *args, "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert two.stderr.count("6 per process x 2") == 1  # the first process speaks for both
    assert "destroy_process_group" not in two.stderr  # each left its process group
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert [r["train_loss"] for r in log_of(tmp_path / "one")] == pytest.approx(
        [r["train_loss"] for r in log_of(tmp_path / "two")], abs=1e-5
    )


@pytest.mark.gpu
@pytest.mark.parametrize("amp, compiled", [("bf16", True), ("fp16", False), ("none", False)])
def test_trains_on_the_gpu(colours: Path, tmp_path: Path, amp: str, compiled: bool) -> None:
    """bf16 autocast with channels-last and torch.compile; fp16 with its GradScaler; plain fp32."""
    out = tmp_path / amp
    doc = train(options(colours, out, overrides=["epochs=2", "warmup_epochs=0"], device="cuda", amp=amp,
                        channels_last=True, compile=compiled))  # fmt: skip
    (row,) = doc["results"]
    assert row["best_top1"] is not None and doc["env"]["device"] == "cuda"
    log = log_of(out)
    assert all(r["train_loss"] == r["train_loss"] for r in log)  # finite, no NaN
    if amp == "fp16":
        import torch

        state = torch.load(out / "state.pt", weights_only=True)
        assert state["scaler"] and state["scaler"]["scale"] > 0
