//! Multi-token prediction (DeepSeek-V3's `num_nextn_predict_layers`, Megatron-LM
//! `--mtp-num-layers`): on the last stage, through Megatron-LM arguments, refused where it is
//! not priced.

use crate::cli::{planner, stderr};
use planner::spec::launch::megatron_plan::from_megatron;
use planner::spec::launch::{LaunchFormat, MegatronVersion, export};
use planner::spec::{Framework, Infeasible, ModelSpec, Plan, load_cluster, load_model};

fn deepseek_v3() -> ModelSpec {
    load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/deepseek-v3.json"
    ))
    .unwrap()
}

/// DeepSeek-V3 at tp 1, pp 2 (31 + 30 layers), ep 8: the depth adds to the last stage alone
/// its dense weights (11,610,067,968 less the 256 experts' 11,274,289,152: 335,778,816), its
/// experts over ep (1,409,286,144) and the copy of the embedding Megatron keeps there
/// (129,280·7168 = 926,679,040), 2,671,744,000 weights in 16 bits: 5,343,488,000 bytes.
/// The first stage is unchanged; the step is slower.
#[test]
fn the_last_stage_holds_the_prediction_depth_and_an_embedding_copy() {
    let with = deepseek_v3();
    let mut without = with.clone();
    without.mtp_layers = 0;
    let cluster = load_cluster("h100-x1024").unwrap().with_gpus(64).unwrap();
    let plan = Plan {
        ep: 8,
        zero: 1,
        stage_layers: Some(vec![31, 30]),
        ..Plan::new(32, 1, 2, 1, 256, 4096)
    };
    let a = planner::cost::estimate(&without, &cluster, &plan, None);
    let b = planner::cost::estimate(&with, &cluster, &plan, None);
    assert_eq!(b.stages[0].memory.weights, a.stages[0].memory.weights);
    let added = b.stages[1].memory.weights - a.stages[1].memory.weights;
    assert_eq!(added, 5_343_488_000.0);
    assert!(b.step_time_s > a.step_time_s);
}

/// Exports write `--mtp-num-layers`; arguments that describe the model must say it (the
/// default is none), a different count is refused, and layout-only arguments leave it to the
/// model. Frameworks other than Megatron are refused, naming the fix, as is a BERT with
/// depths or an absurd count.
#[test]
fn megatron_arguments_carry_the_depths_and_other_frameworks_are_refused() {
    let m = deepseek_v3();
    let plan = Plan {
        tp: 2,
        sequence_parallel: true,
        ep: 8,
        etp: Some(1),
        stage_layers: Some(vec![31, 30]),
        ..Plan::new(8, 2, 2, 1, 512, 4096)
    };
    let text = export(&m, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap_or_else(|e| panic!("{e}"))
        .text;
    assert!(text.contains("--mtp-num-layers 1 \\\n"), "{text}");
    from_megatron(&text, &m, 32).unwrap_or_else(|e| panic!("{e}"));
    // Megatron's block method never checkpoints the depth, even over every layer: read as
    // per-stage counts (the depth keeps its activations) and written back as block.
    let block = format!(
        "{text} --recompute-granularity full --recompute-method block --recompute-num-layers 31"
    );
    let read = from_megatron(&block, &m, 32).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.plan.recompute_layers, Some(vec![31, 30]));
    let rc = planner::cost::stages::mtp_recompute(&read.plan);
    assert_eq!(rc, planner::spec::Recompute::None);
    let again = export(
        &m,
        &read.plan,
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .text;
    assert!(again.contains("--recompute-method block"), "{again}");
    for (from, to, needle) in [
        ("--mtp-num-layers 1", "", "`--mtp-num-layers`: absent"),
        ("--mtp-num-layers 1", "--mtp-num-layers 2", "mtp_layers: 1"),
    ] {
        let e = from_megatron(&text.replace(from, to), &m, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{to}: {e}");
    }
    let layout = "--tensor-model-parallel-size 2 --sequence-parallel --pipeline-model-parallel-size 2 \
                  --decoder-first-pipeline-num-layers 31 --expert-model-parallel-size 8 \
                  --expert-tensor-parallel-size 1 --micro-batch-size 1 --global-batch-size 512 \
                  --seq-length 4096 --bf16";
    from_megatron(layout, &m, 32).unwrap_or_else(|e| panic!("{e}"));
    // 0 is none, as Megatron-LM reads it.
    let llama = load_model("llama3-8b").unwrap();
    let none = "--tensor-model-parallel-size 1 --micro-batch-size 1 --mtp-num-layers 0";
    from_megatron(none, &llama, 8).unwrap_or_else(|e| panic!("{e}"));
    let e = from_megatron(&none.replace(" 0", " x"), &llama, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x` is not a whole number"), "{e}");
    // Megatron-LM 2021 had no prediction depths: a GPT it launches is refused for them alone.
    let mut gpt = load_model("gpt-1.7b").unwrap();
    let p = Plan {
        attention: planner::spec::AttentionImpl::Unfused,
        grad_accumulation_fusion: false,
        ..Plan::new(8, 1, 1, 1, 64, 2048)
    };
    let v2021 = LaunchFormat::Megatron(MegatronVersion::V2021);
    export(&gpt, &p, v2021).unwrap_or_else(|e| panic!("{e}"));
    gpt.mtp_layers = 1;
    let e = export(&gpt, &p, v2021).unwrap_err().to_string();
    assert!(e.contains("mtp_layers"), "{e}");
    // torchtitan does not train the depths (nor latent attention): both are refused.
    let cluster = load_cluster("h100-x1024").unwrap().with_gpus(32).unwrap();
    let tt = Plan {
        framework: Framework::Torchtitan,
        ..plan
    };
    let why = tt.check(&m, &cluster);
    let mtp = why
        .iter()
        .find(|w| matches!(w, Infeasible::MtpUnpriced { layers: 1, .. }))
        .unwrap_or_else(|| panic!("{why:?}"));
    assert!(mtp.to_string().contains("mtp_layers: 0"), "{mtp}");
    let yaml = "name: b\narch: bert\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 32\n";
    for (extra, needle) in [
        ("mtp_layers: 1\n", "bert has none"),
        ("mtp_layers: 17\n", "mtp_layers"),
    ] {
        let text = if needle == "bert has none" {
            format!("{yaml}{extra}")
        } else {
            format!("{}{extra}", yaml.replace("arch: bert", "arch: gpt"))
        };
        let e = ModelSpec::from_yaml("m.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
    // `import-hf` says the depth is priced and how to price training without it.
    let o = planner(&[
        "import-hf",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hf/deepseek-v3.json"
        ),
    ]);
    assert!(crate::cli::stdout(&o).contains("mtp_layers: 1\n"));
    assert!(stderr(&o).contains("set `mtp_layers: 0`"), "{}", stderr(&o));
}

/// The depth recomputes as the layers do (Megatron-Core builds it from the same config): on
/// NVIDIA's 512-GPU DeepSeek-V3 layout (tp 2 with SP, ep 64, etp 1, stages 7, 8×6, 6) its
/// addition to the last stage keeps 276,299,776 bytes less under `mla_up_proj` than without
/// recomputation — one MLA layer's queries, keys and values at this rank's 64 heads,
/// 4096·64·(192 + 192 + 128)·2, and its latents 2048·(1536 + 512)·2, less the rotary key
/// (gathered) 4096·64·2 — and re-runs its up-projections.
#[test]
fn the_prediction_depth_recomputes_as_the_layers() {
    let with = deepseek_v3();
    let mut without = with.clone();
    without.mtp_layers = 0;
    let cluster = load_cluster("h100-x1024").unwrap().with_gpus(512).unwrap();
    let mut plan = Plan {
        tp: 2,
        ep: 64,
        etp: Some(1),
        sequence_parallel: true,
        zero: 1,
        stage_layers: Some(vec![7, 8, 8, 8, 8, 8, 8, 6]),
        ..Plan::new(32, 2, 8, 1, 4096, 4096)
    };
    let added = |plan: &Plan| {
        let last = |m: &ModelSpec| {
            let e = planner::cost::estimate(m, &cluster, plan, None);
            let s = e.stages.last().unwrap().clone();
            (s.memory.activations, s.bwd_s)
        };
        let (a, b) = (last(&with), last(&without));
        (a.0 - b.0, a.1 - b.1)
    };
    let (kept, bwd) = added(&plan);
    plan.recompute = planner::spec::Recompute::Selective;
    plan.recompute_modules = planner::spec::RecomputeModules::parse("mla_up_proj").unwrap();
    let (kept_up, bwd_up) = added(&plan);
    assert_eq!(kept - kept_up, 276_299_776.0);
    assert!(bwd_up > bwd, "{bwd_up} {bwd}");
}
