//! The model shape and template Megatron-LM arguments carry, checked against `--model`:
//! sizes, architecture switches (norm, activation, positions, tying, biases), the defaults that
//! differ from the model, and the experts. Each mismatch is refused with the argument named.

use super::Collect;
use super::megatron::{default_ffn, moe_layer_freq};
use super::megatron_args::ArgMap;
use super::megatron_plan::num;
use crate::spec::model::{Arch, ModelSpec, Positions, SlidingWindow, WindowLayers};
use std::fmt::Display;

fn mismatch(
    c: &mut Collect,
    arg: &str,
    given: impl Display,
    model: &ModelSpec,
    field: &str,
    has: impl Display,
) {
    c.refuse(
        arg,
        format!("{given}, but the model `{}` has {field}: {has}", model.name),
        "use the --model these arguments were written for, or correct the argument",
    );
}

/// Sizes the arguments state, against the model.
pub(super) fn check_shape(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
    for (arg, field, want) in [
        ("--num-layers", "layers", model.layers),
        ("--hidden-size", "hidden", model.hidden),
        ("--num-attention-heads", "heads", model.heads),
        ("--ffn-hidden-size", "ffn_hidden", model.ffn_hidden),
        ("--kv-channels", "head_dim", model.head_dim()),
    ] {
        if let Some(v) = num(a, c, arg).filter(|v| *v != want) {
            mismatch(c, arg, v, model, field, want);
        }
    }
    if a.has("--group-query-attention") {
        let groups = num(a, c, "--num-query-groups").unwrap_or(1);
        if groups != model.kv_heads {
            mismatch(
                c,
                "--num-query-groups",
                groups,
                model,
                "kv_heads",
                model.kv_heads,
            );
        }
    }
    if model.positions == Positions::Learned
        && let Some(p) = num(a, c, "--max-position-embeddings").filter(|p| *p != model.seq_len)
    {
        mismatch(
            c,
            "--max-position-embeddings",
            p,
            model,
            "a learned position table of seq_len",
            model.seq_len,
        );
    }
    // arguments.py asserts max_position_embeddings >= seq_length, whatever the positions.
    let quiet = |n: &str| a.get(n).and_then(|v| v.parse::<u64>().ok());
    if let (Some(seq), Some(table)) = (quiet("--seq-length"), quiet("--max-position-embeddings"))
        && seq > table
    {
        c.refuse(
            "--seq-length",
            format!("{seq} exceeds --max-position-embeddings {table}, which Megatron-LM refuses"),
            "raise --max-position-embeddings to at least the sequence length",
        );
    }
    if let Some(v) = num(a, c, "--vocab-size").filter(|v| *v != model.vocab) {
        c.warn(format!("--vocab-size {v}: Megatron-LM pads it (to a multiple of 128·tp); the model prices vocab {}", model.vocab));
    }
    for arg in ["--hidden-dropout", "--attention-dropout"] {
        let Some(v) = a.get(arg) else { continue };
        match v.parse::<f64>() {
            Ok(p) if p == model.dropout => {}
            Ok(p) => mismatch(c, arg, p, model, "dropout", model.dropout),
            Err(_) => c.refuse(arg, format!("`{v}` is not a number"), "give a probability"),
        }
    }
}

/// The layer template the arguments describe (Megatron-LM's defaults where absent), against
/// the model.
pub(super) fn check_template(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
    let rms = a.get("--normalization") == Some("RMSNorm");
    let rope = a.get("--position-embedding-type") == Some("rope")
        || a.has("--use-rotary-position-embeddings");
    let biases = !a.has("--disable-bias-linear");
    let qkv_bias = biases || a.has("--add-qkv-bias");
    let checks = [
        (
            "--swiglu",
            a.has("--swiglu"),
            model.arch.gated_mlp(),
            "a gated (SwiGLU) MLP",
        ),
        ("--normalization", rms, model.arch == Arch::Llama, "RMSNorm"),
        (
            "--position-embedding-type",
            rope,
            model.positions == Positions::Rotary,
            "rotary positions",
        ),
        (
            "--untie-embeddings-and-output-weights",
            a.has("--untie-embeddings-and-output-weights"),
            !model.tied_embeddings,
            "an untied LM head",
        ),
        (
            "--disable-bias-linear",
            !biases,
            !model.arch.biases(),
            "no linear biases",
        ),
        ("--add-qkv-bias", qkv_bias, model.qkv_bias, "Q/K/V biases"),
        (
            "--qk-layernorm",
            a.has("--qk-layernorm"),
            model.qk_norm,
            "a norm on the query and key heads",
        ),
    ];
    for (arg, args_say, model_says, what) in checks {
        if args_say != model_says {
            let (x, y) = if args_say {
                ("say", "does not have")
            } else {
                ("do not say", "has")
            };
            c.refuse(
                arg,
                format!(
                    "the arguments {x} {what}, but the model `{}` {y} it",
                    model.name
                ),
                "use the --model these arguments were written for, or correct the arguments",
            );
        }
    }
    check_defaults(a, model, c);
    check_experts(a, model, c);
    check_window(a, model, c);
}

/// The sliding window the arguments describe (`--window-size L,0`: L keys before each query
/// and its own; `--window-attn-skip-freq` n, or the pattern the export writes), against the
/// model's. Arguments without a window fit a model with one where the window is no shorter
/// than `--seq-length` (the attention is the same).
fn check_window(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
    let size = match a.get("--window-size") {
        None => None,
        Some(v) => {
            let pair: Vec<Option<i64>> = v
                .trim_matches(|ch| ch == '(' || ch == ')')
                .split(',')
                .map(|x| x.trim().parse::<i64>().ok())
                .collect();
            match pair[..] {
                [Some(-1), Some(0)] => None,
                [Some(left), Some(0)] if (0..1 << 24).contains(&left) => Some(left as u64 + 1),
                _ => {
                    c.refuse(
                        "--window-size",
                        format!("`{v}`: planner reads a causal window as `L,0` (L keys before each query)"),
                        "write the window as L,0",
                    );
                    return;
                }
            }
        }
    };
    let layers = match a.get("--window-attn-skip-freq") {
        None => WindowLayers::All,
        Some(v) => match skip_freq(v, model.layers) {
            Some(l) => l,
            None => {
                return c.refuse(
                    "--window-attn-skip-freq",
                    format!("`{v}`: planner reads a whole number n (layers n, 2n, … full) or `([0]*i+[1]*k)` (the first i layers full)"),
                    "write one of those forms",
                );
            }
        },
    };
    let given = size.map(|size| SlidingWindow { size, layers });
    let seq = a.get("--seq-length").and_then(|s| s.parse::<u64>().ok());
    let equivalent =
        given.is_none() && seq.is_some_and(|s| model.attention_window.is_none_or(|w| w.size >= s));
    if given != model.attention_window && !equivalent {
        let show = |w: Option<SlidingWindow>| w.map_or("none".to_string(), |w| w.describe());
        let same_size = given
            .zip(model.attention_window)
            .is_some_and(|(g, m)| g.size == m.size);
        let arg = if same_size {
            "--window-attn-skip-freq"
        } else {
            "--window-size"
        };
        mismatch(
            c,
            arg,
            show(given),
            model,
            "sliding_window",
            show(model.attention_window),
        );
    }
}

/// `--window-attn-skip-freq` as layers: n, or `([0]*i+[1]*k)` over i + k = `layers`.
fn skip_freq(v: &str, layers: u64) -> Option<WindowLayers> {
    if let Ok(n) = v.trim().parse::<u64>() {
        return Some(WindowLayers::FullEvery(n));
    }
    let inner = v.trim().strip_prefix("([0]*")?.strip_suffix(')')?;
    let (full, rest) = inner.split_once("+[1]*")?;
    let (full, sliding) = (full.parse::<u64>().ok()?, rest.parse::<u64>().ok()?);
    (full + sliding == layers && full > 0).then_some(WindowLayers::From(full))
}

/// Sizes the arguments leave to Megatron-LM's defaults, against the model.
fn check_defaults(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
    let d = default_ffn(model.hidden, a.has("--swiglu"));
    if !a.has("--ffn-hidden-size") && d != model.ffn_hidden {
        mismatch(
            c,
            "--ffn-hidden-size",
            format!("absent (Megatron-LM's default is {d})"),
            model,
            "ffn_hidden",
            model.ffn_hidden,
        );
    }
    // Megatron-LM's rotary base, 10000 unless given, against the model's where it says one.
    if let Some(theta) = model
        .rope_theta
        .filter(|_| model.positions == Positions::Rotary)
    {
        let given = match a.get("--rotary-base") {
            Some(v) => v.parse::<f64>().ok(),
            None => Some(10_000.0),
        };
        if given != Some(theta) {
            let said = a.get("--rotary-base").map_or(
                "absent (Megatron-LM's default is 10000)".to_string(),
                str::to_string,
            );
            mismatch(c, "--rotary-base", said, model, "rope_theta", theta);
        }
    }
    // Without it Megatron takes hidden/heads, asserting they divide.
    if !a.has("--kv-channels") && model.head_dim() * model.heads != model.hidden {
        mismatch(
            c,
            "--kv-channels",
            "absent (Megatron-LM then takes hidden/heads)",
            model,
            "head_dim",
            model.head_dim(),
        );
    }
    if !a.has("--group-query-attention") && model.kv_heads != model.heads {
        mismatch(
            c,
            "--group-query-attention",
            "absent",
            model,
            "kv_heads",
            model.kv_heads,
        );
    }
    if !a.has("--hidden-dropout") && model.dropout != 0.1 {
        c.warn(format!(
            "no --hidden-dropout/--attention-dropout: Megatron-LM applies 0.1; the model prices {}",
            model.dropout
        ));
    }
}

/// The arguments that describe a model's experts.
pub(super) const MOE_ARGS: [&str; 4] = [
    "--num-experts",
    "--moe-router-topk",
    "--moe-ffn-hidden-size",
    "--moe-layer-freq",
];

/// The expert arguments (Megatron-LM's defaults where absent), against the model.
pub(super) fn check_experts(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
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
    let freq = a.get("--moe-layer-freq").unwrap_or("1");
    // An integer frequency puts experts in layers 0, freq, …: ⌈layers/freq⌉ of them, the
    // model's ⌊layers/every⌋ only when every divides the layers.
    let exact = freq == moe_layer_freq(m.every, model.layers);
    let same_count = freq == m.every.to_string() && model.layers % m.every == 0;
    if !exact && !same_count {
        mismatch(c, "--moe-layer-freq", freq, model, "moe.every", m.every);
    } else if !exact {
        c.warn(format!("--moe-layer-freq {freq} puts experts in layers 0, {freq}, …; the model has them in layers {}, …: the same count, priced alike except for stage balance", m.every - 1));
    }
}
