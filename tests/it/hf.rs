//! Issue 9: Hugging Face configs of every listed family import with the published parameter
//! counts (fixtures and their sources: tests/data/hf/README.md), and `import-hf` writes YAML
//! that `planner` reads back to the same model.

use crate::cli::{planner, stderr, stdout};
use planner::spec::{Arch, ModelSpec, Positions, load_model, load_model_noted};

fn fixture(name: &str) -> String {
    format!("{}/tests/data/hf/{name}.json", env!("CARGO_MANIFEST_DIR"))
}

fn model(name: &str) -> ModelSpec {
    load_model(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn llama_family_parameter_counts() {
    // Llama-2-7B: per layer 2h² (Q, O) + 2h·h_kv (K, V; h_kv = h) + 3h·f + 2h (RMSNorms)
    //   = 33_554_432 + 33_554_432 + 135_266_304 + 8_192 = 202_383_360; ×32 = 6_476_267_520;
    //   + untied embedding and head 2·32000·4096 = 262_144_000 + final norm 4096
    //   = 6_738_415_616 (published 6.74 B).
    assert_eq!(model("llama-2-7b").params(), 6_738_415_616.0);
    // Llama-3-8B: per layer 2h² + 2h·1024 + 3h·14336 + 2h = 218_112_000; ×32 + 2·128256·4096
    //   + 4096 = 8_030_261_248 (published 8.03 B).
    assert_eq!(model("llama-3-8b").params(), 8_030_261_248.0);
    // Mistral-7B: the Llama-3-8B layer (218_112_000) ×32 + 2·32000·4096 + 4096
    //   = 7_241_732_096 (published 7.24 B).
    assert_eq!(model("mistral-7b").params(), 7_241_732_096.0);
}

#[test]
fn mixtral_counts_experts_and_router() {
    let m = model("mixtral-8x7b");
    // Per layer: attention 2h² + 2h·1024 = 41_943_040; 8 experts × 3h·14336 = 1_409_286_144;
    // router h·8 = 32_768; norms 8192: 1_451_270_144; ×32 + 262_144_000 + 4096
    //   = 46_702_792_704 (published 46.7 B).
    assert_eq!(m.params(), 46_702_792_704.0);
    // Active: 6 idle experts × 176_160_768 × 32 layers fewer = 12_879_925_248 (published 12.9 B).
    assert_eq!(m.active_params(), 12_879_925_248.0);
    let moe = m.moe.unwrap();
    assert_eq!((moe.experts, moe.top_k, moe.every), (8, 2, 1));
}

/// Qwen3 sets its head size apart from hidden/heads and norms every query and key head
/// (`q_norm`, `k_norm`, 128 weights each). Qwen3-8B (d = 128 = 4096/32): per layer QKV
/// 4096·(4096 + 2·1024) = 25,165,824, output 16,777,216, QK-norm 256, SwiGLU 3·4096·12288 =
/// 150,994,944, norms 8,192: 192,946,432; ×36 = 6,946,071,552 (the model card's 6.95 B
/// non-embedding); + untied 2·151936·4096 + 4096 = 8,190,735,360 (8.2 B). Qwen3-30B-A3B: 32
/// heads of 128 on hidden 2048 (q = 4096): QKV 2048·(4096 + 1024) = 10,485,760, output
/// 4096·2048 = 8,388,608, QK-norm 256, 128 experts 3·2048·768 = 603,979,776, router 262,144,
/// norms 4,096: 623,120,640; ×48 + 2·151936·2048 + 2048 = 30,532,122,624 (30.5 B); 8 of 128
/// experts active: 3,353,032,704 (3.3 B).
#[test]
fn qwen3_counts_its_head_size_and_qk_norm() {
    let dense = model("qwen3-8b");
    assert_eq!(
        (dense.head_dim(), dense.q_hidden(), dense.qk_norm),
        (128, 4096, true)
    );
    assert_eq!(
        dense.head_size, None,
        "128 is hidden/heads: nothing set apart"
    );
    assert_eq!(dense.params(), 8_190_735_360.0);
    let moe = model("qwen3-30b-a3b");
    assert_eq!(
        (moe.head_size, moe.q_hidden(), moe.kv_hidden()),
        (Some(128), 4096, 512)
    );
    assert_eq!(moe.layer_params(0), 623_120_640.0);
    assert_eq!(moe.params(), 30_532_122_624.0);
    assert_eq!(moe.active_params(), 3_353_032_704.0);
    let m = moe.moe.unwrap();
    assert_eq!(
        (m.experts, m.top_k, m.every, m.expert_ffn_hidden),
        (128, 8, 1, 768)
    );
    assert_eq!(moe.rope_theta, Some(1e6));
}

/// Qwen1.5-MoE-A2.7B (`Qwen2MoeConfig`): Qwen2's attention, 4·2048² + Q, K, V biases 3·2048
/// = 16,783,360; 60 experts of 1408, 60·3·2048·1408 = 519,045,120, router 2048·60 = 122,880;
/// the shared expert 3·2048·5632 = 34,603,008 and its gate 2048; norms 4,096: 570,560,512 a
/// layer. 24 layers + untied 2·151936·2048 + 2048 = 14,315,784,192 (the card's 14.3 B); four
/// of 60 experts active: 14,315,784,192 − 24·56·8,650,752 = 2,689,173,504 (its "A2.7B").
#[test]
fn qwen2_moe_counts_its_shared_expert_and_gate() {
    let m = model("qwen1.5-moe-a2.7b");
    assert_eq!(m.layer_params(0), 570_560_512.0);
    assert_eq!(m.params(), 14_315_784_192.0);
    assert_eq!(m.active_params(), 2_689_173_504.0);
    let e = m.moe.as_ref().unwrap();
    assert_eq!(
        (
            e.experts,
            e.top_k,
            e.expert_ffn_hidden,
            e.shared_ffn_hidden,
            e.shared_gate
        ),
        (60, 4, 1408, 5632, true)
    );
    assert!(m.qkv_bias && !m.proj_bias && m.attention_window.is_none());
}

/// DeepSeek-V3 (`DeepseekV3Config`): MLA 187,107,328 a layer with its two latent norms
/// (q down 7168·1536, norm 1536, q up 1536·128·192, kv down 7168·576, norm 512, kv up
/// 512·128·256, output 128·128·7168); 3 dense layers of 3·7168·18432 = 396,361,728; 58 MoE
/// layers of 256 + 1 shared experts of 3·7168·2048 = 44,040,192 and a router 7168·256;
/// norms 2·7168; untied 2·129280·7168 + 7168. Total 671,026,404,352: the README's 671 B
/// (a per-module count of the checkpoint adds the routers' 58·256 correction biases,
/// buffers no optimizer trains: 671,026,419,200). Active, 8 + 1 experts: 671,026,404,352 − 58·248·44,040,192 = 37,552,282,624
/// (README_WEIGHTS: 36.7 B, counted otherwise). DeepSeek-V2-Lite: no query latent (q
/// 2048·16·192), 26 MoE layers after one dense, 64 experts of 1408 (6 routed), two shared:
/// 15,706,484,224, the card's 15.7 B.
#[test]
fn deepseek_counts_latent_attention_and_shared_experts() {
    let v3 = model("deepseek-v3");
    assert_eq!(v3.attention_params(), 187_107_328.0);
    let e = v3.moe.as_ref().unwrap();
    assert_eq!(
        (
            e.experts,
            e.top_k,
            e.expert_ffn_hidden,
            e.shared_ffn_hidden,
            e.first_dense
        ),
        (256, 8, 2048, 2048, 3)
    );
    assert_eq!(v3.moe_layers(), 58);
    assert_eq!(v3.params(), 671_026_404_352.0);
    assert_eq!(v3.active_params(), 37_552_282_624.0);
    // One multi-token prediction depth (`num_nextn_predict_layers`), counted apart.
    assert_eq!(v3.mtp_layers, 1);
    let lite = model("deepseek-v2-lite");
    assert_eq!(lite.mla.unwrap().q_lora_rank, None);
    assert_eq!(lite.params(), 15_706_484_224.0);
    assert_eq!(lite.mtp_layers, 0);
    // As transformers builds them: no shared experts where the config says null or 0, and
    // no experts at all (every layer dense) where `n_routed_experts` is null.
    let text = std::fs::read_to_string(fixture("deepseek-v2-lite")).unwrap();
    let import = |from: &str, to: &str| {
        let edited = text.replace(from, to);
        planner::spec::hf::import("lite.json", &edited, &Default::default())
            .unwrap()
            .model
    };
    for shared in ["null", "0"] {
        let m = import(
            "\"n_shared_experts\": 2",
            &format!("\"n_shared_experts\": {shared}"),
        );
        assert_eq!(m.moe.unwrap().shared_ffn_hidden, 0, "{shared}");
    }
    let dense = import("\"n_routed_experts\": 64", "\"n_routed_experts\": null");
    assert!(dense.moe.is_none() && dense.mla.is_some());
}

/// gpt-oss (transformers `GptOssConfig`, the Hub configs of openai/gpt-oss-20b and -120b):
/// 64 heads of 64 on hidden 2880 (q = 4096), 8 KV heads, biases on Q, K, V and the output
/// projection: QKV 2880·(4096 + 1024) + 5120, output 4096·2880 + 2880, a sink per head 64:
/// 26,550,144; norms 5,760; router 2880·E + E; experts with biases E·(2880·5760 + 5760 +
/// 2880·2880 + 2880) = E·24,891,840. 20b (24 layers, E = 32): 823,186,976 a layer; + untied
/// 2·201088·2880 + 2880 = 20,914,757,184, the model card's 20.91 B. 120b (36, E = 128):
/// 3,213,080,192 a layer, 116,829,156,672 (116.83 B). Four experts active: 4,187,440,704 and
/// 5,711,982,912, which are the card's 3.61 B and 5.13 B with the input embedding (579 M,
/// which the card leaves out). Every other layer slides over 128 keys, from layer 0.
#[test]
fn gpt_oss_counts_biases_sinks_and_its_window() {
    use planner::spec::WindowLayers;
    let small = model("gpt-oss-20b");
    assert_eq!(small.attention_params(), 26_550_144.0);
    assert_eq!(small.layer_params(0), 823_186_976.0);
    assert_eq!(small.params(), 20_914_757_184.0);
    assert_eq!(small.active_params(), 4_187_440_704.0);
    let embedding = 201_088.0 * 2880.0;
    assert_eq!(small.active_params() - embedding, 3_608_307_264.0);
    let big = model("gpt-oss-120b");
    assert_eq!(big.layer_params(0), 3_213_080_192.0);
    assert_eq!(big.params(), 116_829_156_672.0);
    assert_eq!(big.active_params() - embedding, 5_132_849_472.0);
    let w = big.attention_window.unwrap();
    assert_eq!((w.size, w.layers), (128, WindowLayers::FullEvery(2)));
    assert!(big.slides(0) && !big.slides(1));
    assert_eq!(
        (big.head_size, big.swiglu_limit, big.rope_theta),
        (Some(64), Some(7.0), Some(150_000.0))
    );
    let m = big.moe.unwrap();
    assert_eq!((m.experts, m.top_k, m.router_bias), (128, 4, true));
}

/// The rotary base is the config's, else the class default (transformers' `LlamaConfig`
/// 10,000: Llama-2-7b's config predates the key); learned positions have none.
#[test]
fn rope_theta_is_the_configs_or_the_class_default() {
    for (name, theta) in [
        ("llama-3-8b", Some(500_000.0)),
        ("llama-2-7b", Some(10_000.0)),
        ("mixtral-8x7b", Some(1_000_000.0)),
        ("qwen2-7b", Some(1_000_000.0)),
        ("gpt-neox-20b", Some(10_000.0)),
        ("gpt2", None),
        ("bert-base-uncased", None),
    ] {
        assert_eq!(model(name).rope_theta, theta, "{name}");
    }
}

#[test]
fn qwen2_has_qkv_biases() {
    let m = model("qwen2-7b");
    assert!(m.qkv_bias && m.arch == Arch::Llama);
    // Per layer: 2h² + 2h·512 = 29_360_128; QKV biases h + 2·512 = 4_608; MLP 3h·18944 =
    // 203_685_888; norms 7_168: 233_057_792; ×28 = 6_525_618_176; + untied 2·152064·3584 =
    // 1_089_994_752 + 3584 = 7_615_616_512 (the model card's 7.61 B, to the parameter).
    assert_eq!(m.params(), 7_615_616_512.0);
}

#[test]
fn gpt2_counts_learned_positions_and_tied_head() {
    let m = model("gpt2");
    assert_eq!(
        (m.arch, m.positions, m.tied_embeddings),
        (Arch::Gpt, Positions::Learned, true)
    );
    // 12·(12h² + 13h) = 12·7_087_872 = 85_054_464; tokens 50257·768 = 38_597_376; positions
    // 1024·768 = 786_432; final LayerNorm 1_536: 124_439_808 (published 124 M).
    assert_eq!(m.params(), 124_439_808.0);
    // XL: 48·(12·1600² + 13·1600) = 1_475_558_400 + 50257·1600 + 1024·1600 + 3200
    //   = 1_557_611_200 (1.56 B).
    assert_eq!(model("gpt2-xl").params(), 1_557_611_200.0);
}

#[test]
fn gpt_neox_is_gpt_with_rotary_and_untied_head() {
    let neox = load_model_noted(&fixture("gpt-neox-20b")).unwrap();
    let m = &neox.model;
    assert_eq!(
        (m.arch, m.positions, m.tied_embeddings),
        (Arch::Gpt, Positions::Rotary, false)
    );
    assert_eq!(m.dropout, 0.0);
    // 44·(12h² + 13h) with h = 6144: 44·453_064_704 = 19_934_846_976; untied 2·50432·6144 =
    // 619_708_416; final LayerNorm 12_288; no position table: 20_554_567_680 (20.6 B).
    assert_eq!(m.params(), 20_554_567_680.0);
    assert!(
        neox.notes.iter().any(|n| n.contains("parallel attention")),
        "{:?}",
        neox.notes
    );
    // Pythia-160M: 12·7_087_872 + 2·50304·768 + 1_536 = 162_322_944 (Biderman et al. Table 1).
    assert_eq!(model("pythia-160m").params(), 162_322_944.0);
}

#[test]
fn bert_base_counts_mlm_head_and_pooler_where_the_class_has_one() {
    let m = model("bert-base-uncased");
    // The config names BertForMaskedLM, which builds no pooler (`add_pooling_layer=False`):
    // layers 12·(12h² + 13h) = 85_054_464; embeddings 30522·768 + 512·768 + 2·768 (token
    // types) + 2·768 (LayerNorm) = 23_837_184; MLM transform h² + h + 2h + 30522 = 622_650:
    // 109_514_298 (it had been counted with the pooler, 590_592 more).
    assert!(!m.pooler);
    assert_eq!(m.params(), 109_514_298.0);
    // BertForPreTraining adds the pooler, h² + h = 590_592: 110_104_890 — the class's
    // 110_106_428 less its 1_538-parameter next-sentence head (Devlin et al.: 110 M).
    let text = std::fs::read_to_string(fixture("bert-base-uncased")).unwrap();
    let pre = text.replace("BertForMaskedLM", "BertForPreTraining");
    assert_ne!(pre, text);
    let dir = std::env::temp_dir().join(format!("planner-bert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, pre).unwrap();
    let m = load_model(path.to_str().unwrap()).unwrap();
    assert!(m.pooler);
    assert_eq!(m.params(), 110_104_890.0);
    // Written as YAML and read back, each keeps its head.
    for pooler in [false, true] {
        let mut b = m.clone();
        b.pooler = pooler;
        let back = ModelSpec::from_yaml("b.yaml", &b.to_yaml(&[])).unwrap();
        assert_eq!(back, b);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rotary_seq_len_defaults_to_max_positions_with_a_note() {
    let i = load_model_noted(&fixture("llama-3-8b")).unwrap();
    assert_eq!(i.model.seq_len, 8192);
    let notes = i.notes.join("\n");
    assert!(
        notes.contains("without --seq-len, that is the length priced"),
        "{notes}"
    );
}

/// Mistral-7B attends over a 4,096-token sliding window in every layer, which the planner
/// prices (the window had capped the sequence, and longer ones were refused): the model keeps
/// its window, its length is max_position_embeddings' 32,768, a model YAML written by
/// `import-hf` keeps the window, and at 32k the window prices a faster step than the same
/// model without it. A window that bites refuses the plans that cannot run it: context
/// parallelism (Transformer Engine's ring asserts), frameworks with no window.
#[test]
fn sliding_window_is_kept_and_priced() {
    let i = load_model_noted(&fixture("mistral-7b")).unwrap();
    let window = i.model.attention_window.expect("a window");
    assert_eq!(
        (i.model.seq_len, window.size, window.sliding_layers(32)),
        (32768, 4096, 32)
    );
    // Qwen2 names a window but does not use it; Mixtral's is null.
    assert_eq!(model("qwen2-7b").attention_window, None);
    assert_eq!(model("mixtral-8x7b").attention_window, None);

    let o = planner(&["import-hf", &fixture("mistral-7b"), "--seq-len", "8192"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let dir = std::env::temp_dir().join(format!("planner-hf-window-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = dir.join("mistral.yaml");
    let o = planner(&[
        "import-hf",
        &fixture("mistral-7b"),
        "--out",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(text.contains("sliding_window: 4096\n"), "{text}");
    let full = dir.join("full.yaml");
    std::fs::write(&full, text.replace("sliding_window: 4096\n", "")).unwrap();
    let price = |model: &std::path::Path, extra: &[&str]| {
        let m = model.to_str().unwrap();
        let mut args = vec![
            "estimate",
            "--model",
            m,
            "--cluster",
            "h100x8",
            "--seq-len",
            "32768",
            "--global-batch",
            "8",
            "--format",
            "json",
        ];
        if !extra.contains(&"--tp") {
            args.extend(["--tp", "8"]);
        }
        args.extend_from_slice(extra);
        planner(&args)
    };
    let step = |o: std::process::Output| -> f64 {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["step_time_s"].as_f64().unwrap()
    };
    let (windowed, whole) = (step(price(&yaml, &[])), step(price(&full, &[])));
    assert!(windowed < 0.85 * whole, "{windowed} vs {whole}");
    for (extra, says) in [
        (
            &["--cp", "2", "--tp", "4"][..],
            "cp=2 with the model's 4096-key sliding window",
        ),
        (
            &["--framework", "torchtitan"][..],
            "torchtitan runs no sliding attention window",
        ),
        (
            &["--attention", "unfused"][..],
            "attention=unfused with the model's 4096-key sliding window",
        ),
    ] {
        let o = price(&yaml, extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    // Every plan refused for that one reason: `suggest` says it with its fix, as bad input.
    let o = planner(&[
        "suggest",
        "--model",
        yaml.to_str().unwrap(),
        "--cluster",
        "h100x8",
        "--seq-len",
        "8192",
        "--framework",
        "torchtitan",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("torchtitan runs no sliding attention window"),
        "{err}"
    );
    // On 64 GPUs other refusals depend on the layout (tp not dividing the heads): the one
    // every layout shares is still the one said.
    let o = planner(&[
        "suggest",
        "--model",
        yaml.to_str().unwrap(),
        "--cluster",
        "h100-x1024",
        "--gpus",
        "64",
        "--seq-len",
        "8192",
        "--dtype",
        "fp32",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("attention=unfused with the model's 4096-key sliding window"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn import_hf_writes_yaml_that_reads_back_equal() {
    let dir = std::env::temp_dir().join(format!("planner-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "qwen2-7b",
        "mistral-7b",
        "gpt-neox-20b",
        "mixtral-8x7b",
        "gpt-oss-20b",
        "bert-base-uncased",
        "gpt2",
        "qwen3-30b-a3b",
        "qwen1.5-moe-a2.7b",
        "deepseek-v3",
        "deepseek-v2-lite",
    ] {
        let out = dir.join(format!("{name}.yaml"));
        let o = planner(&["import-hf", &fixture(name), "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let text = std::fs::read_to_string(&out).unwrap();
        let back = ModelSpec::from_yaml(out.to_str().unwrap(), &text).unwrap();
        assert_eq!(back, model(name), "{name}:\n{text}");
    }
    // To stdout, with a name and a training length.
    let o = planner(&[
        "import-hf",
        &fixture("llama-3-8b"),
        "--name",
        "l3",
        "--seq-len",
        "4096",
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("name: \"l3\"\n") && text.contains("seq_len: 4096\n"),
        "{text}"
    );
}

#[test]
fn hf_config_works_as_model_everywhere() {
    let o = planner(&[
        "estimate",
        "--model",
        &fixture("llama-2-7b"),
        "--cluster",
        "a100x8",
        "--tp",
        "2",
        "--seq-len",
        "2048",
        "--global-batch",
        "64",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["plan"]["tp"], 2);
}

#[test]
fn unsupported_config_is_exit_2_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("planner-hf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("config.json");
    std::fs::write(&p, r#"{"model_type": "llama", "hidden_size": 4096}"#).unwrap();
    let o = planner(&[
        "estimate",
        "--model",
        p.to_str().unwrap(),
        "--cluster",
        "a100x8",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for field in [
        "`num_hidden_layers`",
        "`num_attention_heads`",
        "`intermediate_size`",
        "`vocab_size`",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// gpt-oss keys left out take `GptOssConfig`'s defaults: 8 KV heads (not one per query
/// head), head_dim 64, the same 20.91 B; an explicit null head_dim is hidden/heads = 45,
/// odd under rotary positions: refused.
#[test]
fn gpt_oss_missing_keys_take_the_class_defaults() {
    let small = model("gpt-oss-20b");
    let text = std::fs::read_to_string(fixture("gpt-oss-20b")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let map = cfg.as_object_mut().unwrap();
    map.remove("num_key_value_heads");
    map.remove("head_dim");
    let import = |cfg: &serde_json::Value| {
        planner::spec::hf::import("c.json", &cfg.to_string(), &Default::default())
    };
    assert_eq!(import(&cfg).unwrap().model.params(), small.params());
    cfg["head_dim"] = serde_json::Value::Null;
    let e = import(&cfg).unwrap_err().to_string();
    assert!(e.contains("head_dim"), "{e}");
}
