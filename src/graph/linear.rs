//! Tensor-parallel linear layers as operators: Megatron's column- and row-parallel linears
//! with their conjugate collectives (Shoeybi et al. 2019 §3) and sequence-parallel variants
//! (Korthikanti et al. 2022 §4.2.2), stand-alone conjugates around other TP regions, and
//! Transformer Engine's FP8 casts around a linear.

use super::{Coll, Group, Kernel, MemClass, Op, Shard};
use crate::spec::{Fp8Recipe, TpOverlap};
use crate::units::Dtype;

/// A TP collective of `bytes` (the full, gathered size), overlapped with the GEMMs of its
/// operator when `overlapped`.
pub(super) fn tp_comm(coll: Coll, bytes: f64, overlapped: bool) -> Kernel {
    Kernel::Comm {
        coll,
        group: Group::Tp,
        bytes,
        overlapped,
    }
}

/// A column-parallel linear layer with Megatron's conjugate `f` folded in (Shoeybi et al. 2019
/// §3): identity forward and all-reduce of the input gradient backward, or with sequence
/// parallelism all-gather forward and reduce-scatter backward (Korthikanti et al. 2022 §4.2.2).
/// With SP the input is saved sharded and all-gathered again in backward for the weight
/// gradient, overlapped with the input-gradient GEMM; the input-gradient collective overlaps
/// the weight-gradient GEMM from `TpOverlap::Backward` on (Megatron-LM
/// `LinearWithGradAccumulationAndAsyncCommunication`), and the forward all-gather overlaps
/// the GEMM with `TpOverlap::Full` (Transformer Engine userbuffers, `--tp-comm-overlap`).
/// `te`: a Transformer Engine module, FP8 under FP8 training and saving its FP8 input
/// (`Op::fp8`); otherwise (the LM head) 16-bit, saving its 16-bit input.
pub(super) fn column_linear(
    name: &'static str,
    sh: &Shard,
    (n, k): (u64, u64),
    params: f64,
    te: bool,
) -> Op {
    let e = sh.dtype.bytes();
    let saved_per_elem = if te { sh.saved_gemm_input_bytes() } else { e };
    let saved = (sh.tokens_sp() * k) as f64 * saved_per_elem;
    let mut op = Op::linear(name, sh.tokens(), n, k, params, saved);
    op.fp8 = te;
    if sh.tp > 1 {
        let full = (sh.tokens() * k) as f64 * e;
        let bwd_overlap = sh.tp_overlap >= TpOverlap::Backward;
        if sh.sp {
            op.fwd.insert(
                0,
                tp_comm(Coll::AllGather, full, sh.tp_overlap == TpOverlap::Full),
            );
            op.bwd.insert(0, tp_comm(Coll::AllGather, full, true));
            op.bwd
                .insert(2, tp_comm(Coll::ReduceScatter, full, bwd_overlap));
        } else {
            op.bwd
                .insert(1, tp_comm(Coll::AllReduce, full, bwd_overlap));
        }
    }
    op
}

/// A row-parallel linear layer with the conjugate `g` folded in: all-reduce forward
/// (reduce-scatter with SP) and identity backward (all-gather with SP); overlapped with the
/// GEMM only under `TpOverlap::Full`.
pub(super) fn row_linear(name: &'static str, sh: &Shard, n: u64, k: u64, params: f64) -> Op {
    let e = sh.dtype.bytes();
    let saved = (sh.tokens() * k) as f64 * sh.saved_gemm_input_bytes();
    let mut op = Op::linear(name, sh.tokens(), n, k, params, saved);
    if sh.tp > 1 {
        let full = (sh.tokens() * n) as f64 * e;
        let ov = sh.tp_overlap == TpOverlap::Full;
        if sh.sp {
            op.fwd.push(tp_comm(Coll::ReduceScatter, full, ov));
            op.bwd.insert(0, tp_comm(Coll::AllGather, full, ov));
        } else {
            op.fwd.push(tp_comm(Coll::AllReduce, full, ov));
        }
    }
    op
}

/// Transformer Engine's FP8 casts around one FP8 linear layer, per micro-batch, for an FP8
/// plan (TE `pytorch/module/linear.py`, `layernorm_linear.py`), in bytes per element of the
/// GEMM operand cast ([`fp8_cast_bytes`]; the transposed copy is priced per device): forward the 16-bit input, backward
/// the output gradient. Counted on the rank's full GEMM operands (with sequence parallelism
/// TE casts the shard before the all-gather and transposes after it: an upper estimate).
/// Weight casts run once per step (TE caches them across micro-batches) and are left out.
pub(super) fn fp8_casts(mut op: Op, sh: &Shard, input: f64, output: f64, norm_fused: bool) -> Op {
    if sh.dtype != Dtype::Fp8 || !op.fp8 {
        return op;
    }
    let before_gemm = |ks: &[Kernel]| {
        ks.iter()
            .position(|k| matches!(k, Kernel::Gemm { .. }))
            .unwrap_or(0)
    };
    // One kernel per pass over the tensor: the amax pass of current scaling is a kernel of
    // its own, launched before the cast; the transposed copy is written by the cast's kernel,
    // or by one of its own after a norm that wrote the FP8 tensor.
    let passes = |c: Fp8Cast, n: f64| {
        let transpose = if c.cast > 0.0 {
            MemClass::Fp8Transpose
        } else {
            MemClass::Fp8TransposeKernel
        };
        [
            (c.amax, MemClass::Elementwise),
            (c.cast, MemClass::Elementwise),
            (c.transpose, transpose),
        ]
        .into_iter()
        .filter(|&(b, _)| b > 0.0)
        .map(move |(b, class)| Kernel::Memory {
            bytes: b * n,
            class,
        })
    };
    let i = before_gemm(&op.fwd);
    let fwd = passes(fp8_cast_bytes(sh.fp8_recipe, norm_fused), input);
    op.fwd.splice(i..i, fwd);
    let i = before_gemm(&op.bwd);
    let bwd = passes(fp8_cast_bytes(sh.fp8_recipe, false), output);
    op.bwd.splice(i..i, bwd);
    op
}

/// Bytes per element of one FP8 operand's preparation ([`fp8_cast_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fp8Cast {
    /// Current scaling's amax pass (its own kernel).
    amax: f64,
    /// The cast: 16-bit read, FP8 written.
    cast: f64,
    /// The transposed FP8 copy Hopper's TN-only FP8 GEMMs need ([`MemClass::Fp8Transpose`]).
    transpose: f64,
}

/// Bytes per element moved to bring one 16-bit GEMM operand into FP8 with its transpose
/// (Hopper's FP8 GEMMs take only the TN layout): the cast reads 2 and writes 1, and 1 more
/// for the transposed copy (`fp8_cast_transpose_fused`). Under delayed scaling the scale is
/// known before the tensor is, and the cast records the amax as it goes; in a
/// `LayerNormLinear` (QKV, fc1: `norm_fused`) the norm writes the FP8 input itself, one byte
/// less than the 16-bit output the norm op is priced with, and only the transpose remains
/// (a kernel reading 1 and writing 1): one byte net, counted as the transpose, and nothing
/// where no transpose is kept (the norm's saved byte is not credited there). Under current
/// scaling (TE `Float8CurrentScalingQuantizer::quantize_impl`) the scale needs this tensor's
/// amax first: `nvte_compute_amax` reads it once more (2 bytes) before the cast, unless a
/// fused norm computed it as it wrote its 16-bit output (TE
/// `csrc/extensions/normalization.cpp`, `quantize_with_amax`), in which case the norm's
/// output stays 16-bit and the full cast follows.
fn fp8_cast_bytes(recipe: Fp8Recipe, norm_fused: bool) -> Fp8Cast {
    let (amax, cast) = match (recipe, norm_fused) {
        (Fp8Recipe::Delayed, true) => (0.0, 0.0),
        (Fp8Recipe::Delayed, false) | (Fp8Recipe::Tensorwise, true) => (0.0, 3.0),
        (Fp8Recipe::Tensorwise, false) => (2.0, 3.0),
    };
    Fp8Cast {
        amax,
        cast,
        transpose: 1.0,
    }
}

/// Stand-alone conjugates `f` (enter) and `g` (exit) around a TP region that is not a single
/// linear layer (the MoE block, the LM head's input): identity/all-reduce and
/// all-reduce/identity, or all-gather/reduce-scatter and reduce-scatter/all-gather with SP.
pub(super) fn tp_conjugates(sh: &Shard, bytes: f64) -> (Option<Op>, Option<Op>) {
    if sh.tp == 1 {
        return (None, None);
    }
    let k = |coll| tp_comm(coll, bytes, false);
    if sh.sp {
        (
            Some(Op::comm(
                "tp_enter",
                Some(k(Coll::AllGather)),
                Some(k(Coll::ReduceScatter)),
            )),
            Some(Op::comm(
                "tp_exit",
                Some(k(Coll::ReduceScatter)),
                Some(k(Coll::AllGather)),
            )),
        )
    } else {
        (
            Some(Op::comm("tp_enter", None, Some(k(Coll::AllReduce)))),
            Some(Op::comm("tp_exit", Some(k(Coll::AllReduce)), None)),
        )
    }
}
