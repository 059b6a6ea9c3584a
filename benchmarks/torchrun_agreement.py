"""How far 2 torchrun processes drift from 1 process on the same global batches, by the number of steps.

    python benchmarks/torchrun_agreement.py [--epochs 2,4,10] [--json OUT]

The data and the tiny S²-MLPv2 of train_vs_timm.py (1,800 digits-like images, batch 64: 28 steps an
epoch), the paper recipe with Mixup, CutMix and drop path off (their draws are per process by design),
one intra-op thread per process, on the CPU (gloo). For each length, one run of `s2mlp train` and one of
`torchrun --nproc-per-node 2 -m s2mlp_cli train` with the same flags; printed: the steps, the largest
weight difference of last.safetensors, the last epoch's training losses and both top-1s.

The two differ only in the order floating-point sums are taken (each process's half-batch gradient,
then gloo's all-reduce, against one full-batch gradient): about 1e-7 relative per step, which training
then carries and amplifies, so the difference grows with the steps rather than staying at a bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_vs_timm as bench  # noqa: E402 (the same data, card and recipe flags)

PLAIN = ["--set", "mixup=0", "--set", "cutmix=0", "--set", "drop_path=0", "--threads", "1"]


def run(work: Path, out: Path, epochs: int, processes: int) -> dict:
    args = ["-m", "s2mlp_cli", "train", "--data", str(work / "data"), "--output", str(out)]
    args += [*bench.s2mlp_flags(epochs), *PLAIN]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    env = {**bench.child_env(work, "1")}
    done = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, cwd=work)
    if done.returncode:
        raise SystemExit(f"{processes}-process run failed: {done.stderr.strip()[-2000:]}")
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    return {"loss": last["train_loss"], "top1": last["val"]["top1"]}


def largest_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", default="2,4,10", help="run lengths (2 or more: 1 warm-up epoch)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="torchrun-agreement-") as tmp:
        work = Path(tmp)
        bench.make_digits(work / "data", bench.TRAIN, bench.VAL)
        bench.write_card(work / "zoo", "tiny")
        for epochs in (int(e) for e in args.epochs.split(",")):
            one, two = work / f"one-{epochs}", work / f"two-{epochs}"
            a, b = run(work, one, epochs, 1), run(work, two, epochs, 2)
            diff = largest_difference(one / "last.safetensors", two / "last.safetensors")
            steps = epochs * (10 * bench.TRAIN // bench.BATCH)
            rows.append({"epochs": epochs, "steps": steps, "max_weight_diff": diff, "one": a, "two": b})
            print(
                f"{steps:5d} steps: max |w1 - w2| {diff:.2e}; loss {a['loss']:.5f} / {b['loss']:.5f}; "
                f"top-1 {a['top1']:.1f} / {b['top1']:.1f}",
                flush=True,
            )
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
