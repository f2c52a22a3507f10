//! What a Megatron-LM command line says about precision and kernels: the training and
//! gradient-reduction data types, the FP8 recipe, the fused loss and the attention kernel.

use super::super::megatron_args::ArgMap;
use super::super::{Collect, MegatronVersion};
use crate::spec::plan::{AttentionImpl, Fp8Recipe};
use crate::units::Dtype;

/// The reduction precision a command line sets, where it sets one: `--grad-reduce-in-bf16`
/// (Megatron-Core), `--accumulate-allreduce-grads-in-fp32`.
pub(super) fn grad_reduce(a: &ArgMap) -> Option<Dtype> {
    if a.has("--grad-reduce-in-bf16") {
        Some(Dtype::Bf16)
    } else if a.has("--accumulate-allreduce-grads-in-fp32") {
        Some(Dtype::Fp32)
    } else {
        None
    }
}

/// Megatron-Core's fused cross-entropy: Transformer Engine's kernel
/// (`--cross-entropy-fusion-impl te`) is priced; its own `native` one (the default impl) is
/// priced as the unfused loss, and said. The impl alone changes nothing in Megatron.
pub(super) fn loss_fusion(a: &ArgMap, c: &mut Collect) -> bool {
    let imp = a.get("--cross-entropy-fusion-impl");
    if let Some(i) = imp.filter(|i| !["te", "native"].contains(i)) {
        c.refuse(
            "--cross-entropy-fusion-impl",
            format!("`{i}`: Megatron-LM takes native or te"),
            "write --cross-entropy-fusion-impl te",
        );
    }
    if !a.has("--cross-entropy-loss-fusion") {
        if let Some(i) = imp {
            c.warn(format!(
                "--cross-entropy-fusion-impl {i} without --cross-entropy-loss-fusion: Megatron-LM \
                 runs the unfused loss (priced so); add --cross-entropy-loss-fusion to fuse it"
            ));
        }
        return false;
    }
    if imp == Some("te") {
        return true;
    }
    c.warn(
        "--cross-entropy-loss-fusion with the native implementation: not modelled, priced as \
         the unfused loss (an fp32 copy of the logits); --cross-entropy-fusion-impl te is \
         Transformer Engine's kernel, which is priced",
    );
    false
}

/// Megatron-LM's `--fp8-recipe` (default delayed). Without `--fp8-format` Megatron trains in
/// 16 bits and the recipe means nothing: delayed, so the plan stays valid.
pub(super) fn fp8_recipe(a: &ArgMap, c: &mut Collect, dtype: Dtype) -> Fp8Recipe {
    match a.get("--fp8-recipe") {
        Some(r) if dtype != Dtype::Fp8 => {
            c.warn(format!(
                "--fp8-recipe {r} without --fp8-format: Megatron-LM trains in 16 bits and ignores \
                 the recipe (priced so); add --fp8-format hybrid to train in FP8"
            ));
            Fp8Recipe::Delayed
        }
        _ if dtype != Dtype::Fp8 => Fp8Recipe::Delayed,
        None | Some("delayed") => Fp8Recipe::Delayed,
        Some("tensorwise") => Fp8Recipe::Tensorwise,
        Some(r @ ("mxfp8" | "blockwise")) => {
            c.refuse(
                "--fp8-recipe",
                format!(
                    "`{r}`: block-scaled FP8 (a scale per block of 32 or 128 elements, kept \
                     row- and column-wise) is not priced"
                ),
                "price the run with --fp8-recipe tensorwise (per-tensor current scaling), \
                 knowing block scaling adds scale traffic it leaves out",
            );
            Fp8Recipe::Delayed
        }
        Some(r) => {
            c.refuse(
                "--fp8-recipe",
                format!("`{r}`: Megatron-LM takes tensorwise, delayed, mxfp8 or blockwise"),
                "write --fp8-recipe tensorwise (or delayed)",
            );
            Fp8Recipe::Delayed
        }
    }
}

pub(super) fn dtype(a: &ArgMap, c: &mut Collect) -> Dtype {
    // Transformer Engine's recipes Megatron-LM offers (`--fp8-format` choices).
    if let Some(f) = a
        .get("--fp8-format")
        .filter(|f| !["e4m3", "hybrid"].contains(f))
    {
        c.refuse(
            "--fp8-format",
            format!("`{f}`: Megatron-LM takes e4m3 or hybrid"),
            "write --fp8-format hybrid (or e4m3)",
        );
    }
    match (a.has("--bf16"), a.has("--fp16"), a.has("--fp8-format")) {
        (true, true, _) => {
            c.refuse("--fp16", "given with --bf16", "keep one");
            Dtype::Bf16
        }
        (true, _, true) => Dtype::Fp8,
        (_, fp16, true) => {
            // FP8 GEMMs beside fp16 (loss-scaled) or fp32 weights and activations: priced as
            // FP8 training is, with bf16 outside the GEMMs; an export writes --bf16.
            c.warn(format!(
                "--fp8-format with {}: priced as FP8 GEMMs with bf16 outside them (the 2-byte \
                 type's time and memory; {}), and an export writes --bf16",
                if fp16 {
                    "--fp16"
                } else {
                    "neither --bf16 nor --fp16"
                },
                if fp16 {
                    "fp16's loss scaling is not priced"
                } else {
                    "fp32 weights and activations would take twice the memory"
                }
            ));
            Dtype::Fp8
        }
        (true, _, _) => Dtype::Bf16,
        (_, true, _) => Dtype::Fp16,
        _ => {
            c.warn("no --bf16 or --fp16: Megatron-LM trains in fp32, and the plan is priced so");
            Dtype::Fp32
        }
    }
}

pub(super) fn attention(
    a: &ArgMap,
    c: &mut Collect,
    v: MegatronVersion,
    dtype: Dtype,
) -> AttentionImpl {
    // Transformer Engine's fused and flash backends take 16-bit tensors only; in fp32 the
    // auto backend falls back to the unfused one.
    let wide = dtype.bytes() > 2.0;
    // Megatron-Core's local layer spec builds its own `DotProductAttention` (the
    // materialised softmax), whatever the backend flags say.
    match a.get("--transformer-impl") {
        None | Some("transformer_engine") => {}
        Some("local") => {
            if a.has("--use-flash-attn") || a.get("--attention-backend").is_some() {
                c.warn("--transformer-impl local builds Megatron-Core's own DotProductAttention: the attention kernel flags are not read (priced unfused)");
            }
            return AttentionImpl::Unfused;
        }
        Some(other) => c.refuse(
            "--transformer-impl",
            format!("`{other}`"),
            "use transformer_engine or local",
        ),
    }
    match (a.has("--use-flash-attn"), a.get("--attention-backend")) {
        (false, Some("auto") | None) if wide && v == MegatronVersion::Core => {
            c.warn("fp32 training: Megatron-Core's auto attention backend runs the unfused attention (priced unfused)");
            AttentionImpl::Unfused
        }
        (true, None | Some("flash" | "fused" | "auto")) => AttentionImpl::Flash,
        (false, Some("flash" | "fused" | "auto")) => AttentionImpl::Flash,
        (false, Some("unfused" | "local")) => AttentionImpl::Unfused,
        (_, Some(b)) => {
            c.refuse(
                "--attention-backend",
                format!(
                    "`{b}` (with --use-flash-attn: {})",
                    a.has("--use-flash-attn")
                ),
                "use flash, fused, auto, unfused or local, consistently",
            );
            AttentionImpl::Flash
        }
        (false, None) if v == MegatronVersion::V2021 => {
            c.warn("no attention kernel given: Megatron-LM 2021 materialises the softmax (priced unfused)");
            AttentionImpl::Unfused
        }
        (false, None) => {
            c.warn("no attention kernel given: Megatron-Core's auto backend picks flash or fused attention (priced flash)");
            AttentionImpl::Flash
        }
    }
}
