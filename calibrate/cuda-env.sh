# Sourced by gpu-check.sh and verify-gpu.sh: finds the CUDA libraries planner loads at run
# time (cudarc) and puts them on LD_LIBRARY_PATH. The driver comes from the system
# (libcuda.so.1); cuBLAS and NCCL from the machine's Python packages (nvidia-cublas-cu12,
# nvidia-nccl-cu12 wheels: site-packages/nvidia/*/lib) or a CUDA install. cudarc looks for NCCL
# as `libnccl.so`; the wheels ship `libnccl.so.2`, so a temporary folder links one to the other.
#
#   planner_binary ROOT            sets `planner`: $PLANNER, ROOT/target/release/planner,
#                                  ROOT/planner or the one on PATH
#   planner_cuda_env GPU_COUNT     (needs `say` and `die`; removes its folder on EXIT)

planner_binary() {
  local root=$1 c
  planner=${PLANNER:-}
  if [[ -z "$planner" ]]; then
    for c in "$root/target/release/planner" "$root/planner" "$(command -v planner || true)"; do
      if [[ -n "$c" && -x "$c" ]]; then planner=$c; break; fi
    done
  fi
  [[ -n "$planner" && -x "$planner" ]] || die "no planner binary: build it with 'cargo build --release' (target/release/planner) or set PLANNER"
}

planner_cuda_env() {
  local count=$1 d nccl cublas joined
  libdirs=()
  if command -v python3 >/dev/null; then
    while IFS= read -r d; do
      [[ -n "$d" && -d "$d" ]] && libdirs+=("$d")
    done < <(python3 - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
for r in sorted(roots):
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
PY
    )
  fi
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [[ -d "$d" ]] && libdirs+=("$d")
  done

  find_lib() {  # first file named $1 in libdirs or the loader cache
    local d
    for d in "${libdirs[@]}"; do
      [[ -e "$d/$1" ]] && { echo "$d/$1"; return 0; }
    done
    ldconfig -p 2>/dev/null | awk -v l="$1" '$1 == l { print $NF; exit }'
  }

  shim=$(mktemp -d "${TMPDIR:-/tmp}/planner-cudalibs.XXXXXX")
  trap 'rm -rf "$shim"' EXIT
  nccl=$(find_lib libnccl.so.2 || true)
  if [[ -n "$nccl" ]]; then
    ln -s "$nccl" "$shim/libnccl.so"
    say "NCCL: $nccl (linked as libnccl.so)"
  elif [[ "$count" -gt 1 ]]; then
    die "libnccl.so.2 not found: pip install nvidia-nccl-cu12 (or the libnccl2 package)"
  fi
  cublas=$(find_lib libcublas.so.12 || true)
  [[ -n "$cublas" ]] || die "libcublas.so.12 not found: pip install nvidia-cublas-cu12 (or install the CUDA toolkit)"
  say "cuBLAS: $cublas"
  joined=$(IFS=:; echo "${libdirs[*]:-}")
  export LD_LIBRARY_PATH="$shim${joined:+:$joined}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
