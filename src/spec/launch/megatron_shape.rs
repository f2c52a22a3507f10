//! The model shape and template Megatron-LM arguments carry, checked against `--model`:
//! sizes, architecture switches (norm, activation, positions, tying, biases), the defaults that
//! differ from the model, and (in `experts.rs`) the experts. Each mismatch is refused with the
//! argument named.

use super::Collect;
use super::megatron::default_ffn;
use super::megatron_args::ArgMap;
use super::megatron_plan::num;
use crate::spec::model::{
    Arch, MAX_LAYERS, Mla, ModelSpec, Positions, SlidingWindow, WindowLayers,
};
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
    ] {
        if let Some(v) = num(a, c, arg).filter(|v| *v != want) {
            mismatch(c, arg, v, model, field, want);
        }
    }
    match model.mla {
        // MLA's heads are sized by its own arguments; `--kv-channels` is not read.
        Some(m) if a.has("--multi-latent-attention") => check_mla(a, model, m, c),
        // Layout-only arguments leave the attention to the model, as they leave its shape.
        Some(_) if !SHAPE_ARGS.iter().chain(&MLA_ARGS).any(|n| a.has(n)) => {}
        Some(_) => c.refuse(
            "--multi-latent-attention",
            format!(
                "absent, but the model `{}` has multi-head latent attention",
                model.name
            ),
            "add --multi-latent-attention with its sizes, or use the --model these arguments were written for",
        ),
        None if MLA_ARGS.iter().any(|n| a.has(n)) => c.refuse(
            MLA_ARGS.iter().find(|n| a.has(n)).copied().unwrap_or_default(),
            format!(
                "the arguments describe multi-head latent attention, which the model `{}` does not have",
                model.name
            ),
            "use the --model these arguments were written for, or remove the latent-attention arguments",
        ),
        None => {
            if let Some(v) = num(a, c, "--kv-channels").filter(|v| *v != model.head_dim()) {
                mismatch(c, "--kv-channels", v, model, "head_dim", model.head_dim());
            }
        }
    }
    // Multi-token prediction depths (Megatron-LM's default: none), which layout-only
    // arguments leave to the model as they leave its shape.
    // 0 is none, as absent.
    let given = a.get("--mtp-num-layers");
    match given.map(|v| v.parse::<u64>()) {
        Some(Ok(n)) if n != model.mtp_layers => mismatch(
            c,
            "--mtp-num-layers",
            n,
            model,
            "mtp_layers",
            model.mtp_layers,
        ),
        Some(Err(_)) => c.refuse(
            "--mtp-num-layers",
            format!("`{}` is not a whole number", given.unwrap_or_default()),
            "write --mtp-num-layers N (0 or absent: none)",
        ),
        None if model.mtp_layers > 0 && SHAPE_ARGS.iter().any(|n| a.has(n)) => mismatch(
            c,
            "--mtp-num-layers",
            "absent (Megatron-LM's default: none)",
            model,
            "mtp_layers",
            model.mtp_layers,
        ),
        _ => {}
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
        c.warn(format!(
            "--vocab-size {v}: the model's vocabulary, {}, is priced instead (padded as \
             Megatron-LM pads it, to a multiple of --make-vocab-size-divisible-by·tp)",
            model.vocab
        ));
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
    let sinks = a.get("--softmax-type") == Some("learnable");
    let checks = [
        (
            "--swiglu",
            a.has("--swiglu") || a.has("--quick-geglu"),
            model.arch.gated_mlp(),
            "a gated MLP",
        ),
        (
            "--quick-geglu",
            a.has("--quick-geglu"),
            model.swiglu_limit.is_some(),
            "gpt-oss's clamped activation",
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
            !model.proj_bias && !model.mlp_bias,
            "no biases on the output projection and the MLP",
        ),
        (
            "--softmax-type",
            sinks,
            model.attention_sinks,
            "learnable attention sinks",
        ),
        ("--add-qkv-bias", qkv_bias, model.qkv_bias, "Q/K/V biases"),
        (
            "--qk-layernorm",
            a.has("--qk-layernorm"),
            model.qk_norm || model.mla.is_some(),
            "a norm on the query and key heads (or on MLA's latents)",
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
    if let Some(m) = model.moe.as_ref().filter(|m| m.router_bias != biases) {
        let say = if biases { "say" } else { "do not say" };
        let has = if m.router_bias {
            "has"
        } else {
            "does not have"
        };
        c.refuse(
            "--disable-bias-linear",
            format!(
                "the arguments {say} biases on every linear, the router's with them, but the model `{}` {has} a router bias",
                model.name
            ),
            "use the --model these arguments were written for, or correct the arguments",
        );
    }
    check_defaults(a, model, c);
    check_experts(a, model, c);
    check_window(a, model, c);
    if let Some(limit) = model.swiglu_limit.filter(|_| a.has("--quick-geglu")) {
        let said = |arg: &str| a.get(arg).and_then(|v| v.parse::<f64>().ok());
        if said("--glu-linear-offset") != Some(1.0) {
            let v = a
                .get("--glu-linear-offset")
                .unwrap_or("absent (Megatron-LM's default is 0)");
            mismatch(
                c,
                "--glu-linear-offset",
                v,
                model,
                "swiglu_limit's offset",
                1,
            );
        }
        if said("--activation-func-clamp-value") != Some(limit) {
            let v = a
                .get("--activation-func-clamp-value")
                .unwrap_or("absent (no clamp)");
            mismatch(
                c,
                "--activation-func-clamp-value",
                v,
                model,
                "swiglu_limit",
                limit,
            );
        }
    }
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
        None => Some(WindowLayers::All),
        Some(v) => match skip_freq(v, model.layers) {
            Ok(l) => l,
            Err(why) => {
                return c.refuse(
                    "--window-attn-skip-freq",
                    format!("`{v}`: {why}"),
                    "write a whole number n ≥ 1 (layers n, 2n, … full) or a list of one 1 (sliding) or 0 (full) per layer, such as `([0]*4+[1]*28)`",
                );
            }
        },
    };
    let given = size
        .zip(layers)
        .map(|(size, layers)| SlidingWindow { size, layers });
    // Megatron-Bridge writes a Hugging Face `sliding_window` W as `(W, 0)`, one key more than
    // the W keys HF's mask keeps (gpt-oss: `GPTOSSProvider` window_size (128, 0) for
    // sliding_window 128): the same model, one key apart, priced at the model's window.
    if let (Some(g), Some(w)) = (given, model.attention_window)
        && g.layers == w.layers
        && g.size == w.size + 1
    {
        c.warn(format!(
            "--window-size {},0 is {} keys (the query and {} before it), one more than the \
             model's sliding_window {} (as Megatron-Bridge writes a Hugging Face window): priced \
             at the model's {} keys; an export writes {},0",
            w.size,
            g.size,
            w.size,
            w.size,
            w.size,
            w.size - 1
        ));
        return;
    }
    let seq = a.get("--seq-length").and_then(|s| s.parse::<u64>().ok());
    let equivalent =
        given.is_none() && seq.is_some_and(|s| model.attention_window.is_none_or(|w| w.size >= s));
    if given != model.attention_window && !equivalent {
        // The sizes agree, or the layer pattern left no layer sliding.
        let same_size = given
            .zip(model.attention_window)
            .is_some_and(|(g, m)| g.size == m.size)
            || (given.is_none() && size.is_some());
        let arg = if same_size {
            "--window-attn-skip-freq"
        } else {
            "--window-size"
        };
        let said = match (given, a.get("--window-size")) {
            (None, Some(_)) if size.is_some() => "a window on no layer".to_string(),
            (None, Some(v)) => format!("no window (`{v}`: full attention)"),
            (None, None) => "no window".to_string(),
            (Some(w), _) => w.describe(),
        };
        mismatch(
            c,
            arg,
            said,
            model,
            "sliding_window",
            model
                .attention_window
                .map_or("none".to_string(), |w| w.describe()),
        );
    }
}

/// `--window-attn-skip-freq` over a model of `layers` layers, as Megatron-LM reads it
/// (`moe_freq_type`): a whole number n (layer numbers 1, 2, … with l % n = 0 attend to all,
/// `is_layer_window_attention`), or a list expression of 1 (sliding) and 0 (full) per
/// layer, indexed by layer number − 1. `Ok(None)`: no layer slides; `Ok(Some(pattern))`: a
/// pattern planner prices ([`WindowLayers::from_slides`]).
fn skip_freq(v: &str, layers: u64) -> Result<Option<WindowLayers>, String> {
    let slides: Vec<bool> = if let Ok(n) = v.trim().parse::<u64>() {
        if n == 0 {
            return Err("0: Megatron-LM takes each layer number modulo it".into());
        }
        (1..=layers).map(|l| l % n != 0).collect()
    } else {
        let list = pattern_list(v).ok_or("not a whole number or a list of 0 and 1")?;
        if list.iter().any(|&x| x > 1) {
            return Err("entries other than 0 and 1".into());
        }
        if (list.len() as u64) < layers {
            return Err(format!("{} entries for {layers} layers", list.len()));
        }
        list.iter().take(layers as usize).map(|&x| x == 1).collect()
    };
    WindowLayers::from_slides(&slides)
        .ok_or_else(|| "a pattern of sliding and full layers planner does not price (every layer, all but every n-th, or the layers from one on)".into())
}

/// A list pattern as Megatron-LM evaluates it (Python on digits, commas, brackets,
/// parentheses, `+` and `*`: `[1,0]*16`, `([0]*4+[1]*28)`, `3*[1]`); `None` where it is not
/// one, or longer than any model.
fn pattern_list(v: &str) -> Option<Vec<u64>> {
    #[derive(Clone)]
    enum Val {
        Int(u64),
        List(Vec<u64>),
    }
    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn peek(&mut self) -> Option<u8> {
            while self.s.get(self.i) == Some(&b' ') {
                self.i += 1;
            }
            self.s.get(self.i).copied()
        }
        fn eat(&mut self, c: u8) -> bool {
            let ok = self.peek() == Some(c);
            self.i += usize::from(ok);
            ok
        }
        fn expr(&mut self) -> Option<Val> {
            let mut v = self.term()?;
            while self.eat(b'+') {
                v = match (v, self.term()?) {
                    (Val::List(mut a), Val::List(b)) => {
                        a.extend(b);
                        Val::List(a)
                    }
                    (Val::Int(a), Val::Int(b)) => Val::Int(a.checked_add(b)?),
                    _ => return None,
                };
            }
            Some(v)
        }
        fn term(&mut self) -> Option<Val> {
            let mut v = self.factor()?;
            while self.eat(b'*') {
                v = match (v, self.factor()?) {
                    (Val::List(l), Val::Int(n)) | (Val::Int(n), Val::List(l)) => {
                        if (l.len() as u64).checked_mul(n)? > MAX_LAYERS {
                            return None;
                        }
                        Val::List(l.repeat(n as usize))
                    }
                    (Val::Int(a), Val::Int(b)) => Val::Int(a.checked_mul(b)?),
                    _ => return None,
                };
            }
            Some(v)
        }
        fn factor(&mut self) -> Option<Val> {
            match self.peek()? {
                b'(' => {
                    self.i += 1;
                    let v = self.expr()?;
                    self.eat(b')').then_some(v)
                }
                b'[' => {
                    self.i += 1;
                    let mut l = Vec::new();
                    if !self.eat(b']') {
                        loop {
                            match self.expr()? {
                                Val::Int(n) => l.push(n),
                                Val::List(_) => return None,
                            }
                            if self.eat(b']') {
                                break;
                            }
                            if !self.eat(b',') {
                                return None;
                            }
                        }
                    }
                    Some(Val::List(l))
                }
                b'0'..=b'9' => {
                    let start = self.i;
                    while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                        self.i += 1;
                    }
                    std::str::from_utf8(&self.s[start..self.i])
                        .ok()?
                        .parse()
                        .ok()
                        .map(Val::Int)
                }
                _ => None,
            }
        }
    }
    let mut p = P {
        s: v.trim().trim_matches(['\'', '"']).as_bytes(),
        i: 0,
    };
    match p.expr()? {
        Val::List(l) if p.peek().is_none() => Some(l),
        _ => None,
    }
}

/// Sizes the arguments leave to Megatron-LM's defaults, against the model.
fn check_defaults(a: &ArgMap, model: &ModelSpec, c: &mut Collect) {
    // `validate_args` takes the SwiGLU width under `--swiglu` only, else 4h.
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
    // Without it Megatron takes hidden/heads, asserting they divide (MLA sizes its heads
    // with its own arguments).
    if !a.has("--kv-channels")
        && model.mla.is_none()
        && model.head_dim() * model.heads != model.hidden
    {
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

/// The arguments that describe a model's shape: with any of them, the template is checked.
pub(super) const SHAPE_ARGS: [&str; 3] = ["--num-layers", "--hidden-size", "--num-attention-heads"];

/// The arguments of multi-head latent attention.
const MLA_ARGS: [&str; 6] = [
    "--multi-latent-attention",
    "--q-lora-rank",
    "--kv-lora-rank",
    "--qk-head-dim",
    "--qk-pos-emb-head-dim",
    "--v-head-dim",
];

/// MLA's sizes (Megatron-LM's defaults where absent: `_add_mla_args` @000c4ac, no query
/// latent, a key/value latent of 32, heads of 128 + 64 and values of 128), against the
/// model's.
fn check_mla(a: &ArgMap, model: &ModelSpec, m: Mla, c: &mut Collect) {
    let q = num(a, c, "--q-lora-rank");
    if q != m.q_lora_rank {
        let show = |r: Option<u64>| r.map_or("none".to_string(), |r| r.to_string());
        mismatch(
            c,
            "--q-lora-rank",
            show(q),
            model,
            "mla.q_lora_rank",
            show(m.q_lora_rank),
        );
    }
    for (arg, field, default, want) in [
        ("--kv-lora-rank", "mla.kv_lora_rank", 32, m.kv_lora_rank),
        ("--qk-head-dim", "mla.qk_nope_dim", 128, m.qk_nope_dim),
        (
            "--qk-pos-emb-head-dim",
            "mla.qk_rope_dim",
            64,
            m.qk_rope_dim,
        ),
        ("--v-head-dim", "mla.v_dim", 128, m.v_dim),
    ] {
        match num(a, c, arg) {
            Some(given) if given != want => mismatch(c, arg, given, model, field, want),
            None if default != want => {
                let said = format!("absent (Megatron-LM's default is {default})");
                mismatch(c, arg, said, model, field, want);
            }
            _ => {}
        }
    }
}

mod experts;
pub(super) use experts::{MOE_ARGS, check_experts};
