//! Parameter counts, YAML defaults, and the checks that name a field.

use super::*;

fn gpt(layers: u64, h: u64, a: u64, v: u64, s: u64) -> ModelSpec {
    ModelSpec {
        name: "t".into(),
        arch: Arch::Gpt,
        layers,
        hidden: h,
        heads: a,
        kv_heads: a,
        head_size: None,
        qk_norm: false,
        ffn_hidden: 4 * h,
        vocab: v,
        seq_len: s,
        tied_embeddings: true,
        qkv_bias: true,
        proj_bias: true,
        mlp_bias: true,
        attention_sinks: false,
        swiglu_limit: None,
        positions: Positions::Learned,
        dropout: 0.1,
        moe: None,
        mla: None,
        attention_window: None,
        pooler: false,
        rope_theta: None,
        mtp_layers: 0,
    }
}

#[test]
fn gpt_layer_is_12h2_plus_13h() {
    let m = gpt(1, 1024, 16, 1000, 10);
    // 12·1024² + 13·1024 = 12_582_912 + 13_312
    assert_eq!(m.layer_params(0), 12_596_224.0);
}

#[test]
fn gpt3_175b_parameter_count() {
    let m = gpt(96, 12288, 96, 51200, 2048);
    // 96·(12h² + 13h) + V·h + s·h + 2h (final LayerNorm), h = 12288:
    // 173_961_510_912 + 629_145_600 + 25_165_824 + 24_576 = 174_615_846_912
    assert_eq!(m.params(), 174_615_846_912.0);
}

#[test]
fn yaml_defaults_and_every_problem() {
    let m = ModelSpec::from_yaml(
        "g.yaml",
        "name: g\narch: gpt\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 16\n",
    )
    .unwrap();
    assert_eq!(
        (m.kv_heads, m.ffn_hidden, m.tied_embeddings),
        (4, 256, true)
    );
    let e = ModelSpec::from_yaml(
        "b.yaml",
        "name: b\narch: llama\nlayers: 0\nhidden: 64\nheads: 4\nvocab: 100\nseqlen: 16\n",
    )
    .unwrap_err();
    let fields: Vec<_> = e.problems().iter().map(|p| p.field.clone()).collect();
    assert!(fields.contains(&"layers".to_string()), "{fields:?}");
    assert!(fields.contains(&"seq_len".to_string()), "{fields:?}");
    assert!(fields.contains(&"ffn_hidden".to_string()), "{fields:?}");
    assert!(e.to_string().contains("did you mean `seq_len`"), "{e}");
}

#[test]
fn heads_must_divide_hidden() {
    let e = ModelSpec::from_yaml(
        "x.yaml",
        "name: x\narch: gpt\nlayers: 2\nhidden: 100\nheads: 3\nvocab: 10\nseq_len: 8\n",
    )
    .unwrap_err();
    assert_eq!(e.problems()[0].field, "heads");
}

/// Shared experts and dense layers first (DeepSeek-MoE, Qwen2-MoE): read, counted and
/// written back. h 64, 3 layers, the first dense, 4 experts of 32 (top 2), shared 96 with a
/// gate, llama (3hf per MLP, no biases):
/// - dense layer: attention 4·64² = 16,384, MLP 3·64·128 = 24,576, norms 128: 41,088;
/// - MoE layer: 4 experts 4·3·64·32 = 24,576, router 64·4 = 256, shared 3·64·96 = 18,432 +
///   gate 64: 16,384 + 43,328 + 128 = 59,840;
/// - embedding 640, head 64 + 640: 41,088 + 2·59,840 + 1,344 = 162,112;
/// - active: 162,112 − 2 layers · 2 idle experts · 6,144 = 137,536.
#[test]
fn shared_experts_and_dense_layers_first() {
    let yaml = "name: m\narch: llama\nlayers: 3\nhidden: 64\nheads: 4\nffn_hidden: 128\n\
                vocab: 10\nseq_len: 8\n";
    let moe = "moe: {experts: 4, top_k: 2, expert_ffn_hidden: 32, shared_ffn_hidden: 96, \
               shared_gate: true, first_dense: 1}\n";
    let m = ModelSpec::from_yaml("m.yaml", &format!("{yaml}{moe}")).unwrap();
    let e = m.moe.as_ref().unwrap();
    assert_eq!(
        (e.shared_ffn_hidden, e.shared_gate, e.first_dense),
        (96, true, 1)
    );
    assert_eq!(
        (0..3).map(|i| m.is_moe_layer(i)).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert_eq!(m.moe_layers(), 2);
    // The count's closed form agrees with the layers, every pattern up to 12 layers.
    let mut g = m.clone();
    for layers in 1..=12 {
        for every in 1..=layers {
            for first in 0..=layers {
                g.layers = layers;
                let e = g.moe.as_mut().unwrap();
                (e.every, e.first_dense) = (every, first);
                let counted = (0..layers).filter(|&i| g.is_moe_layer(i)).count() as u64;
                assert_eq!(g.moe_layers(), counted, "{layers} {every} {first}");
            }
        }
    }
    assert_eq!(m.params(), 162_112.0);
    assert_eq!(m.active_params(), 137_536.0);
    assert_eq!(ModelSpec::from_yaml("m.yaml", &m.to_yaml(&[])).unwrap(), m);
    // Zero is none, as leaving the keys out.
    let zero = moe.replace(
        "shared_ffn_hidden: 96, shared_gate: true, first_dense: 1",
        "shared_ffn_hidden: 0, first_dense: 0",
    );
    let z = ModelSpec::from_yaml("m.yaml", &format!("{yaml}{zero}")).unwrap();
    assert_eq!(z.moe_layers(), 3);
    assert_eq!(z.moe.as_ref().unwrap().shared_ffn_hidden, 0);
    for (bad, field, needle) in [
        ("shared_experts: 1", "moe.shared_experts", "total width"),
        ("first_dense: 3", "moe.first_dense", "no expert layer"),
        (
            "shared_ffn_hidden: 0, shared_gate: true",
            "moe.shared_gate",
            "has none",
        ),
    ] {
        let text = format!("{yaml}moe: {{experts: 4, top_k: 2, {bad}}}\n");
        let e = ModelSpec::from_yaml("m.yaml", &text).unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
        assert_eq!(e.problems()[0].field, field);
        assert!(e.to_string().contains(needle), "{e}");
    }
}

/// A head size set apart is bounded (heads·head_dim as the hidden size) and even under
/// rotary positions, which rotate channel pairs.
#[test]
fn head_dim_is_bounded_and_even_under_rotary() {
    let yaml = "name: l\narch: llama\nlayers: 2\nhidden: 64\nheads: 4\nffn_hidden: 128\nvocab: 100\nseq_len: 32\n";
    let m = ModelSpec::from_yaml("l.yaml", &format!("{yaml}head_dim: 32\n")).unwrap();
    assert_eq!((m.head_dim(), m.q_hidden()), (32, 128));
    for (heads, d, needle) in [(4, 33, "33 is odd"), (4096, 1024, "beyond any model")] {
        let text =
            format!("{yaml}head_dim: {d}\n").replace("heads: 4\n", &format!("heads: {heads}\n"));
        let e = ModelSpec::from_yaml("l.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{d}: {e}");
    }
}

/// `rope_theta` is read, written back, and refused where it means nothing (learned
/// positions) or is a typo.
#[test]
fn rope_theta_is_read_checked_and_written() {
    let yaml = "name: l\narch: llama\nlayers: 2\nhidden: 64\nheads: 4\nffn_hidden: 128\nvocab: 100\nseq_len: 32\n";
    let m = ModelSpec::from_yaml("l.yaml", &format!("{yaml}rope_theta: 500000\n")).unwrap();
    assert_eq!(m.rope_theta, Some(500_000.0));
    assert!(m.to_yaml(&[]).contains("rope_theta: 500000\n"));
    assert_eq!(
        ModelSpec::from_yaml("l.yaml", yaml).unwrap().rope_theta,
        None
    );
    for bad in ["0", "1", "-5", "1e20", "x"] {
        let e = ModelSpec::from_yaml("l.yaml", &format!("{yaml}rope_theta: {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`rope_theta`: expected a number above 1"),
            "{bad}: {e}"
        );
    }
    let gpt = "name: g\narch: gpt\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 32\nrope_theta: 10000\n";
    let e = ModelSpec::from_yaml("g.yaml", gpt).unwrap_err().to_string();
    assert!(
        e.contains("the model has learned positions, not rotary"),
        "{e}"
    );
    let neox = format!("{gpt}positions: rotary\n");
    assert_eq!(
        ModelSpec::from_yaml("g.yaml", &neox).unwrap().rope_theta,
        Some(1e4)
    );
}

/// `pooler` is BERT's: `pooler: false` drops it (h² + h fewer parameters for bert-large,
/// 1024² + 1024 = 1,049,600), and on another architecture the key is refused by name.
#[test]
fn only_bert_has_a_pooler() {
    let yaml = crate::spec::presets::MODELS
        .iter()
        .find(|(n, _)| *n == "bert-large")
        .map(|(_, y)| *y)
        .unwrap();
    let with = ModelSpec::from_yaml("b.yaml", yaml).unwrap();
    let without = ModelSpec::from_yaml("b.yaml", &format!("{yaml}\npooler: false\n")).unwrap();
    assert!(with.pooler && !without.pooler);
    assert_eq!(with.params() - without.params(), 1_049_600.0);
    let gpt = "name: g\narch: gpt\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 32\npooler: true\n";
    let e = ModelSpec::from_yaml("g.yaml", gpt).unwrap_err().to_string();
    assert!(e.contains("`pooler`: only bert has a pooler"), "{e}");
}

/// The window's layer pattern reads and writes back: `full_attention_every: 2` (gpt-oss:
/// layers 0, 2, … slide, 1, 3, … attend to all) or `sliding_from_layer: i`; both at once,
/// either without a window, a window on bert, or a pattern outside the layers is a problem
/// naming the key.
#[test]
fn window_patterns_read_write_and_check() {
    let base = "name: w\narch: llama\nlayers: 4\nhidden: 64\nheads: 4\nffn_hidden: 128\nvocab: 100\nseq_len: 512\n";
    let read = |extra: &str| ModelSpec::from_yaml("w.yaml", &format!("{base}{extra}"));
    let m = read("sliding_window: 128\nfull_attention_every: 2\n").unwrap();
    let w = m.attention_window.unwrap();
    assert_eq!(w.layers, WindowLayers::FullEvery(2));
    assert_eq!(
        (0..4).map(|i| w.slides(i)).collect::<Vec<_>>(),
        [true, false, true, false]
    );
    assert_eq!(w.sliding_layers(4), 2);
    assert_eq!(ModelSpec::from_yaml("w.yaml", &m.to_yaml(&[])).unwrap(), m);
    let m = read("sliding_window: 128\nsliding_from_layer: 3\n").unwrap();
    let w = m.attention_window.unwrap();
    assert_eq!((w.layers, w.sliding_layers(4)), (WindowLayers::From(3), 1));
    assert_eq!(ModelSpec::from_yaml("w.yaml", &m.to_yaml(&[])).unwrap(), m);
    assert_eq!(m.window_at(512), Some(w));
    assert_eq!(m.window_at(128), None);
    let field = |extra: &str| -> Vec<String> {
        read(extra)
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| p.field.clone())
            .collect()
    };
    assert_eq!(
        field("sliding_window: 128\nfull_attention_every: 2\nsliding_from_layer: 1\n"),
        ["sliding_from_layer"]
    );
    assert_eq!(field("full_attention_every: 2\n"), ["full_attention_every"]);
    assert_eq!(
        field("sliding_window: 128\nfull_attention_every: 1\n"),
        ["full_attention_every"]
    );
    assert_eq!(
        field("sliding_window: 128\nsliding_from_layer: 4\n"),
        ["sliding_from_layer"]
    );
    let bert = "name: b\narch: bert\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 512\nsliding_window: 64\n";
    let e = ModelSpec::from_yaml("b.yaml", bert).unwrap_err();
    assert_eq!(e.problems()[0].field, "sliding_window");
}

/// MLA reads and writes back, with or without a query latent; it refuses what it replaces
/// or planner does not price beside it (grouped heads, a head size, a window), naming the
/// field. A plan under it is priced in Megatron-LM's fused kernel without context
/// parallelism.
#[test]
fn latent_attention_reads_back_and_refuses_what_it_replaces() {
    let yaml = "name: m\narch: llama\nlayers: 2\nhidden: 256\nheads: 4\nffn_hidden: 512\n\
                vocab: 100\nseq_len: 64\n";
    let mla =
        "mla: {q_lora_rank: 64, kv_lora_rank: 32, qk_nope_dim: 32, qk_rope_dim: 16, v_dim: 24}\n";
    let m = ModelSpec::from_yaml("m.yaml", &format!("{yaml}{mla}")).unwrap();
    assert_eq!(
        (m.head_dim(), m.v_head_dim(), m.attn_out_hidden()),
        (48, 24, 96)
    );
    // 256·64 + 64 + 64·4·48 + 256·(32 + 16) + 32 + 32·4·(32 + 24) + 4·24·256.
    assert_eq!(
        m.attention_params(),
        16_384.0 + 64.0 + 12_288.0 + 12_288.0 + 32.0 + 7_168.0 + 24_576.0
    );
    assert_eq!(ModelSpec::from_yaml("m.yaml", &m.to_yaml(&[])).unwrap(), m);
    let no_q = mla.replace("q_lora_rank: 64, ", "");
    let n = ModelSpec::from_yaml("m.yaml", &format!("{yaml}{no_q}")).unwrap();
    assert_eq!(n.mla.unwrap().q_lora_rank, None);
    assert_eq!(ModelSpec::from_yaml("m.yaml", &n.to_yaml(&[])).unwrap(), n);
    for (extra, field) in [
        ("kv_heads: 2\n", "kv_heads"),
        ("head_dim: 64\n", "head_dim"),
        ("sliding_window: 16\n", "sliding_window"),
    ] {
        let e = ModelSpec::from_yaml("m.yaml", &format!("{yaml}{mla}{extra}")).unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
        assert_eq!(e.problems()[0].field, field, "{e}");
    }
    // Another arch, or learned positions, is blamed on its own field alone; heads wider than
    // the fused kernels take on MLA's.
    let wide = mla.replace("qk_nope_dim: 32", "qk_nope_dim: 256");
    for (text, field) in [
        (
            format!("{}{mla}", yaml.replace("arch: llama", "arch: gpt")),
            "arch",
        ),
        (format!("{yaml}positions: learned\n{mla}"), "positions"),
        (format!("{yaml}{wide}"), "mla.qk_nope_dim"),
    ] {
        let e = ModelSpec::from_yaml("m.yaml", &text).unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
        assert_eq!(e.problems()[0].field, field, "{e}");
    }
    let odd = mla.replace("qk_rope_dim: 16", "qk_rope_dim: 15");
    let e = ModelSpec::from_yaml("m.yaml", &format!("{yaml}{odd}")).unwrap_err();
    assert_eq!(e.problems()[0].field, "mla.qk_rope_dim");
    let c = crate::spec::load_cluster("h100x8").unwrap();
    let mut p = crate::spec::Plan::new(8, 1, 1, 1, 8, 64);
    assert!(p.check(&m, &c).is_empty(), "{:?}", p.check(&m, &c));
    p.framework = crate::spec::Framework::Torchtitan;
    (p.cp, p.dp) = (2, 4);
    let fields: Vec<&str> = p.check(&m, &c).iter().map(|i| i.field()).collect();
    assert!(
        fields.contains(&"framework") && fields.contains(&"cp"),
        "{fields:?}"
    );
}
