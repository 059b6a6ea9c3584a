"""s2mlp's GPU check: every CUDA path of s2mlp once, most important first, in one call of at most 420 s
on one GPU; and the same steps on the CPU at toy sizes (`--dry-run`), which CI runs.

    bash benchmarks/gpu_check.sh OUT_DIR            # on a machine with a CUDA device
    bash benchmarks/gpu_check.sh --dry-run OUT_DIR  # anywhere: the CPU, a toy zoo, toy sizes

Everything it writes stays under OUT_DIR: `summary.json` (read it first: one entry per step with `name`,
`status` ok / fail / not reached, `seconds`, its time box and its `figures`; `figures_exist` names the
steps that left figures), one log per step, the commands' JSON and the probes' traces. Each step runs
under its own time box, cut to what is left of the budget (BUDGET_S, 400 s); a step that cannot start
with its minimum left is "not reached". Exit 0 when every step is ok, 1 otherwise; 3 when the real run
finds no CUDA device (one line, nothing written). The probes are in benchmarks/gpu_probes.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "benchmarks" / "gpu_probes.py"


@dataclass(frozen=True)
class Sizes:
    """What differs between the real run and the dry run: the device and the sizes, never the steps."""

    device: str
    batch: int
    images: int
    max_side: int
    warmup: int
    iters: int
    rounds: int
    workers: int
    amp: str
    budget_s: float


REAL = Sizes("cuda", 256, 2048, 900, 3, 20, 4, 8, "bf16", 400.0)
DRY = Sizes("cpu", 4, 32, 160, 1, 2, 2, 0, "bf16", 280.0)


@dataclass
class Step:
    name: str
    box_s: float  # its own time box
    argv: list[str]
    min_s: float = 10.0  # it is not started with less than this left
    env: dict[str, str] = field(default_factory=dict)
    figures: str = ""  # a JSON file the step writes its figures to (probes) or its results to (commands)
    needs: tuple[str, ...] = ()  # steps whose output it reads: not reached unless they were ok


class Check:
    def __init__(self, out: Path, dry: bool) -> None:
        self.out, self.dry = out, dry
        self.sizes = DRY if dry else REAL
        self.budget = float(os.environ.get("BUDGET_S", self.sizes.budget_s))
        self.work = out / "work"
        self.t0 = time.monotonic()
        self.entries: list[dict] = []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def run(self, step: Step) -> bool:
        entry = {
            "name": step.name,
            "status": "not reached",
            "seconds": 0.0,
            "box_s": step.box_s,
            "figures": {},
        }
        self.entries.append(entry)
        ok = {e["name"] for e in self.entries if e["status"] == "ok"}
        if missing := [n for n in step.needs if n not in ok]:
            entry["note"] = f"needs {', '.join(missing)}, which did not succeed"
        elif self.left() < step.min_s:
            entry["note"] = f"{self.left():.0f} s of the budget left, needs {step.min_s:.0f} s"
        if "note" in entry:
            self._say(entry)
            return False
        box = min(step.box_s, self.left())
        began = time.monotonic()
        with open(self.out / f"{step.name}.log", "w") as log:
            try:
                done = subprocess.run(
                    step.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    timeout=box,
                    env={**os.environ, **self.base_env(), **step.env},
                )
                rc, note = done.returncode, ""
            except subprocess.TimeoutExpired:
                rc, note = None, f"time box of {box:.0f} s reached"
        entry["seconds"] = round(time.monotonic() - began, 1)
        entry["status"] = "ok" if rc == 0 else "fail"
        if rc not in (0, None):
            note = f"exit {rc}: {self._last_line(step.name)}"
        if note:
            entry["note"] = note
        entry["figures"] = self._figures(step)
        failed_rows = [
            m for m, r in entry["figures"].items() if isinstance(r, dict) and r.get("status", "ok") != "ok"
        ]
        if rc == 0 and failed_rows:  # a result document with a row that did not run
            rc, entry["status"] = 1, "fail"
            entry["note"] = f"rows not ok: {', '.join(failed_rows)}"
        self._say(entry)
        return rc == 0

    def base_env(self) -> dict[str, str]:
        env = {
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
            "PYTHONUNBUFFERED": "1",
            "S2MLP_HOME": str(self.work / "home"),
            "HF_HOME": str(self.work / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TORCHINDUCTOR_CACHE_DIR": str(self.work / "inductor"),
            "TRITON_CACHE_DIR": str(self.work / "triton"),
            "TMPDIR": str(self.work / "tmp"),
            "COLUMNS": "120",
        }
        if self.dry:  # the toy zoo, and compiled graphs traced without generating kernels
            env.update(S2MLP_ZOO=str(self.work / "zoo"), S2MLP_COMPILE_BACKEND="aot_eager")
        return env

    def _figures(self, step: Step) -> dict:
        if not step.figures or not (self.out / step.figures).exists():
            return {}
        try:
            doc = json.loads((self.out / step.figures).read_text())
        except ValueError:
            return {"unreadable": step.figures}
        if isinstance(doc, dict) and "results" in doc:  # an s2mlp result document: its headline figures
            keys = (
                "status",
                "batch_size",
                "throughput",
                "throughput_iqr",
                "latency_bs1_ms",
                "peak_memory_mib",
                "compile_s",
                "top1",
                "top5",
                "images",
                "skipped",
                "images_per_s",
                "detail",
            )
            return {
                f"{r.get('model')}": {k: r[k] for k in keys if r.get(k) is not None} for r in doc["results"]
            }
        return doc

    def _last_line(self, name: str) -> str:
        lines = [
            ln for ln in (self.out / f"{name}.log").read_text(errors="replace").splitlines() if ln.strip()
        ]
        return lines[-1][:240] if lines else "(no output)"

    def _say(self, entry: dict) -> None:
        note = f" ({entry['note']})" if entry.get("note") else ""
        print(
            f"[{time.monotonic() - self.t0:5.0f} s] {entry['name']}: {entry['status']}, "
            f"{entry['seconds']} s{note}",
            flush=True,
        )

    def summary(self) -> dict:
        return {
            "mode": "dry-run (CPU, toy sizes)" if self.dry else "real",
            "device": self.sizes.device,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "budget_s": self.budget,
            "seconds": round(time.monotonic() - self.t0, 1),
            "steps": self.entries,
            "figures_exist": [e["name"] for e in self.entries if e["figures"]],
            "failed": [e["name"] for e in self.entries if e["status"] == "fail"],
            "not_reached": [e["name"] for e in self.entries if e["status"] == "not reached"],
        }


def steps(c: Check) -> list[Step]:
    z, py, out, w = c.sizes, sys.executable, c.out, c.work
    dev = z.device

    def probe(
        name: str,
        box: float,
        *extra: str,
        min_s: float = 10.0,
        env: dict | None = None,
        needs: tuple[str, ...] = (),
    ) -> Step:
        return Step(
            name,
            box,
            [
                py,
                str(PROBES),
                name.replace("_", "-"),
                "--out",
                str(out),
                "--work",
                str(w),
                "--zoo",
                str(w / "zoo"),
                "--device",
                dev,
                "--figures",
                str(out / f"{name}.json"),
                *extra,
            ],
            min_s,
            env or {},
            figures=f"{name}.json",
            needs=needs,
        )

    shipped = {"S2MLP_ZOO": "", "S2MLP_COMPILE_BACKEND": ""}  # the tests bring their own zoos

    def s2mlp(name: str, box: float, *args: str, min_s: float = 10.0, needs: tuple[str, ...] = ()) -> Step:
        return Step(
            name,
            box,
            [py, "-m", "s2mlp_cli", *args, "--json", "--output", str(out / f"{name}.json")],
            min_s,
            figures=f"{name}.json",
            needs=needs,
        )

    data = ("make_data",)

    rounds = [
        "--batch-size",
        str(z.batch),
        "--warmup",
        str(z.warmup),
        "--iters",
        str(z.iters),
        "--rounds",
        str(z.rounds),
        "--device",
        dev,
    ]
    ev = [
        "eval",
        "--variant",
        "s2mlpv2_small",
        "--weights",
        str(w / "w.safetensors"),
        "--data",
        str(w / "val"),
        "--device",
        dev,
        "--workers",
        str(z.workers),
        "--batch-size",
        str(z.batch),
    ]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    entry = [str(PROBES), "torchrun-entry"] if dev == "cuda" else ["-m", "s2mlp_cli"]
    two = [*ev, "--no-cache", "--limit", str(min(z.images, 512)), "--json"]
    return [
        probe("env", 30),
        Step(
            "doctor",
            60,
            ["sh", "-c", f'"{py}" -m s2mlp_cli doctor --device {dev} --json > "{out}/doctor.json"'],
            figures="doctor.json",
        ),
        probe("pytest_gpu", 120, min_s=30, env=shipped),
        s2mlp(
            "bench_compiled",
            170,
            "bench",
            "--variant",
            "s2mlpv2_small,s2mlpv2_medium",
            "--compare",
            "vip_s7",
            *rounds,
            "--amp",
            z.amp,
            "--channels-last",
            "--compile",
            "--timeout",
            "160",
            min_s=60,
        ),
        probe("matmul", 20),
        probe("targets", 10, min_s=2, needs=("bench_compiled", "matmul")),
        probe("make_data", 40, "--images", str(z.images), "--max-side", str(z.max_side)),
        s2mlp("eval_decoded", 40, *ev, "--save-predictions", str(out / "eval_decoded.jsonl"), needs=data),
        s2mlp("eval_cached", 30, *ev, "--save-predictions", str(out / "eval_cached.jsonl"), needs=data),
        probe("compare_evals", 10, min_s=2, needs=("eval_decoded", "eval_cached")),
        probe("decode_compare", 40, min_s=15, needs=data),
        *(
            [s2mlp("eval_gpu_decode", 40, *ev, "--decode", "gpu", "--no-cache", needs=data)]
            if dev == "cuda"
            else []
        ),
        probe("timm_loop", 40, "--batch", str(z.batch), "--workers", str(z.workers), needs=data),
        probe("prefetch", 30),
        Step(
            "torchrun_eval",
            60,
            [*torchrun, *entry, *two, "--output", str(out / "torchrun_eval.json")],
            30,
            figures="torchrun_eval.json",
            needs=data,
        ),
        s2mlp("single_eval", 30, *two[:-1], needs=data),
        probe("timer", 45, "--batch", str(z.batch)),
        probe("profile", 45, "--batch", str(z.batch)),
        s2mlp(
            "bench_compiled_peers",
            150,
            "bench",
            "--variant",
            "s2mlpv2_small",
            "--compare",
            "gfnet_s,mixer_b16_224",
            *rounds,
            "--amp",
            z.amp,
            "--channels-last",
            "--compile",
            "--timeout",
            "140",
            min_s=60,
        ),
        s2mlp(
            "bench_eager",
            90,
            "bench",
            "--variant",
            "s2mlpv2_small",
            "--compare",
            "vip_s7,gfnet_s,mixer_b16_224",
            *rounds,
            "--amp",
            z.amp,
            "--timeout",
            "80",
            min_s=40,
        ),
    ]


def torchrun_hygiene(c: Check) -> None:
    """The 2-process eval: exit 0, no process-group leak warning, each line once, the numbers of one
    process (single_eval)."""
    entry = next((e for e in c.entries if e["name"] == "torchrun_eval"), None)
    single = c.out / "single_eval.json"
    if entry is None or entry["status"] != "ok" or not single.exists():
        return
    log = (c.out / "torchrun_eval.log").read_text(errors="replace")
    lines = [ln for ln in log.splitlines() if ln.startswith(("data:", "layout:", "set:"))]
    two = json.loads((c.out / "torchrun_eval.json").read_text())["results"][0]
    one = json.loads(single.read_text())["results"][0]
    checks = {
        "no_leak_warning": "destroy_process_group" not in log,
        "each_line_once": len(lines) == len(set(lines)) and bool(lines),
        "same_numbers_as_one_process": all(two[k] == one[k] for k in ("images", "top1", "top5")),
    }
    entry["figures"]["hygiene"] = checks
    if not all(checks.values()):
        entry["status"], entry["note"] = "fail", f"torchrun hygiene: {checks}"


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    rest = [a for a in argv if a != "--dry-run"]
    if len(rest) != 1 or rest[0].startswith("-"):
        print("usage: bash benchmarks/gpu_check.sh [--dry-run] OUT_DIR", file=sys.stderr)
        return 2
    out = Path(rest[0]).resolve()
    if not dry:
        import torch

        if not torch.cuda.is_available():
            print(
                f"gpu_check: no CUDA device is visible to torch {torch.__version__}; this script needs a "
                "GPU (--dry-run runs its steps on the CPU)"
            )
            return 3
    c = Check(out, dry)
    (c.work / "tmp").mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: {c.summary()['mode']}, budget {c.budget:.0f} s, writing under {out}", flush=True)
    if dry:  # the toy zoo is made from the shipped cards
        c.run(
            Step(
                "toy_zoo",
                30,
                [
                    sys.executable,
                    str(PROBES),
                    "toy-zoo",
                    "--out",
                    str(out),
                    "--zoo",
                    str(c.work / "zoo"),
                    "--device",
                    "cpu",
                    "--figures",
                    str(out / "toy_zoo.json"),
                ],
                env={"S2MLP_ZOO": ""},
            )
        )
    for step in steps(c):
        c.run(step)
    torchrun_hygiene(c)
    doc = c.summary()
    (out / "summary.json").write_text(json.dumps(doc, indent=1, default=str))
    shutil.rmtree(c.work, ignore_errors=True)  # generated images, caches, compiled kernels
    bad = doc["failed"] + doc["not_reached"]
    print(
        f"gpu_check: {len(doc['steps']) - len(bad)} of {len(doc['steps'])} steps ok in {doc['seconds']:.0f} s"
        + (f"; failed: {', '.join(doc['failed'])}" if doc["failed"] else "")
        + (f"; not reached: {', '.join(doc['not_reached'])}" if doc["not_reached"] else "")
        + f"; {out / 'summary.json'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
