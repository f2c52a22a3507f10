#!/usr/bin/env bash
# Verify planner's predictions on this machine's GPU with the release binary: single-GPU plans
# of a ~1B-parameter GPT (GPT-3 XL, 1.3B parameters: 24 layers, hidden 2048, 16 heads, seq
# 2048; Brown et al. 2020, Table 2.1) across micro-batch sizes and recompute modes, each run
# by `planner verify --backend cuda` (cuBLAS, CUDA events); writes the predicted-vs-measured
# table next to the profile.
#
#   calibrate/verify-gpu.sh [PROFILE_FOLDER]
#
# PROFILE_FOLDER: a profile of this machine made by gpu-check.sh (default: run gpu-check.sh
# first, into $OUT or calibrate/, named as it names it).
# Environment (all optional):
#   PLANNER, CLUSTER, NAME, OUT, BUDGET_S   as for gpu-check.sh
#   MBS        micro-batch sizes (default "1 2 4 8")
#   RECOMPUTE  recompute modes (default "none selective full")
#   MICRO      micro-batches per step (default 4)
#   ATTENTION  unfused (default: batched cuBLAS GEMMs and a softmax, run as priced) or flash
#              (run as its 128-row block GEMMs: no FlashAttention kernel through cuBLAS)
#   STEPS, WARMUP   timed and untimed steps per plan (default 5 and 2)
# Writes into the profile folder: verify-gpt-1.3b.md (the table), verify-gpt-1.3b.jsonl (one
# `planner verify --format json` object per plan) and verify-gpt-1.3b.log (stderr).
set -euo pipefail

say() { echo "verify-gpu: $*" >&2; }
die() { say "$*"; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

# shellcheck source=calibrate/cuda-env.sh
source "$here/cuda-env.sh"
planner_binary "$root"
export PLANNER=$planner

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
first=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1) || die "nvidia-smi cannot list GPUs"
[[ -n "$first" ]] || die "nvidia-smi lists no GPU"
short=gpu
cluster=""
case "$first" in
  *H200*) short=h200; cluster=h200x8 ;;
  *H100*) short=h100; cluster=h100x8 ;;
  *A100*) short=a100; cluster=a100x8 ;;
esac
cluster=${CLUSTER:-$cluster}
[[ -n "$cluster" ]] || die "no cluster preset for '$first': set CLUSTER to one of 'planner clusters'"

# --- the profile ---------------------------------------------------------------------------
profile=${1:-}
if [[ -z "$profile" ]]; then
  name=${NAME:-$short-$(date -u +%Y-%m-%d)}
  out_root=${OUT:-$root/calibrate}
  MODELS=${MODELS:-gpt-1.7b} NAME=$name CLUSTER=$cluster "$here/gpu-check.sh" "$out_root" \
    || die "gpu-check.sh failed"
  profile=$out_root/$name
fi
[[ -f "$profile/profile.json" ]] || die "no profile at $profile/profile.json"

planner_cuda_env 1

# --- the model -----------------------------------------------------------------------------
model=$profile/gpt-1.3b.yaml
cat > "$model" <<'YAML'
# GPT-3 XL (Brown et al. 2020, Table 2.1): 1.3B parameters.
name: gpt-1.3b
arch: gpt
layers: 24
hidden: 2048
heads: 16
vocab: 50257
seq_len: 2048
YAML

# --- verify --------------------------------------------------------------------------------
jsonl=$profile/verify-gpt-1.3b.jsonl
log=$profile/verify-gpt-1.3b.log
: > "$jsonl"
: > "$log"
micro=${MICRO:-4}
for mbs in ${MBS:-1 2 4 8}; do
  for rc in ${RECOMPUTE:-none selective full}; do
    say "mbs $mbs, recompute $rc"
    if out=$(timeout 900 "$planner" verify --model "$model" --cluster "$cluster" --gpus 1 \
        --micro-batch "$mbs" --global-batch $((mbs * micro)) --recompute "$rc" \
        --attention "${ATTENTION:-unfused}" --backend cuda --calibration "$profile" \
        --steps "${STEPS:-5}" --warmup "${WARMUP:-2}" --format json 2>>"$log"); then
      printf '%s\n' "$out" | tr -d '\n' >> "$jsonl"
      echo >> "$jsonl"
    else
      echo "{\"failed\": {\"mbs\": $mbs, \"recompute\": \"$rc\", \"exit\": $?}}" >> "$jsonl"
      say "  failed (see $log)"
    fi
  done
done

# --- the table -----------------------------------------------------------------------------
table=$profile/verify-gpt-1.3b.md
command -v python3 >/dev/null || die "python3 not found: the results are in $jsonl"
python3 - "$jsonl" "$first" > "$table" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"# planner verify: GPT-3 XL (1.3B) on one {sys.argv[2]}\n")
print("| mbs | recompute | predicted step | measured step | error | GEMM pred / meas | memory-bound pred / meas | peak GiB pred / meas | mem error |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "failed" in r:
        f = r["failed"]
        print(f"| {f['mbs']} | {f['recompute']} | - | failed (exit {f['exit']}) | - | - | - | - | - |")
        continue
    p, m, e = r["predicted"], r["measured"], r["error"]
    pc, mc = p["classes"], m["classes"]
    pct = lambda x: "-" if x is None else f"{100 * x:+.1f}%"
    print(f"| {r['plan']['mbs']} | {r['plan']['recompute']} | {p['step_time_s']:.3f} s | "
          f"{m['step_time_s']:.3f} s | {pct(e['step_time'])} | "
          f"{pc['gemm_s']:.3f} / {mc['gemm_s']:.3f} s | "
          f"{pc['memory_bound_s']:.3f} / {mc['memory_bound_s']:.3f} s | "
          f"{p['peak_memory_gib']:.1f} / {m['peak_memory_gib']:.1f} | {pct(e['peak_memory'])} |")
PY
cat "$table"
say "done: $table"
