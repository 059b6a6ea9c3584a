#!/usr/bin/env bash
# s2mlp GPU check: every CUDA path of s2mlp once, on a single-GPU machine available for a few minutes.
# NOT YET RUN ON A GPU (no GPU was lent when it was written): its first run will be its first test.
#
#   bash benchmarks/gpu_check.sh OUT_DIR        (from the repository root; or OUT=OUT_DIR bash ...)
#
# It writes every figure under OUT_DIR and exits non-zero if anything failed. With no CUDA device
# visible it stops at once, in one line, before any work (exit 3).
# Budget: BUDGET_S (default 530 s) of wall time; each step has its own hard timeout and is SKIPPED
# (said so) when the budget is short. Read SUMMARY.txt first.
#
# Expected: every bench row ok (GFNet under channels-last was fixed); two ranks per GPU refused by s2mlp in
# one line before any work; no host sync per eval batch (mean/std are built once per pass).
#
# Outputs ($OUT): summary.tsv (step, status, seconds, note) and SUMMARY.txt; env.json; one log per step;
# bench_*.json; timer.json; profile_*.txt/json and trace_*.json.gz; fused_s2.json; eval_*.json/.jsonl;
# eval_compare.json; torchrun_*.log.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/s2mlp_gpu_out}}
PY=${PY:-python3}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device is visible to $($PY -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo 'python (no torch)'); this script needs a GPU"
  exit 3
fi
mkdir -p "$OUT"
W=$(mktemp -d /tmp/s2gpu.XXXXXX)
trap 'rm -rf "$W"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d gpu_deps ] && export PYTHONPATH="$PYTHONPATH:$PWD/gpu_deps"
export PYTHONUNBUFFERED=1 S2MLP_HOME="$W/home" HF_HOME="$W/hf" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR="$W/inductor" TRITON_CACHE_DIR="$W/triton"
BUDGET_S=${BUDGET_S:-530}
N_IMAGES=${N_IMAGES:-2048}
T0=$(date +%s)
FAILED=0
printf 'step\tstatus\tseconds\tnote\n' > "$OUT/summary.tsv"

left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/summary.tsv"; echo "[$(($(date +%s) - T0))s] $1: $2 ($3 s) $4"; }
# step NAME LIMIT_S MIN_S CMD... : run with a hard timeout (clipped to the budget); log to $OUT/NAME.log
step() {
  local name=$1 limit=$2 min=$3; shift 3
  local rem; rem=$(left)
  if [ "$rem" -lt "$min" ]; then record "$name" SKIPPED 0 "budget: ${rem}s left, needs ${min}s"; FAILED=1; return 99; fi
  [ "$limit" -gt "$rem" ] && limit=$rem
  local s; s=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local d=$(( $(date +%s) - s ))
  if [ $rc -eq 0 ]; then record "$name" OK "$d" ""
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" TIMEOUT "$d" "limit ${limit}s; see $name.log"; FAILED=1
  else record "$name" FAIL "$d" "rc=$rc: $(grep -v '^\s*$' "$OUT/$name.log" | tail -1 | cut -c1-200)"; FAILED=1; fi
  return $rc
}

# ---------------------------------------------------------------------------------------------------------
# helper programs (written to $W; nothing in the repository changes)
cat > "$W/env_gate.py" <<'PY'
import json, os, shutil, subprocess, sys, sysconfig
import torch
info = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
        "cc": shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc"),
        "python_h": os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))}
for mod in ("torchvision", "timm", "triton", "pytest", "safetensors", "huggingface_hub", "scipy", "pyarrow"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:
        info[mod] = f"MISSING ({type(e).__name__})"
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit,mig.mode.current",
                                         "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except Exception as e:
    info["nvidia_smi"] = f"unavailable: {e}"
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported(),
                cudnn=torch.backends.cudnn.version(), nccl=".".join(map(str, torch.cuda.nccl.version())),
                device_count=torch.cuda.device_count())
    x = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    info["smoke_matmul_ok"] = bool(torch.isfinite(x @ x).all())
json.dump(info, open(os.path.join(os.environ["OUT"], "env.json"), "w"), indent=1)
print(json.dumps(info, indent=1))
if not info["cuda_available"]:
    sys.exit("NO CUDA: torch %s (CUDA %s) sees no GPU -- a driver older than the wheel's CUDA needs? "
             "(cu130 wheels need an R580+ driver) Everything after this would silently run on the CPU."
             % (torch.__version__, torch.version.cuda))
if not (info["cc"] and info["python_h"]):
    print("WARNING: no C compiler or no Python.h: Triton cannot build its launcher, so --compile and the "
          "Triton kernel checks will fail", file=sys.stderr)
PY

cat > "$W/make_data.py" <<'PY'
"""Synthetic ImageNet-layout set (class folders): baseline, progressive, 4:4:4, grayscale, CMYK, PNG-named-JPEG
and one truncated JPEG; plus random S2-MLPv2-S weights with spread logits (as tests/test_eval.py does)."""
import io, os, sys
from multiprocessing import Pool
import numpy as np
from PIL import Image

def one(args):
    i, root, wnid = args
    rng = np.random.default_rng(i)
    w, h = int(rng.integers(200, 900)), int(rng.integers(200, 900))
    small = rng.integers(0, 255, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    buf, kind = io.BytesIO(), i % 64
    if kind == 1: img.convert("L").save(buf, "JPEG", quality=90)
    elif kind == 2: img.convert("CMYK").save(buf, "JPEG", quality=90)
    elif kind == 3: img.save(buf, "PNG")
    elif kind == 4: img.save(buf, "JPEG", quality=90, progressive=True)
    elif kind == 5: img.save(buf, "JPEG", quality=90, subsampling=0)
    else: img.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
    data = buf.getvalue()
    if i == 7:
        data = data[: len(data) // 2]
    os.makedirs(os.path.join(root, wnid), exist_ok=True)
    with open(os.path.join(root, wnid, f"ILSVRC2012_val_{i + 1:08d}.JPEG"), "wb") as f:
        f.write(data)

if __name__ == "__main__":
    root, n, weights = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from s2mlp_cli.data import synsets
    wnids = synsets()[:16]
    with Pool(min(16, os.cpu_count() or 1)) as p:
        p.map(one, [(i, root, wnids[i % 16]) for i in range(n)], chunksize=32)
    import torch
    from safetensors.torch import save_file
    import s2mlp_cli
    torch.manual_seed(0)
    m = s2mlp_cli.create_model("s2mlpv2_small").eval()
    with torch.no_grad():
        m.head.weight.mul_(50)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, weights)
    print(f"wrote {n} images under {root} and {weights}")
PY

cat > "$W/check_bench.py" <<'PY'
"""Summarise a bench JSON; exit 1 if a row that must succeed did not. argv: file, models expected to fail."""
import json, sys
doc = json.load(open(sys.argv[1]))
expected_fail = set(sys.argv[2].split(",")) if len(sys.argv) > 2 and sys.argv[2] else set()
bad = []
print("env:", {k: doc["env"].get(k) for k in ("device_name", "dtype", "math_mode", "torch", "cuda", "driver", "compile", "channels_last")})
for r in doc["results"]:
    bs1 = (r.get("latency_bs1_ms") or {}).get("p50")
    print(f"{r['model']:15s} {r['status']:11s} bs={r.get('batch_size')} thr={r.get('throughput')} img/s "
          f"iqr={r.get('throughput_iqr')} ratio={r.get('throughput_ratio')} range={r.get('throughput_ratio_range')} "
          f"bs1_p50={bs1} ms peak={r.get('peak_memory_mib')} MiB compile_s={r.get('compile_s')} {r.get('detail', '')[:160]}")
    if r["model"] in expected_fail:
        print(f"  EXPECTED-FAIL {r['model']}: {'confirmed' if r['status'] != 'ok' else 'NOT reproduced (it ran)'}")
    elif r["status"] != "ok" or not r.get("throughput"):
        bad.append(r["model"])
for w in doc.get("warnings", []):
    print("warning:", w)
if bad:
    sys.exit(f"rows not ok: {bad}")
PY

cat > "$W/timer_profile.py" <<'PY'
"""(1) The bench's own timing (CUDA events around each synchronised call, bench._timed) against
perf_counter+synchronize and torch.utils.benchmark.Timer; (2) torch.profiler traces of the S2-MLPv2-S and
ViP-S/7 forwards with GPU time by kernel class; (3) the eval's side-stream prefetch: data intact, copies on
another stream overlapping compute."""
import gzip, json, os, statistics, sys, time
import torch
from torch.utils import benchmark
from torch.profiler import ProfilerActivity, profile
import s2mlp_cli
from s2mlp_cli.bench.measurement import Settings, make_input, timed as _timed
from s2mlp_cli.runtime import autocast, set_math_mode
OUT = os.environ["OUT"]
set_math_mode("cuda", False)
res, failures = {}, []
models = {n: s2mlp_cli.create_model(n).eval().cuda() for n in ("s2mlpv2_small", "vip_s7")}
for name, m in models.items():
    for amp in ("none", "bf16"):
        for batch in (256, 1):
            settings = Settings(device="cuda", amp=amp)
            x = make_input(settings, batch, 224)
            def call():
                with torch.inference_mode(), autocast("cuda", amp):
                    m(x)
            for _ in range(5):
                call()
            torch.cuda.synchronize()
            ev = _timed(call, 30, "cuda")
            pc = []
            for _ in range(30):
                torch.cuda.synchronize(); t0 = time.perf_counter(); call(); torch.cuda.synchronize()
                pc.append(time.perf_counter() - t0)
            torch.cuda.synchronize(); t0 = time.perf_counter()
            for _ in range(30):
                call()
            torch.cuda.synchronize(); piped = (time.perf_counter() - t0) / 30
            t = benchmark.Timer(stmt="call()", globals={"call": call}).blocked_autorange(min_run_time=1.0)
            key = f"{name}/{amp}/bs{batch}"
            res[key] = r = {"events_median_ms": statistics.median(ev) * 1e3, "perf_counter_sync_median_ms": statistics.median(pc) * 1e3,
                            "pipelined_ms": piped * 1e3, "utils_benchmark_median_ms": t.median * 1e3, "utils_benchmark_iqr_ms": t.iqr * 1e3,
                            "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
            r["events_vs_timer"] = r["events_median_ms"] / r["utils_benchmark_median_ms"]
            print(key, {k: round(v, 3) for k, v in r.items()})
            if batch == 256 and not 0.93 < r["events_vs_timer"] < 1.07:
                failures.append(f"{key}: bench events {r['events_median_ms']:.2f} ms vs Timer {r['utils_benchmark_median_ms']:.2f} ms")
json.dump(res, open(f"{OUT}/timer.json", "w"), indent=1)

def kclass(n):
    n = n.lower()
    if any(s in n for s in ("gemm", "xmma", "cutlass", "nvjet", "sm90", "sm100", "cublas", "matmul")): return "gemm"
    if "catarray" in n or "cat_" in n: return "cat (S2 shifts)"
    if "layer_norm" in n or "layernorm" in n: return "layernorm"
    if "softmax" in n: return "softmax"
    if "reduce" in n or "mean" in n: return "reduction (mean)"
    if "conv" in n or "cudnn" in n or "implicit" in n: return "conv"
    if "gelu" in n: return "gelu"
    if "copy" in n or "permute" in n or "transpose" in n: return "copy/permute"
    if "elementwise" in n or "vectorized" in n or "unrolled" in n: return "elementwise (add/mul/div/cast)"
    return "other"
for name, m in models.items():
    for amp, batch in (("bf16", 256), ("none", 256), ("bf16", 1)):
        settings = Settings(device="cuda", amp=amp)
        x = make_input(settings, batch, 224)
        def call():  # autocast entered per call, as bench's Worker._call does (so weight casts are per call too)
            with torch.inference_mode(), autocast("cuda", amp):
                m(x)
        for _ in range(3): call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3): call()
            torch.cuda.synchronize()
        tag = f"{name}_{amp}_bs{batch}"
        tbl = prof.key_averages().table(sort_by="self_device_time_total", row_limit=40)
        open(f"{OUT}/profile_{tag}.txt", "w").write(tbl)
        path = f"/tmp/trace_{tag}.json"
        prof.export_chrome_trace(path)
        with open(path, "rb") as f, gzip.open(f"{OUT}/trace_{tag}.json.gz", "wb") as g:
            g.write(f.read())
        tr = json.load(open(path))
        by, nk = {}, 0
        for e in tr.get("traceEvents", []):
            if e.get("cat") == "kernel":
                c = kclass(e["name"]); by[c] = by.get(c, 0) + e.get("dur", 0) / 3; nk += 1
        tot = sum(by.values())
        summary = {"gpu_ms_per_forward": tot / 1e3, "kernels_per_forward": nk // 3,
                   "share": {k: round(v / tot, 4) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}}
        json.dump(summary, open(f"{OUT}/profile_{tag}.json", "w"), indent=1)
        print(tag, json.dumps(summary))
# (3) side-stream prefetch of evaluate._to_device: exact data, copies on another stream, overlap with compute
from s2mlp_cli.evaluate.feed import to_device as _to_device
from s2mlp_cli.data import normalize
g = torch.Generator().manual_seed(1)
cpu = [torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, generator=g).pin_memory() for _ in range(6)]
sums = [int(b.sum(dtype=torch.int64)) for b in cpu]
m = models["s2mlpv2_small"]
batches = ((b, torch.zeros(256, dtype=torch.long), torch.arange(256), [""] * 256) for b in cpu)
got = []
with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for x, y, idx, err in _to_device(batches, torch.device("cuda", 0)):
            got.append(x.sum(dtype=torch.int64))
            m(normalize(x, (0.5,) * 3, (0.25,) * 3))
        torch.cuda.synchronize()
ok = [int(a) for a in got] == sums
path = "/tmp/trace_prefetch.json"; prof.export_chrome_trace(path)
ev = json.load(open(path)).get("traceEvents", [])
cp = [(e["ts"], e["ts"] + e["dur"], e["args"].get("stream")) for e in ev if e.get("cat") == "gpu_memcpy"]
kn = [(e["ts"], e["ts"] + e["dur"], e["args"].get("stream")) for e in ev if e.get("cat") == "kernel"]
syncs = sum(1 for e in ev if e.get("cat") == "cuda_runtime" and "StreamSynchronize" in e.get("name", ""))
def overlap(a, bs):
    return sum(max(0, min(a[1], b[1]) - max(a[0], b[0])) for b in bs if b[2] != a[2])
ov = sum(overlap(c, kn) for c in cp) / max(1, sum(c[1] - c[0] for c in cp))
pf = {"data_intact": ok, "copy_streams": sorted({c[2] for c in cp}), "kernel_streams": sorted({k[2] for k in kn}),
      "copies": len(cp), "copy_overlapped_fraction": round(ov, 3),
      "stream_syncs_per_batch": syncs / len(cpu)}  # mean/std as device tensors built once: 0 expected
json.dump(pf, open(f"{OUT}/prefetch.json", "w"), indent=1)
print("prefetch", pf)
if not ok:
    failures.append("side-stream prefetch delivered different data")
if failures:
    sys.exit("; ".join(failures))
PY

cat > "$W/s2_triton.py" <<'PY'
import torch, triton, triton.language as tl

@triton.jit
def _src(h, w, c, C4, H, W, first_is_h: tl.constexpr):
    q = c // C4
    along_h = (q < 2) if first_is_h else (q >= 2)
    plus = (q % 2) == 0
    dh = tl.where(along_h, tl.where(plus, -1, 1), 0)
    dw = tl.where(along_h, 0, tl.where(plus, -1, 1))
    return tl.minimum(tl.maximum(h + dh, 0), H - 1), tl.minimum(tl.maximum(w + dw, 0), W - 1)

@triton.jit
def s2_pool_kernel(y_ptr, m_ptr, H, W, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0); c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C); cmask = c < C
    C4 = C // 4; HW = H * W; acc = tl.zeros((BLOCK_C,), dtype=tl.float32); base = b * HW * 3 * C
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P); mask = (p < HW)[:, None] & cmask[None, :]
        h = p // W; w = p % W
        h1, w1 = _src(h[:, None], w[:, None], c[None, :], C4, H, W, True)
        h2, w2 = _src(h[:, None], w[:, None], c[None, :], C4, H, W, False)
        v1 = tl.load(y_ptr + base + (h1 * W + w1) * 3 * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        v2 = tl.load(y_ptr + base + (h2 * W + w2) * 3 * C + C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        v3 = tl.load(y_ptr + base + p[:, None] * 3 * C + 2 * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(v1 + v2 + v3, axis=0)
    tl.store(m_ptr + b * C + c, acc / HW, mask=cmask)

@triton.jit
def s2_combine_kernel(y_ptr, a_ptr, o_ptr, B, H, W, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    HW = H * W
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P); c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (p < B * HW)[:, None] & (c < C)[None, :]
    b = p // HW; r = p % HW; h = r // W; w = r % W; C4 = C // 4
    h1, w1 = _src(h[:, None], w[:, None], c[None, :], C4, H, W, True)
    h2, w2 = _src(h[:, None], w[:, None], c[None, :], C4, H, W, False)
    base = b[:, None] * HW * 3 * C
    v1 = tl.load(y_ptr + base + (h1 * W + w1) * 3 * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
    v2 = tl.load(y_ptr + base + (h2 * W + w2) * 3 * C + C + c[None, :], mask=mask, other=0.0).to(tl.float32)
    v3 = tl.load(y_ptr + base + r[:, None] * 3 * C + 2 * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
    a0 = tl.load(a_ptr + b[:, None] * C + c[None, :], mask=mask, other=0.0)
    a1 = tl.load(a_ptr + B * C + b[:, None] * C + c[None, :], mask=mask, other=0.0)
    a2 = tl.load(a_ptr + 2 * B * C + b[:, None] * C + c[None, :], mask=mask, other=0.0)
    tl.store(o_ptr + p[:, None] * C + c[None, :], (v1 * a0 + v2 * a1 + v3 * a2).to(o_ptr.dtype.element_ty), mask=mask)

def fused_middle(attn, y, BLOCK_P=64, BLOCK_C=64):
    """Everything between mlp1 and mlp2, from y = mlp1(x) (B, H, W, 3C) contiguous."""
    B, H, W, C3 = y.shape; C = C3 // 3
    m = torch.empty(B, C, device=y.device, dtype=torch.float32)
    s2_pool_kernel[(B, triton.cdiv(C, BLOCK_C))](y, m, H, W, C, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    a = attn.reweight(m.to(y.dtype)).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0).float().contiguous()
    o = torch.empty(B, H, W, C, device=y.device, dtype=y.dtype)
    s2_combine_kernel[(triton.cdiv(B * H * W, BLOCK_P), triton.cdiv(C, BLOCK_C))](y, a, o, B, H, W, C, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    return o
PY

cat > "$W/fused_bench.py" <<'PY'
"""The S2 mixer's middle (shift + sum + mean + split attention + combine) at batch 256 in bf16, eager vs
torch.compile vs the two hand-fused Triton kernels; bytes moved and effective bandwidth."""
import json, os, sys
import torch
from s2mlp_cli.arch import spatial_shift1, spatial_shift2
from s2mlp_cli.arch.s2mlpv2 import S2Attention
sys.path.insert(0, os.environ["W"])
from s2_triton import fused_middle
OUT = os.environ["OUT"]
def middle(attn, y):
    B, C = y.shape[0], y.shape[-1] // 3
    x1 = spatial_shift1(y[..., :C]); x2 = spatial_shift2(y[..., C:2 * C]); x3 = y[..., 2 * C:]
    a = (x1 + x2 + x3).mean(dim=(1, 2))
    a = attn.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)[:, :, None, None, :]
    return x1 * a[0] + x2 * a[1] + x3 * a[2]
def bench(fn, n=50):
    for _ in range(5): fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(n): fn()
    e.record(); e.synchronize()
    return s.elapsed_time(e) / n
res, bad = {}, []
for (B, H, W, C) in ((256, 32, 32, 192), (256, 16, 16, 384)):
    torch.manual_seed(0)
    attn = S2Attention(C).cuda().eval().to(torch.bfloat16)
    y = torch.randn(B, H, W, 3 * C, device="cuda", dtype=torch.bfloat16)
    T = B * H * W * C * 2
    with torch.inference_mode():
        ref = middle(attn, y)
        got = fused_middle(attn, y)
        err = (got.float() - ref.float()).abs().max().item()
        comp = torch.compile(lambda t: middle(attn, t), fullgraph=True)
        cerr = (comp(y).float() - ref.float()).abs().max().item()
        t_e, t_c, t_t = bench(lambda: middle(attn, y)), bench(lambda: comp(y)), bench(lambda: fused_middle(attn, y))
    key = f"B{B}_H{H}_W{W}_C{C}"
    res[key] = {"eager_ms": t_e, "compiled_ms": t_c, "triton_fused_ms": t_t, "triton_max_abs_err": err,
                "compiled_max_abs_err": cerr, "eager_bytes_model_GB": 27 * T / 1e9, "fused_bytes_model_GB": 7 * T / 1e9,
                "eager_eff_TBps": 27 * T / t_e / 1e9, "triton_eff_TBps": 7 * T / t_t / 1e9, "compiled_eff_TBps_if_7T": 7 * T / t_c / 1e9}
    print(key, {k: round(v, 4) for k, v in res[key].items()})
    if err > 0.1 or cerr > 0.1:
        bad.append(f"{key}: fused/compiled disagree with eager (triton {err:.3g}, compiled {cerr:.3g})")
json.dump(res, open(f"{OUT}/fused_s2.json", "w"), indent=1)
if bad:
    sys.exit("; ".join(bad))
PY

cat > "$W/compare_eval.py" <<'PY'
"""Compare the eval runs: per-image top-1 agreement and top-5 probability differences, and the summaries."""
import json, os, sys
OUT = os.environ["OUT"]
def preds(tag):
    p = f"{OUT}/eval_{tag}.jsonl"
    return {r["key"]: r for r in map(json.loads, open(p))} if os.path.exists(p) else None
def summ(tag):
    p = f"{OUT}/eval_{tag}.json"
    if not os.path.exists(p): return None
    r = json.load(open(p))["results"][0]
    return {k: r.get(k) for k in ("top1", "top5", "loss", "images", "skipped", "images_per_s")} | {"env_cache": json.load(open(p))["env"].get("cache")}
pairs = [  # (a, b, min top-1 agreement, max |dprob|, what it checks)
    ("cuda_fp32", "cpu_fp32_ref", 1.0, 1e-3, "CUDA fp32 (TF32 off) = CPU fp32"),
    ("cuda_fp32", "cuda_fp32_cached", 1.0, 1e-5, "crop cache read (pinned, memmap) = decoded pass"),
    ("cuda_fp32", "cuda_fp32_nocache", 1.0, 1e-5, "DataLoader pin_memory path = cache-building pass"),
    ("cuda_fp32", "cuda_bf16", 0.90, None, "bf16 autocast vs fp32 (loose)"),
    ("cuda_fp32", "gpudec_fp32", 0.95, None, "nvJPEG+GPU resize vs PIL (loose; not bit-equal by design)"),
    ("gpudec_fp32", "gpudec_bf16", 0.90, None, "GPU decode bf16 vs fp32 (loose)"),
]
out, bad = {"summaries": {t: summ(t) for t in ("cuda_fp32", "cuda_fp32_cached", "cuda_fp32_nocache", "cuda_bf16", "gpudec_fp32", "gpudec_bf16", "cpu_fp32_ref", "torchrun_gloo", "single_limit")}}, []
for a, b, agree_min, dprob_max, what in pairs:
    A, B = preds(a), preds(b)
    if A is None or B is None:
        out[f"{a}~{b}"] = "missing"; bad.append(f"{a}~{b}: missing"); continue
    keys = sorted(set(A) & set(B))
    agree = sum(A[k]["top5"][0] == B[k]["top5"][0] for k in keys) / max(1, len(keys))
    dprob = max((abs(p - q) for k in keys if A[k]["top5"] == B[k]["top5"] for p, q in zip(A[k]["top5_prob"], B[k]["top5_prob"])), default=0.0)
    out[f"{a}~{b}"] = {"what": what, "images": len(keys), "top1_agreement": agree, "max_abs_dprob_same_top5": dprob}
    if agree < agree_min or (dprob_max is not None and dprob > dprob_max) or not keys:
        bad.append(f"{a}~{b} ({what}): agreement {agree:.4f}, dprob {dprob:.2e}")
s, t = out["summaries"].get("single_limit"), out["summaries"].get("torchrun_gloo")
if s and t and (s["images"], s["top1"], s["top5"]) != (t["images"], t["top1"], t["top5"]):
    bad.append(f"torchrun (2 procs, gloo, CUDA) {t} != single process {s}")
out["failures"] = bad
json.dump(out, open(f"{OUT}/eval_compare.json", "w"), indent=1)
print(json.dumps(out, indent=1))
sys.exit("; ".join(bad) if bad else 0)
PY

cat > "$W/gloo_wrap.py" <<'PY'
"""torchrun entry: both ranks on GPU 0 over gloo (which all-reduces CUDA tensors through the host); s2mlp's
Shard.from_env keeps an already-initialised group. NCCL refuses two ranks on one GPU, so this is the only
way to run the sharded CUDA eval on a one-GPU machine."""
import os, sys
os.environ["LOCAL_RANK"] = "0"
os.environ["LOCAL_WORLD_SIZE"] = "1"  # s2mlp refuses more ranks than GPUs; this probe shares GPU 0 on purpose
import torch.distributed as dist
dist.init_process_group("gloo")
from s2mlp_cli.cli import main
sys.argv[0] = "s2mlp"
try:
    main()
finally:
    if dist.is_initialized():
        dist.destroy_process_group()
PY

cat > "$W/nccl_same_gpu.py" <<'PY'
"""torchrun entry: both ranks forced onto GPU 0 with NCCL (what s2mlp does, minus set_device(1)); expected to
fail with ncclInvalidUsage 'Duplicate GPU detected'."""
import os, sys
os.environ["LOCAL_RANK"] = "0"
from s2mlp_cli.cli import main
sys.argv[0] = "s2mlp"
main()
PY

# ---------------------------------------------------------------------------------------------------------
S2="s2mlpv2_small"; PEERS="vip_s7,gfnet_s,mixer_b16_224"
EV=(-m s2mlp_cli eval --variant "$S2" --weights "$W/w_small.safetensors" --data "$W/val" --json)

export OUT W
step env_gate 60 20 $PY "$W/env_gate.py" || { record ABORT FAIL 0 "no usable CUDA device: nothing else would test the GPU"; cat "$OUT/env_gate.log"; exit 3; }
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1 || true
step doctor 90 30 sh -c "$PY -m s2mlp_cli doctor --device cuda --json > '$OUT/doctor.json'"

# the eval set, built on the CPU while the tests run (pytest is not timing-sensitive)
( $PY "$W/make_data.py" "$W/val" "$N_IMAGES" "$W/w_small.safetensors" > "$OUT/make_data.log" 2>&1; echo $? > "$W/make_data.rc" ) &
DATA_PID=$!

if $PY -c "import pytest" 2>/dev/null; then
  step pytest_gpu 150 60 $PY -m pytest -m gpu -p no:cacheprovider -q -rA tests/test_bench.py tests/test_eval.py tests/test_eval_scale.py --junitxml="$OUT/pytest_gpu.xml"
  last=$(grep -E "passed|failed|error|skipped|no tests ran" "$OUT/pytest_gpu.log" | tail -1)
  if ! echo "$last" | grep -q "3 passed" || echo "$last" | grep -Eq "skipped|failed|error"; then
    record pytest_gpu_counts FAIL 0 "expected 3 passed, 0 skipped (a skip means no CUDA): $last"; FAILED=1
  fi
else
  record pytest_gpu "NOT RUN" 0 "pytest missing on the device (see the header: pip install --target gpu_deps pytest)"; FAILED=1
fi

wait "$DATA_PID"; [ "$(cat "$W/make_data.rc" 2>/dev/null)" = 0 ] || { record make_data FAIL 0 "$(tail -1 "$OUT/make_data.log")"; FAILED=1; }

# bench: fp32 (TF32 off) and bf16 at batch 256; batch-1 latency is measured in the same workers
step bench_fp32 150 60 $PY -m s2mlp_cli bench --variant "$S2" --compare "$PEERS" --device cuda --batch-size 256 \
  --warmup 5 --iters 20 --rounds 4 --timeout 240 --json --output "$OUT/bench_fp32.json"
[ -f "$OUT/bench_fp32.json" ] && step bench_fp32_rows 30 5 $PY "$W/check_bench.py" "$OUT/bench_fp32.json"
step bench_bf16 150 45 $PY -m s2mlp_cli bench --variant "$S2" --compare "$PEERS" --device cuda --batch-size 256 \
  --amp bf16 --warmup 5 --iters 20 --rounds 4 --timeout 240 --json --output "$OUT/bench_bf16.json"
[ -f "$OUT/bench_bf16.json" ] && step bench_bf16_rows 30 5 $PY "$W/check_bench.py" "$OUT/bench_bf16.json"

# timing cross-check, profiler traces, side-stream prefetch; then the fused S2 kernels
step timer_profile 150 60 $PY "$W/timer_profile.py"
step fused_s2 120 40 $PY "$W/fused_bench.py"

# eval: PIL/cpu decode (builds the crop cache), the cache read, no-cache, bf16,
# nvJPEG decode fp32/bf16, and a CPU reference on the first 256 images
step eval_cuda_fp32        90 20 $PY "${EV[@]}" --device cuda --output "$OUT/eval_cuda_fp32.json" --save-predictions "$OUT/eval_cuda_fp32.jsonl"
step eval_cuda_fp32_cached 90 20 $PY "${EV[@]}" --device cuda --output "$OUT/eval_cuda_fp32_cached.json" --save-predictions "$OUT/eval_cuda_fp32_cached.jsonl"
step eval_cuda_fp32_nocache 90 20 $PY "${EV[@]}" --device cuda --no-cache --output "$OUT/eval_cuda_fp32_nocache.json" --save-predictions "$OUT/eval_cuda_fp32_nocache.jsonl"
step eval_cuda_bf16        90 20 $PY "${EV[@]}" --device cuda --amp bf16 --output "$OUT/eval_cuda_bf16.json" --save-predictions "$OUT/eval_cuda_bf16.jsonl"
step eval_gpudec_fp32      90 20 $PY "${EV[@]}" --device cuda --decode gpu --output "$OUT/eval_gpudec_fp32.json" --save-predictions "$OUT/eval_gpudec_fp32.jsonl"
step eval_gpudec_bf16      90 20 $PY "${EV[@]}" --device cuda --decode gpu --amp bf16 --output "$OUT/eval_gpudec_bf16.json" --save-predictions "$OUT/eval_gpudec_bf16.jsonl"
step eval_cpu_fp32_ref     90 30 $PY "${EV[@]}" --device cpu --limit 256 --batch-size 64 --no-cache --output "$OUT/eval_cpu_fp32_ref.json" --save-predictions "$OUT/eval_cpu_fp32_ref.jsonl"

# torchrun: (a) s2mlp as it is, 2 processes, NCCL, one GPU -- expected to FAIL (set_device(1) has no GPU 1);
# (b) both ranks forced onto GPU 0 with NCCL -- expected to FAIL (NCCL: Duplicate GPU detected);
# (c) both ranks on GPU 0 over gloo (CUDA tensors all-reduced through the host) -- must equal one process.
TR=(-m torch.distributed.run --standalone --nproc-per-node 2)
step single_limit 90 20 $PY "${EV[@]}" --device cuda --limit 512 --no-cache --output "$OUT/eval_single_limit.json"
FAILED_KEEP=$FAILED
for probe in "torchrun_nccl_as_is:-m s2mlp_cli" "torchrun_nccl_same_gpu:$W/nccl_same_gpu.py"; do
  name=${probe%%:*}; entry=${probe#*:}
  step "$name" 75 30 $PY "${TR[@]}" $entry eval --variant "$S2" --weights "$W/w_small.safetensors" --data "$W/val" \
    --device cuda --limit 512 --no-cache --json --output "$OUT/eval_$name.json"
  rc=$?
  sed -i '$ d' "$OUT/summary.tsv"   # re-record: for these two probes failure is the expected outcome
  if [ $rc -ne 0 ] && [ $rc -ne 99 ]; then record "$name" EXPECTED-FAIL 0 "$(grep -Eo 'processes on this machine but [0-9]+ GPU|invalid device ordinal|Duplicate GPU detected[^\"]*|ncclInvalidUsage|NCCL error[^\"]{0,80}' "$OUT/$name.log" | sort -u | head -3 | tr '\n' ';')"
  elif [ $rc -eq 0 ]; then record "$name" "UNEXPECTED-OK" 0 "2 NCCL ranks on one GPU worked: revise the report"
  else record "$name" SKIPPED 0 budget; fi
done
FAILED=$FAILED_KEEP   # the two probes above are expected to fail; their outcome is recorded, not counted
step torchrun_gloo_cuda 90 30 $PY "${TR[@]}" "$W/gloo_wrap.py" eval --variant "$S2" --weights "$W/w_small.safetensors" \
  --data "$W/val" --device cuda --limit 512 --no-cache --json --output "$OUT/eval_torchrun_gloo.json"
step eval_compare 30 5 $PY "$W/compare_eval.py"

# bench with channels-last + torch.compile (bf16) at batch 256, batch-1 latency in the same workers; every
# row must be ok (GFNet under channels-last was fixed). Each model compiles twice (batch 256, then batch 1).
step bench_bf16_cl_compile 330 150 $PY -m s2mlp_cli bench --variant "$S2" --compare "${COMPILE_PEERS:-vip_s7,gfnet_s}" \
  --device cuda --batch-size 256 --amp bf16 --channels-last --compile --warmup 3 --iters 20 --rounds 4 --timeout 400 \
  --json --output "$OUT/bench_bf16_cl_compile.json"
[ -f "$OUT/bench_bf16_cl_compile.json" ] && step bench_compile_rows 30 5 $PY "$W/check_bench.py" "$OUT/bench_bf16_cl_compile.json"

# ---------------------------------------------------------------------------------------------------------
{
  echo "s2mlp gpu_check: $(($(date +%s) - T0)) s of ${BUDGET_S} s; failed=$FAILED"
  column -t -s $'\t' "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
  for f in bench_fp32 bench_bf16 bench_bf16_cl_compile; do
    [ -f "$OUT/$f.json" ] && { echo "--- $f"; $PY "$W/check_bench.py" "$OUT/$f.json" 2>&1; }
  done
} > "$OUT/SUMMARY.txt" 2>&1
cat "$OUT/SUMMARY.txt"
exit $FAILED
