#!/usr/bin/env bash
# Calibrate this machine's GPUs with the release binary (no Rust toolchain needed here), then
# smoke-check the profile with `planner calibrate show` and `planner estimate`.
#
#   calibrate/gpu-check.sh [OUT_FOLDER]
#
# OUT_FOLDER: where the profile folder goes (default: $OUT if set, else calibrate/).
# Environment (all optional):
#   PLANNER   the planner binary (default: target/release/planner, ./planner, or on PATH)
#   CLUSTER   cluster preset the profile is for (default: from the GPU name: a100x8, h100x8, h200x8)
#   NAME      profile name (default: <gpu>-<date>, e.g. h100-2026-11-28)
#   BUDGET_S  probe time budget in seconds (default: 200, so the whole check takes ~4 minutes)
#   MODELS    models whose GEMM shapes to probe (default: "llama3-8b llama3-70b gpt3-175b")
#   DEVICES   how many local GPUs to probe (default: all)
# CUDA libraries come from the driver (libcuda.so.1) and from the machine's Python packages
# (nvidia-cublas-cu12, nvidia-nccl-cu12 wheels: site-packages/nvidia/*/lib) or a CUDA install.
# cudarc looks for NCCL as `libnccl.so`; the wheels ship `libnccl.so.2`, so this script links
# one to the other in a temporary folder.
set -euo pipefail

say() { echo "gpu-check: $*" >&2; }
die() { say "$*"; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

# --- the binary ---------------------------------------------------------------------------
# shellcheck source=calibrate/cuda-env.sh
source "$here/cuda-env.sh"
planner_binary "$root"
say "binary: $planner ($("$planner" --version))"

# --- the GPUs -----------------------------------------------------------------------------
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader) || die "nvidia-smi cannot list GPUs"
[[ -n "$gpus" ]] || die "nvidia-smi lists no GPU"
count=$(printf '%s\n' "$gpus" | wc -l)
first=$(printf '%s\n' "$gpus" | head -n1)
say "$count GPU(s): $first"
nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader | head -n1 | sed 's/^/gpu-check: driver, memory: /' >&2

short=gpu
cluster=""
case "$first" in
  *H200*) short=h200; cluster=h200x8 ;;
  *H100*) short=h100; cluster=h100x8 ;;
  *A100*) short=a100; cluster=a100x8 ;;
esac
cluster=${CLUSTER:-$cluster}
[[ -n "$cluster" ]] || die "no cluster preset for '$first': set CLUSTER to one of 'planner clusters'"
name=${NAME:-$short-$(date -u +%Y-%m-%d)}
out_root=${1:-${OUT:-$root/calibrate}}
mkdir -p "$out_root" || die "cannot create $out_root"

# --- CUDA libraries -----------------------------------------------------------------------
planner_cuda_env "$count"

# --- calibrate ----------------------------------------------------------------------------
budget=${BUDGET_S:-200}
models=()
for m in ${MODELS:-llama3-8b llama3-70b gpt3-175b}; do models+=(--model "$m"); done
devices=()
[[ -n "${DEVICES:-}" ]] && devices=(--devices "$DEVICES")
out="$out_root/$name"
say "calibrating $cluster into $out (budget ${budget}s)"
timeout $((budget + 180)) "$planner" calibrate --cluster "$cluster" --backend cuda \
  "${models[@]}" "${devices[@]}" --budget-s "$budget" --out "$out" \
  || die "planner calibrate failed (exit $?)"

# --- check ---------------------------------------------------------------------------------
"$planner" calibrate show "$out" > "$out/show.txt" || die "calibrate show failed"
head -n 30 "$out/show.txt"
if command -v python3 >/dev/null; then
  python3 - "$out/profile.json" <<'PY' || true
import json, sys
p = json.load(open(sys.argv[1]))
best = {}
for g in p["gemm"]:
    tf = 2 * g["m"] * g["n"] * g["k"] / g["seconds"] / 1e12
    if tf > best.get(g["dtype"], (0,))[0]:
        best[g["dtype"]] = (tf, "%dx%dx%d" % (g["m"], g["n"], g["k"]))
for d, (tf, shape) in sorted(best.items()):
    print("gpu-check: best %s GEMM %.1f TFLOP/s at %s (published H100 bf16 best: 794.5, A100: 271.2)" % (d, tf, shape))
print("gpu-check: HBM %s GB/s" % p.get("hbm_gbytes_s"))
for f in p["collectives"]:
    print("gpu-check: %s %d ranks %s: %d points, %d segments, max residual %.1f%%" % (
        f["coll"], f["ranks"], f["span"], len(f["points"]), len(f["segments"]), 100 * f["max_residual"]))
PY
fi
"$planner" estimate --model llama3-8b --cluster "$cluster" --tp 2 --global-batch 64 \
  --calibration "$out" > "$out/estimate-llama3-8b.txt" || die "estimate with the new profile failed"
"$planner" estimate --model llama3-8b --cluster "$cluster" --tp 2 --global-batch 64 \
  > "$out/estimate-llama3-8b-preset.txt" || die "estimate with the preset failed"
grep -E "step time|numbers from" "$out/estimate-llama3-8b.txt" "$out/estimate-llama3-8b-preset.txt" >&2 || true
say "done: $out/profile.json"
