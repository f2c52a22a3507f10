//! The experts Megatron-LM arguments describe (`--num-experts`, top-k, widths, the layers
//! that hold them, shared experts), against the model's.

use super::super::Collect;
use super::super::megatron::moe_layer_pattern;
use super::super::megatron_args::ArgMap;
use super::super::megatron_plan::num;
use super::{mismatch, pattern_list};
use crate::spec::model::ModelSpec;

/// The arguments that describe a model's experts.
pub(in crate::spec::launch) const MOE_ARGS: [&str; 5] = [
    "--num-experts",
    "--moe-router-topk",
    "--moe-ffn-hidden-size",
    "--moe-layer-freq",
    "--moe-shared-expert-intermediate-size",
];

/// The expert arguments (Megatron-LM's defaults where absent), against the model.
pub(in crate::spec::launch) fn check_experts(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
    let experts = num(a, c, "--num-experts");
    let Some(m) = &model.moe else {
        if let Some(e) = experts {
            mismatch(c, "--num-experts", e, model, "experts", "none");
        }
        return;
    };
    if experts != Some(m.experts) {
        let given = experts.map_or("absent".to_string(), |e| e.to_string());
        mismatch(c, "--num-experts", given, model, "moe.experts", m.experts);
    }
    let top_k = num(a, c, "--moe-router-topk").unwrap_or(2);
    if top_k != m.top_k {
        mismatch(c, "--moe-router-topk", top_k, model, "moe.top_k", m.top_k);
    }
    let ffn = num(a, c, "--moe-ffn-hidden-size").unwrap_or(model.ffn_hidden);
    if ffn != m.expert_ffn_hidden {
        mismatch(
            c,
            "--moe-ffn-hidden-size",
            ffn,
            model,
            "moe.expert_ffn_hidden",
            m.expert_ffn_hidden,
        );
    }
    let shared = num(a, c, "--moe-shared-expert-intermediate-size").unwrap_or(0);
    if shared != m.shared_ffn_hidden {
        mismatch(
            c,
            "--moe-shared-expert-intermediate-size",
            shared,
            model,
            "moe.shared_ffn_hidden",
            m.shared_ffn_hidden,
        );
    }
    let freq = a.get("--moe-layer-freq").unwrap_or("1");
    let want: Vec<bool> = (0..model.layers).map(|i| model.is_moe_layer(i)).collect();
    // Megatron-LM's `moe_freq_type`: a whole number n puts experts in layers 0, n, 2n, …;
    // a list expression gives 1 (experts) or 0 per layer, exactly `--num-layers` long.
    let given: Option<Vec<bool>> = match freq.trim().parse::<u64>() {
        Ok(0) => None,
        Ok(n) => Some((0..model.layers).map(|i| i % n == 0).collect()),
        Err(_) => pattern_list(freq)
            .filter(|l| l.len() as u64 == model.layers && l.iter().all(|&x| x <= 1))
            .map(|l| l.iter().map(|&x| x == 1).collect()),
    };
    let count = |l: &[bool]| l.iter().filter(|&&e| e).count();
    let layers = |l: &[bool]| {
        let at: Vec<String> = (0..l.len())
            .filter(|&i| l[i])
            .take(3)
            .map(|i| i.to_string())
            .collect();
        format!("{}, …", at.join(", "))
    };
    match given {
        Some(g) if g == want => {}
        Some(g) if count(&g) == count(&want) => c.warn(format!(
            "--moe-layer-freq {freq} puts experts in layers {}; the model has them in layers {}: the same count, priced as the model lays them out (with pipeline stages, this launch's stages hold other layers than those priced; write --moe-layer-freq {} to launch what is priced)",
            layers(&g),
            layers(&want),
            moe_layer_pattern(model)
        )),
        Some(_) => mismatch(
            c,
            "--moe-layer-freq",
            freq,
            model,
            "expert layers (moe.every, moe.first_dense)",
            moe_layer_pattern(model),
        ),
        None => c.refuse(
            "--moe-layer-freq",
            format!(
                "`{freq}` is not a whole number above 0 or a list of 0 and 1 with one entry per layer ({})",
                model.layers
            ),
            format!("write it as Megatron-LM reads it, e.g. {}", moe_layer_pattern(model)),
        ),
    }
}
