"""The probes `benchmarks/gpu_check.py` runs beside the s2mlp commands, one subcommand each. Every probe
measures the product as it runs (its own functions, one normaliser per pass as eval builds it) and writes
its figures as JSON to the path in `--figures`; a failed expectation exits non-zero with one line.

    python benchmarks/gpu_probes.py NAME --out OUT_DIR --device cuda|cpu --figures FILE [options]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

# A toy zoo for the dry run: the real card names, tiny nets, so every command runs as it would on the GPU.
TINY_S2 = {
    "layers": [1, 1, 1, 1],
    "embed_dims": [16, 16, 32, 32],
    "transitions": [False, True, False, False],
    "mlp_ratios": [1, 1, 1, 1],
    "patch_size": 7,
}
TOY_ARCH = {
    "s2mlpv2_small": (TINY_S2, 56),
    "s2mlpv2_medium": ({**TINY_S2, "embed_dims": [16, 32, 32, 32]}, 56),
    "vip_s7": ({**TINY_S2, "segment_dim": [8, 8, 4, 4]}, 56),
    "gfnet_s": ({"patch_size": 8, "embed_dim": 32, "depth": 1, "mlp_ratio": 1}, 56),
    "mixer_b16_224": ({}, 64),  # timm builds it; at 64 px it is 16 tokens
}


def toy_zoo(args: argparse.Namespace) -> dict:
    """Copies of the shipped cards with tiny architectures, into `--zoo`."""
    import yaml

    from s2mlp_cli.zoo import zoo_dir

    target = Path(args.zoo)
    target.mkdir(parents=True, exist_ok=True)
    for name, (arch, size) in TOY_ARCH.items():
        card = yaml.safe_load((zoo_dir() / f"{name}.yaml").read_text())
        card["arch"] = dict(arch) if arch else card["arch"]
        card["preprocess"]["input_size"] = size
        card["peers"] = [peer for peer in card.get("peers", []) if peer in TOY_ARCH]
        card["description"] = f"{name}, toy size for the gpu_check dry run"
        (target / f"{name}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return {"cards": sorted(TOY_ARCH)}


def env(args: argparse.Namespace) -> dict:
    import platform
    import shutil
    import subprocess

    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "cc": shutil.which("cc") or shutil.which("gcc"),
    }
    for mod in ("torchvision", "timm", "triton", "pytest", "safetensors", "huggingface_hub"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # a missing package is a figure, not a failure of this step
            info[mod] = f"missing ({type(e).__name__})"
    if args.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(
            device=p.name,
            capability=f"{p.major}.{p.minor}",
            sms=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            nccl=".".join(map(str, torch.cuda.nccl.version())),
            device_count=torch.cuda.device_count(),
        )
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
        (Path(args.out) / "nvidia_smi.txt").write_text(smi.stdout + smi.stderr)
    return info


def pytest_gpu(args: argparse.Namespace) -> dict:
    """Every gpu-marked test: the count from the collection, then the run; on a GPU all must pass, in a
    dry run (no GPU) all must be collected and skipped."""
    import subprocess
    import xml.etree.ElementTree as ET

    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu", "tests"]
    listed = subprocess.run([*base, "--collect-only", "-q"], capture_output=True, text=True)
    collected = sum(1 for ln in listed.stdout.splitlines() if "::" in ln)
    xml = Path(args.out) / "pytest_gpu.xml"
    done = subprocess.run([*base, "-q", "-rA", f"--junitxml={xml}"], capture_output=True, text=True)
    (Path(args.out) / "pytest_gpu.log").write_text(done.stdout + done.stderr)
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    figures = {
        "collected": collected,
        "run": n["tests"],
        "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
        "failed": n["failures"] + n["errors"],
        "skipped": n["skipped"],
    }
    want = "passed" if args.device == "cuda" else "skipped"
    if collected == 0 or figures[want] != collected or figures["failed"]:
        _fail(figures, f"expected all {collected} gpu tests {want}: {figures}")
    return figures


def matmul(args: argparse.Namespace) -> dict:
    """The device's dense matmul rate in the bench's dtype (bf16 on the GPU), TFLOP/s."""
    import torch

    n, dtype = (8192, torch.bfloat16) if args.device == "cuda" else (512, torch.float32)
    a = torch.randn(n, n, device=args.device, dtype=dtype)
    b = torch.randn(n, n, device=args.device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(args.device)
    reps, t0 = 0, time.perf_counter()
    while reps < 10 or time.perf_counter() - t0 < 1.0:
        a @ b
        reps += 1
    _sync(args.device)
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "tflops": round(2 * n**3 * reps / (time.perf_counter() - t0) / 1e12, 3),
    }


def targets(args: argparse.Namespace) -> dict:
    """From the compiled bench and the matmul rate: S²-MLPv2-S / ViP-S/7 images/s (target >= 1.2) and the
    achieved share of the matmul rate (target >= 35%)."""
    out = Path(args.out)
    rows = {r["model"]: r for r in json.loads((out / "bench_compiled.json").read_text())["results"]}
    rate = json.loads((out / "matmul.json").read_text())["tflops"]
    s2, vip = rows.get("s2mlpv2_small", {}), rows.get("vip_s7", {})
    figures: dict = {"matmul_tflops": rate}
    if s2.get("throughput") and vip.get("throughput"):
        ratio = s2["throughput"] / vip["throughput"]
        figures["s2mlpv2_small_over_vip_s7"] = {"value": round(ratio, 3), "target": 1.2, "met": ratio >= 1.2}
    for name, r in rows.items():
        if r.get("throughput"):
            achieved = r["throughput"] * 2 * r["gmacs"] / 1e3  # TFLOP/s of the model as built
            share = achieved / rate
            figures[f"{name}_share_of_matmul"] = {
                "tflops": round(achieved, 3),
                "value": round(share, 4),
                "target": 0.35,
                "met": share >= 0.35,
            }
    return figures


def make_data(args: argparse.Namespace) -> dict:
    """Generated JPEG class folders (baseline, progressive, 4:4:4, grayscale, CMYK, a PNG named .JPEG and
    one truncated file) and S²-MLPv2-S weights with spread logits."""
    from multiprocessing import Pool

    import torch
    from safetensors.torch import save_file

    import s2mlp_cli
    from s2mlp_cli.data import synsets

    root = Path(args.work) / "val"
    wnids = synsets()[:16]
    with Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(_one_image, [(i, str(root), wnids[i % 16], args.max_side) for i in range(args.images)])
    torch.manual_seed(0)
    model = s2mlp_cli.create_model("s2mlpv2_small").eval()
    with torch.no_grad():
        model.head.weight.mul_(50)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(args.work) / "w.safetensors")
    )
    return {"images": args.images, "classes": 16}


def _one_image(job: tuple) -> None:
    import numpy as np
    from PIL import Image

    i, root, wnid, max_side = job
    rng = np.random.default_rng(i)
    w, h = (int(rng.integers(max_side // 4, max_side)) for _ in range(2))
    small = rng.integers(0, 255, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    buf, kind = io.BytesIO(), i % 16
    if kind == 1:
        img.convert("L").save(buf, "JPEG", quality=90)
    elif kind == 2:
        img.convert("CMYK").save(buf, "JPEG", quality=90)
    elif kind == 3:
        img.save(buf, "PNG")
    elif kind == 4:
        img.save(buf, "JPEG", quality=90, progressive=True)
    elif kind == 5:
        img.save(buf, "JPEG", quality=90, subsampling=0)
    else:
        img.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
    data = buf.getvalue()[: None if i != 7 else len(buf.getvalue()) // 2]
    os.makedirs(os.path.join(root, wnid), exist_ok=True)
    with open(os.path.join(root, wnid, f"ILSVRC2012_val_{i + 1:08d}.JPEG"), "wb") as f:
        f.write(data)


def compare_evals(args: argparse.Namespace) -> dict:
    """The cached pass equals the decoding pass image by image; the summaries side by side."""
    out = Path(args.out)
    a, b = _predictions(out / "eval_decoded.jsonl"), _predictions(out / "eval_cached.jsonl")
    same = sum(a[k]["top5"] == b[k]["top5"] for k in a if k in b)
    figures = {"images": len(a), "cached_equal_top5": same}
    for tag in ("decoded", "cached"):
        r = json.loads((out / f"eval_{tag}.json").read_text())["results"][0]
        figures[tag] = {k: r.get(k) for k in ("top1", "top5", "images", "skipped", "images_per_s")}
    if not a or same != len(a) or len(b) != len(a):
        _fail(
            figures, f"the cached pass differs from the decoding pass on {len(a) - same} of {len(a)} images"
        )
    return figures


def decode_compare(args: argparse.Namespace) -> dict:
    """`--decode gpu`'s path (torchvision's nvJPEG on the device) against the exact PIL path, image by
    image: how many crops differ, and whether every top-1 that differs is one of those images."""
    import torch

    import s2mlp_cli
    from s2mlp_cli.data import EvalSet, Normalizer, collate_raw, decode_on_gpu, find_dataset
    from s2mlp_cli.zoo import get_card

    prep = get_card("s2mlpv2_small").preprocess
    ds = find_dataset(str(Path(args.work) / "val"))
    model = s2mlp_cli.create_model(
        "s2mlpv2_small", pretrained=True, weights=str(Path(args.work) / "w.safetensors")
    )
    model = model.eval().to(args.device)
    norm = Normalizer(prep.mean, prep.std, args.device)
    exact, raw = EvalSet(ds.samples, prep), EvalSet(ds.samples, prep, raw=True)
    batches = (collate_raw([raw[i] for i in range(s, min(s + 32, len(raw)))]) for s in range(0, len(raw), 32))
    differ, top1_differ, outside, readable = 0, 0, [], 0
    with torch.inference_mode():
        for x_gpu, _, idx, errors in decode_on_gpu(batches, prep, device=args.device):
            x_cpu = torch.stack([exact[int(i)][0] for i in idx]).to(args.device)
            ok = [not e and not exact[int(i)][3] for i, e in zip(idx, errors, strict=True)]
            pa = model(norm(x_cpu)).argmax(1)
            pb = model(norm(x_gpu)).argmax(1)
            for k, i in enumerate(idx.tolist()):
                if not ok[k]:
                    continue
                readable += 1
                crop_differs = bool((x_cpu[k] != x_gpu[k]).any())
                differ += crop_differs
                if pa[k] != pb[k]:
                    top1_differ += 1
                    if not crop_differs:
                        outside.append(ds.samples[i].key)
    figures = {
        "images": readable,
        "crops_differ": differ,
        "top1_differ": top1_differ,
        "top1_differ_with_equal_crops": outside[:10],
    }
    if outside:
        _fail(figures, f"{len(outside)} image(s) change top-1 although their crops are equal: {outside[:3]}")
    return figures


def timm_loop(args: argparse.Namespace) -> dict:
    """A timm validate.py-style loop on the same images and weights (timm's folder dataset, its transform
    from the model's config, a DataLoader, fp32): images/s and top-1, beside s2mlp eval's."""
    import timm.data
    import torch

    import s2mlp_cli
    from s2mlp_cli.data import synsets

    model = s2mlp_cli.create_model(
        "s2mlpv2_small", pretrained=True, weights=str(Path(args.work) / "w.safetensors")
    )
    model = model.eval().to(args.device)
    config = timm.data.resolve_data_config({}, model=model)
    dataset = timm.data.create_dataset("", root=str(Path(args.work) / "val"), split="validation")
    dataset.transform = timm.data.create_transform(**config)
    index = {w: i for i, w in enumerate(synsets())}  # timm's folder index -> the sorted-synset label
    to_label = torch.tensor([index[c] for c in sorted(os.listdir(Path(args.work) / "val"))])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, num_workers=args.workers, pin_memory=args.device == "cuda"
    )
    hits = seen = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, y in loader:
            logits = model(x.to(args.device, non_blocking=True))
            hits += int((logits.argmax(1).cpu() == to_label[y]).sum())
            seen += len(y)
    _sync(args.device)
    rate = seen / (time.perf_counter() - t0)
    figures = {"images": seen, "top1": round(100 * hits / max(seen, 1), 3), "images_per_s": round(rate, 1)}
    evals = {}
    for tag in ("decoded", "cached"):
        path = Path(args.out) / f"eval_{tag}.json"
        if path.exists():
            evals[tag] = json.loads(path.read_text())["results"][0]
    for tag, r in evals.items():
        figures[f"eval_{tag}_over_timm"] = {
            "value": round((r.get("images_per_s") or 0) / rate, 2),
            "target": 4.0,
            "met": (r.get("images_per_s") or 0) >= 4 * rate,
        }
        figures[f"eval_{tag}_top1"] = r.get("top1")
        figures[f"eval_{tag}_top1_minus_timm"] = round((r.get("top1") or 0) - figures["top1"], 3)
    # timm's loop reads the truncated and CMYK files its own way: top-1 is compared on what both scored
    return figures


def prefetch(args: argparse.Namespace) -> dict:
    """eval's feed as a pass runs it: `to_device` (side-stream copies on a GPU) and one Normalizer for
    the pass; data intact, and on a GPU the copies' overlap with compute and the host syncs per batch."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import s2mlp_cli
    from s2mlp_cli.data import Normalizer
    from s2mlp_cli.evaluate.feed import to_device

    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    size, batch, n = (224, 256, 6) if args.device == "cuda" else (56, 4, 3)
    g = torch.Generator().manual_seed(1)
    cpu = [torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g) for _ in range(n)]
    if args.device == "cuda":
        cpu = [b.pin_memory() for b in cpu]
    sums = [int(b.sum(dtype=torch.int64)) for b in cpu]
    model = s2mlp_cli.create_model("s2mlpv2_small").eval().to(device)
    norm = Normalizer((0.5,) * 3, (0.25,) * 3, device)  # one per pass, as the eval loop builds it
    batches = ((b, torch.zeros(batch, dtype=torch.long), torch.arange(batch), [""] * batch) for b in cpu)
    got = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        for x, _, _, _ in to_device(batches, device):
            got.append(x.sum(dtype=torch.int64))
            model(norm(x))
        _sync(args.device)
    trace = Path(args.out) / "traces" / "prefetch.json"
    trace.parent.mkdir(exist_ok=True)
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text()).get("traceEvents", [])
    _gzip(trace)
    figures = {
        "data_intact": [int(t) for t in got] == sums,
        "batches": n,
        "host_syncs": sum(
            1 for e in events if "Synchronize" in e.get("name", "") and e.get("cat") == "cuda_runtime"
        ),
    }
    if args.device == "cuda":
        copies = [e for e in events if e.get("cat") == "gpu_memcpy"]
        kernels = [e for e in events if e.get("cat") == "kernel"]
        figures["copy_streams"] = sorted({e["args"].get("stream") for e in copies})
        figures["kernel_streams"] = sorted({e["args"].get("stream") for e in kernels})
        busy = sum(e["dur"] for e in copies) or 1
        figures["copy_overlap"] = round(sum(_overlap(c, kernels) for c in copies) / busy, 3)
    if not figures["data_intact"]:
        _fail(figures, "a batch arrived changed on the device")
    return figures


def timer(args: argparse.Namespace) -> dict:
    """bench's own per-call timing (`measurement.timed`) against torch.utils.benchmark.Timer."""
    import torch
    from torch.utils import benchmark

    import s2mlp_cli
    from s2mlp_cli.bench.measurement import Settings, make_input, timed
    from s2mlp_cli.runtime import autocast, set_math_mode

    set_math_mode(args.device, False)
    amp = "bf16" if args.device == "cuda" else "none"
    figures, bad = {}, []
    for name in ("s2mlpv2_small", "vip_s7"):
        model = s2mlp_cli.create_model(name).eval().to(args.device)
        for batch in (args.batch, 1):
            settings = Settings(device=args.device, amp=amp)
            x = make_input(settings, batch, model.pretrained_cfg["input_size"][-1])

            def call(model=model, x=x) -> None:
                with torch.inference_mode(), autocast(args.device, amp):
                    model(x)

            for _ in range(3):
                call()
            ours = statistics.median(timed(call, 20, args.device))
            theirs = benchmark.Timer(stmt="call()", globals={"call": call}).blocked_autorange(
                min_run_time=0.5
            )
            ratio = ours / theirs.median
            figures[f"{name}/bs{batch}"] = {
                "bench_ms": round(ours * 1e3, 3),
                "timer_ms": round(theirs.median * 1e3, 3),
                "ratio": round(ratio, 3),
            }
            if args.device == "cuda" and batch > 1 and not 0.9 < ratio < 1.1:  # toy CPU sizes: figures only
                bad.append(
                    f"{name} bs{batch}: bench {ours * 1e3:.2f} ms vs Timer {theirs.median * 1e3:.2f} ms"
                )
    if bad:
        _fail(figures, "; ".join(bad))
    return figures


def profile_models(args: argparse.Namespace) -> dict:
    """torch.profiler's split of each forward's device time by operator, S²-MLPv2-S and ViP-S/7."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import s2mlp_cli
    from s2mlp_cli.runtime import autocast

    amp = "bf16" if args.device == "cuda" else "none"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    figures = {}
    for name in ("s2mlpv2_small", "vip_s7"):
        model = s2mlp_cli.create_model(name).eval().to(args.device)
        x = torch.randn(args.batch, 3, *model.pretrained_cfg["input_size"][1:], device=args.device)
        with torch.inference_mode(), autocast(args.device, amp):
            for _ in range(2):
                model(x)
            _sync(args.device)
            with profile(activities=activities) as prof:
                for _ in range(3):
                    model(x)
                _sync(args.device)
        key = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=30)
        (Path(args.out) / "traces").mkdir(exist_ok=True)
        (Path(args.out) / "traces" / f"profile_{name}.txt").write_text(table)
        events = prof.key_averages()
        total = sum(getattr(e, key) for e in events) or 1
        top = sorted(events, key=lambda e: -getattr(e, key))[:8]
        figures[name] = {e.key: round(getattr(e, key) / total, 4) for e in top}
    return figures


def torchrun_entry(argv: list[str]) -> None:
    """A torchrun entry for one GPU: both ranks on GPU 0 over gloo (NCCL needs a GPU per rank), opened
    here so that s2mlp keeps it; s2mlp's own start() opens NCCL when each rank has a GPU."""
    os.environ["LOCAL_RANK"] = "0"
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    import torch.distributed as dist

    from s2mlp_cli.cli import main

    dist.init_process_group("gloo")
    sys.argv = ["s2mlp", *argv]
    try:
        main()
    finally:
        dist.destroy_process_group()


def _predictions(path: Path) -> dict:
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}


def _overlap(a: dict, others: list[dict]) -> float:
    return sum(
        max(0, min(a["ts"] + a["dur"], b["ts"] + b["dur"]) - max(a["ts"], b["ts"]))
        for b in others
        if b["args"].get("stream") != a["args"].get("stream")
    )


def _gzip(path: Path) -> None:
    with open(path, "rb") as f, gzip.open(f"{path}.gz", "wb") as g:
        g.write(f.read())
    path.unlink()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class _Failed(Exception):
    def __init__(self, figures: dict, message: str) -> None:
        super().__init__(message)
        self.figures = figures


def _fail(figures: dict, message: str) -> None:
    raise _Failed(figures, message)


PROBES = {
    "toy-zoo": toy_zoo,
    "env": env,
    "pytest-gpu": pytest_gpu,
    "matmul": matmul,
    "targets": targets,
    "make-data": make_data,
    "compare-evals": compare_evals,
    "decode-compare": decode_compare,
    "timm-loop": timm_loop,
    "prefetch": prefetch,
    "timer": timer,
    "profile": profile_models,
}


def main() -> None:
    if sys.argv[1:2] == ["torchrun-entry"]:
        torchrun_entry(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("probe", choices=sorted(PROBES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="")
    parser.add_argument("--zoo", default="")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--figures", required=True)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--max-side", type=int, default=900)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    try:
        figures, failure = PROBES[args.probe](args), None
    except _Failed as e:
        figures, failure = e.figures, str(e)
    Path(args.figures).write_text(json.dumps(figures, indent=1, default=str))
    print(json.dumps(figures, default=str))
    if failure:
        sys.exit(f"{args.probe}: {failure}")


if __name__ == "__main__":
    main()
