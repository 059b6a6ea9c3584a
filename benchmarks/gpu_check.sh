#!/usr/bin/env bash
# s2mlp GPU check: every CUDA path of s2mlp once, most important first, in one call of at most 420 s on
# one GPU; with --dry-run, the same steps on the CPU at toy sizes (CI runs it). From the repository root:
#
#   bash benchmarks/gpu_check.sh OUT_DIR             # on the GPU machine; PY=python3 by default
#   bash benchmarks/gpu_check.sh --dry-run OUT_DIR   # anywhere
#
# Everything it writes stays under OUT_DIR; read OUT_DIR/summary.json first (one entry per step: name,
# status ok / fail / not reached, seconds, figures). The steps and their time boxes: benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-python3}" benchmarks/gpu_check.py "$@"
