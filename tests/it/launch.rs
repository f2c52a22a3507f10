//! Issue 9: launch configurations. Megatron-LM arguments round-trip through plans; the SC'21
//! Table 1 rows export to the authors' own launch settings (tests/data/sc21/table1.json);
//! torchtitan and DeepSpeed exports carry the plan's numbers; plans save and load as JSON.

use crate::cli::{planner, stderr, stdout};
use planner::spec::launch::megatron_args::split_words;
use planner::spec::launch::megatron_flags::{KNOWN, Role};
use planner::spec::launch::megatron_plan::from_megatron;
use planner::spec::launch::{LaunchFormat, MegatronVersion, export};
use planner::spec::{
    AttentionImpl, Framework, ModelSpec, Plan, Recompute, Schedule, TpOverlap, load_cluster,
    load_model,
};
use planner::units::Dtype;
use std::collections::BTreeMap;

/// `--name value` pairs of a command line (flags map to "").
fn arg_map(text: &str) -> BTreeMap<String, String> {
    let words = split_words(text).unwrap();
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < words.len() {
        let value = words.get(i + 1).filter(|w| !w.starts_with("--"));
        out.insert(words[i].clone(), value.cloned().unwrap_or_default());
        i += if value.is_some() { 2 } else { 1 };
    }
    out
}

/// Arguments planner reads into a plan or checks against the model.
fn plan_relevant(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.iter()
        .filter(|(k, _)| {
            KNOWN
                .iter()
                .any(|(n, _, r)| n == k && matches!(r, Role::Plan | Role::Model))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct Row {
    id: String,
    model: ModelSpec,
    gpus: u64,
    plan: Plan,
    authors_args: String,
}

fn sc21_rows() -> Vec<Row> {
    let path = format!("{}/tests/data/sc21/table1.json", env!("CARGO_MANIFEST_DIR"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let common = doc["common"].as_str().unwrap();
    let rows = doc["rows"].as_array().unwrap();
    rows.iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            let vpp = r["virtual_stages"].as_u64().unwrap_or(1);
            // run_table_1.sh + CONFIG.sh: MEGATRON_EXTRA_PARAMS, then MEGATRON_PARAMS.
            let authors_args = format!(
                "{} --tensor-model-parallel-size {} --pipeline-model-parallel-size {} \
                 --micro-batch-size {} --global-batch-size {} --num-layers {} --hidden-size {} \
                 --num-attention-heads {} --DDP-impl {} {common}",
                r["extra"].as_str().unwrap(),
                n("tp"),
                n("pp"),
                n("mbs"),
                n("gbs"),
                n("nls"),
                n("hs"),
                n("nah"),
                r["ddp"].as_str().unwrap(),
            );
            // published-runs.yaml: full recompute, fp16, no SP/ZeRO, 1F1B or interleaved; the
            // 2021 code materialises the softmax; torch DDP overlaps the gradient all-reduce.
            let plan = Plan {
                dp: n("dp"),
                tp: n("tp"),
                pp: n("pp"),
                cp: 1,
                ep: 1,
                etp: None,
                vpp,
                mbs: n("mbs"),
                global_batch: n("gbs"),
                seq_len: 2048,
                recompute: Recompute::Full,
                recompute_modules: Default::default(),
                zero: 0,
                sequence_parallel: false,
                overlap_grad_reduce: r["ddp"] == "torch",
                dtype: Dtype::Fp16,
                schedule: if vpp > 1 {
                    Schedule::Interleaved
                } else {
                    Schedule::OneFOneB
                },
                attention: AttentionImpl::Unfused,
                tp_overlap: TpOverlap::None,
                framework: Framework::Megatron,
                stage_layers: None,
                recompute_layers: None,
                grad_accumulation_fusion: false,
                grad_reduce_dtype: None,
                fp8_param_gather: false,
                fp8_recipe: Default::default(),
                loss_fusion: false,
                // The 2021 code scatters pipeline sends over the TP ranks by default (set
                // where it changes them).
                p2p_scatter_gather: n("tp") > 1 && n("pp") > 1,
                split_accounts: Default::default(),
                vocab_divisor: 128,
            };
            Row {
                id: r["id"].as_str().unwrap().to_string(),
                model: load_model(r["model"].as_str().unwrap()).unwrap(),
                gpus: n("gpus"),
                plan,
                authors_args,
            }
        })
        .collect()
}

#[test]
fn sc21_table1_exports_are_the_authors_launch_settings() {
    let rows = sc21_rows();
    assert_eq!(rows.len(), 10);
    for row in rows {
        let ours = export(
            &row.model,
            &row.plan,
            LaunchFormat::Megatron(MegatronVersion::V2021),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", row.id));
        let ours = arg_map(&ours.text);
        let theirs = plan_relevant(&arg_map(&row.authors_args));
        // Every argument we write is theirs with their value, and every argument of theirs
        // that sets the layout, batch, recompute, precision or model shape is ours.
        assert_eq!(ours, theirs, "{}", row.id);
    }
}

#[test]
fn sc21_authors_arguments_read_back_to_the_published_plans() {
    for row in sc21_rows() {
        let parsed = from_megatron(&row.authors_args, &row.model, row.gpus)
            .unwrap_or_else(|e| panic!("{}: {e}", row.id));
        assert_eq!(parsed.plan, row.plan, "{}", row.id);
        assert_eq!(parsed.version, MegatronVersion::V2021);
        let w = parsed.warnings.join("\n");
        assert!(
            w.contains("ignored (they do not change what is priced): --data-path"),
            "{w}"
        );
        assert!(w.contains("priced unfused"), "{w}");
        // Megatron args → plan → Megatron args gives the authors' arguments back.
        let again = export(
            &row.model,
            &parsed.plan,
            LaunchFormat::Megatron(parsed.version),
        )
        .unwrap();
        assert_eq!(
            arg_map(&again.text),
            plan_relevant(&arg_map(&row.authors_args))
        );
    }
}

fn llama70b_plan() -> Plan {
    Plan {
        dp: 4,
        tp: 8,
        pp: 4,
        cp: 2,
        ep: 1,
        etp: None,
        vpp: 5,
        mbs: 1,
        global_batch: 64,
        seq_len: 8192,
        recompute: Recompute::Selective,
        recompute_modules: Default::default(),
        zero: 1,
        sequence_parallel: true,
        overlap_grad_reduce: true,
        dtype: Dtype::Bf16,
        schedule: Schedule::Interleaved,
        attention: AttentionImpl::Flash,
        tp_overlap: TpOverlap::Backward,
        framework: Framework::Megatron,
        stage_layers: None,
        recompute_layers: None,
        // Off, so the round trip carries --no-gradient-accumulation-fusion.
        grad_accumulation_fusion: false,
        grad_reduce_dtype: None,
        fp8_param_gather: false,
        fp8_recipe: Default::default(),
        loss_fusion: false,
        p2p_scatter_gather: false,
        split_accounts: Default::default(),
        vocab_divisor: 128,
    }
}

#[test]
fn megatron_core_round_trip_over_every_feature() {
    let llama = load_model("llama3-70b").unwrap();
    let mixtral = load_model("mixtral-8x7b").unwrap();
    let base = llama70b_plan();
    let moe = Plan {
        dp: 8,
        tp: 2,
        pp: 1,
        cp: 1,
        ep: 4,
        vpp: 1,
        schedule: Schedule::OneFOneB,
        seq_len: 4096,
        recompute: Recompute::Full,
        zero: 0,
        dtype: Dtype::Fp8,
        attention: AttentionImpl::Unfused,
        overlap_grad_reduce: false,
        ..base.clone()
    };
    // TE userbuffers and bf16 gradient reduction: --tp-comm-overlap, --grad-reduce-in-bf16
    // (once dropped by the export, so the launch ran another plan than the one priced).
    let overlapped = Plan {
        tp_overlap: TpOverlap::Full,
        grad_reduce_dtype: Some(Dtype::Bf16),
        ..base.clone()
    };
    // Whole experts per rank, their EP ranks taken from the TP ranks too (ep 8 > dp 4):
    // `--expert-tensor-parallel-size 1`.
    let whole = Plan {
        dp: 4,
        ep: 8,
        etp: Some(1),
        ..moe.clone()
    };
    // FP8 weights gathered in FP8 under the distributed optimizer: --fp8-param-gather.
    let fp8_weights = Plan {
        dtype: Dtype::Fp8,
        fp8_param_gather: true,
        ..base.clone()
    };
    // Current scaling: --fp8-recipe tensorwise.
    let current = Plan {
        fp8_recipe: planner::spec::Fp8Recipe::Tensorwise,
        ..fp8_weights.clone()
    };
    // Transformer Engine's fused loss: --cross-entropy-loss-fusion --cross-entropy-fusion-impl te.
    let fused_loss = Plan {
        loss_fusion: true,
        ..base.clone()
    };
    // Another vocabulary padding: --make-vocab-size-divisible-by.
    let padded = Plan {
        vocab_divisor: 64,
        ..base.clone()
    };
    for (model, plan, gpus) in [
        (&llama, &base, 256),
        (&mixtral, &moe, 16),
        (&mixtral, &whole, 8),
        (&llama, &overlapped, 256),
        (&llama, &fp8_weights, 256),
        (&llama, &current, 256),
        (&llama, &fused_loss, 256),
        (&llama, &padded, 256),
    ] {
        let v = LaunchFormat::Megatron(MegatronVersion::Core);
        let text = export(model, plan, v).unwrap().text;
        let parsed = from_megatron(&text, model, gpus).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&parsed.plan, plan, "{text}");
        assert_eq!(parsed.version, MegatronVersion::Core);
        assert_eq!(export(model, &parsed.plan, v).unwrap().text, text);
    }
    let fp8 = export(
        &llama,
        &fp8_weights,
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap()
    .text;
    assert!(
        fp8.contains("--fp8-format hybrid \\\n--fp8-param-gather \\"),
        "{fp8}"
    );
    assert!(
        !fp8.contains("--fp8-recipe"),
        "delayed is the default: {fp8}"
    );
    let cs = export(
        &llama,
        &current,
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap()
    .text;
    assert!(cs.contains("--fp8-recipe tensorwise \\"), "{cs}");
    let text = export(&llama, &base, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    assert!(!text.contains("--fp8-param-gather"));
    for line in [
        "--num-layers-per-virtual-pipeline-stage 4 \\",
        "--context-parallel-size 2 \\",
        "--recompute-granularity selective \\",
        "--group-query-attention \\\n--num-query-groups 8 \\",
        "--ffn-hidden-size 28672 \\",
        "--use-distributed-optimizer \\\n--overlap-grad-reduce \\",
        "--no-gradient-accumulation-fusion \\",
        // Llama 3's rotary base: Megatron's default 10000 trains another model.
        "--rotary-base 500000 \\",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    // Experts are priced as the all-to-all dispatcher and grouped GEMMs run them; Megatron's
    // defaults (allgather, SequentialMLP) are not what is priced.
    let text = export(
        &mixtral,
        &moe,
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap()
    .text;
    for line in [
        "--moe-token-dispatcher-type alltoall \\",
        "--moe-grouped-gemm \\",
        "--rotary-base 1000000 \\",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let text = export(
        &mixtral,
        &whole,
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap()
    .text;
    assert!(
        text.contains("--expert-tensor-parallel-size 1 \\"),
        "{text}"
    );
    // Megatron parses `--rotary-base` as an int: a fractional base cannot be written.
    let odd = ModelSpec {
        rope_theta: Some(12_345.5),
        ..llama.clone()
    };
    let e = export(&odd, &base, LaunchFormat::Megatron(MegatronVersion::Core)).unwrap_err();
    assert!(e.to_string().contains("`rope_theta`"), "{e}");
    // `--use-torch-fsdp2` asserts no gradient-accumulation fusion; ZeRO-3 prices the same
    // with the flag either way, and beside `--use-torch-fsdp2` the flag reads back as the
    // plan had it (the default), so the plan round-trips.
    let z3 = Plan {
        pp: 1,
        vpp: 1,
        dp: 16,
        zero: 3,
        schedule: Schedule::OneFOneB,
        grad_accumulation_fusion: true,
        ..base.clone()
    };
    let text = export(&llama, &z3, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    assert!(
        text.contains("--use-torch-fsdp2 \\") && text.contains("--no-gradient-accumulation-fusion"),
        "{text}"
    );
    let parsed = from_megatron(&text, &llama, 256).unwrap();
    assert_eq!(parsed.plan, z3);
}

/// Megatron-LM 2021 runs every TP collective exposed and reduces fp16 gradients in fp16 unless
/// told to accumulate them in fp32: a plan priced so round-trips (with
/// `--accumulate-allreduce-grads-in-fp32`), and a plan priced with overlap it lacks is written
/// with a warning (backward) or refused (full, naming `tp_overlap`).
#[test]
fn megatron_2021_round_trip_of_tp_overlap_and_gradient_precision() {
    let gpt = load_model("gpt-1.7b").unwrap();
    let plan = Plan {
        dp: 2,
        tp: 2,
        pp: 2,
        cp: 1,
        vpp: 1,
        schedule: Schedule::OneFOneB,
        seq_len: 2048,
        recompute: Recompute::Full,
        zero: 0,
        sequence_parallel: false,
        overlap_grad_reduce: false,
        dtype: Dtype::Fp16,
        attention: AttentionImpl::Unfused,
        tp_overlap: TpOverlap::None,
        grad_reduce_dtype: Some(Dtype::Fp32),
        ..llama70b_plan()
    };
    let v = LaunchFormat::Megatron(MegatronVersion::V2021);
    let out = export(&gpt, &plan, v).unwrap();
    assert!(
        out.text.contains("--accumulate-allreduce-grads-in-fp32"),
        "{}",
        out.text
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let parsed = from_megatron(&out.text, &gpt, 8).unwrap_or_else(|e| panic!("{e}\n{}", out.text));
    assert_eq!(parsed.version, MegatronVersion::V2021);
    assert_eq!(parsed.plan, plan, "{}", out.text);
    // Pipeline sends whole (tp 2, pp 2, no SP): the 2021 code must be told not to split
    // them; split, its default, needs no argument — and Megatron-Core cannot run it.
    assert!(
        out.text.contains("--no-scatter-gather-tensors-in-pipeline"),
        "{}",
        out.text
    );
    let split = Plan {
        p2p_scatter_gather: true,
        ..plan.clone()
    };
    let text = export(&gpt, &split, v).unwrap().text;
    assert!(!text.contains("scatter-gather"), "{text}");
    assert_eq!(from_megatron(&text, &gpt, 8).unwrap().plan, split);
    let e = export(&gpt, &split, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`p2p_scatter_gather`") && e.contains("--megatron-version 2021"),
        "{e}"
    );
    let backward = Plan {
        tp_overlap: TpOverlap::Backward,
        ..plan.clone()
    };
    let w = export(&gpt, &backward, v).unwrap().warnings;
    assert!(
        w.iter()
            .any(|w| w.contains("tp_overlap backward") && w.contains("--tp-overlap none")),
        "{w:?}"
    );
    let full = Plan {
        tp_overlap: TpOverlap::Full,
        ..plan
    };
    let e = export(&gpt, &full, v).unwrap_err().to_string();
    assert!(
        e.contains("`tp_overlap`") && e.contains("--megatron-version core"),
        "{e}"
    );
}

#[test]
fn megatron_arguments_planner_cannot_price_are_refused() {
    let m = load_model("gpt-39b").unwrap();
    let base = "--num-layers 48 --tensor-model-parallel-size 8 --pipeline-model-parallel-size 2 --micro-batch-size 1 --fp16";
    let err = |extra: &str| {
        from_megatron(&format!("{base} {extra}"), &m, 512)
            .unwrap_err()
            .to_string()
    };
    // Block recomputation of 3 of the 6 layers of each of a stage's 4 chunks (48 layers over
    // pp=2 × vpp=4), groups of 2 layers, a typo.
    let e = err(
        "--num-layers-per-virtual-pipeline-stage 6 --recompute-granularity full --recompute-method block --recompute-num-layers 3",
    );
    assert!(
        e.contains("block over 3 of the 6 layers of each of the 4 chunks"),
        "{e}"
    );
    let e = err("--activations-checkpoint-method uniform --activations-checkpoint-num-layers 2");
    assert!(e.contains("groups of 2 layers"), "{e}");
    let e = err("--sequence-paralel --swiglu");
    assert!(e.contains("did you mean `--sequence-parallel`"), "{e}");
    assert!(
        e.contains("`--swiglu`: the arguments say a gated MLP"),
        "{e}"
    );
    // Sizes whose product does not divide the GPUs are named, all of them (it had always
    // blamed the TP size): 8 · 2 · 3 = 48 does not divide 512.
    let e = err("--context-parallel-size 3");
    assert!(
        e.contains(
            "`--tensor-model-parallel-size × --pipeline-model-parallel-size × --context-parallel-size`: tp·pp·cp = 48"
        ),
        "{e}"
    );
    // A launcher that starts another number of ranks than the GPUs priced.
    let launch = format!("torchrun --nproc_per_node 8 --nnodes 32 pretrain_gpt.py {base}");
    let e = from_megatron(&launch, &m, 512).unwrap_err().to_string();
    assert!(
        e.contains("the launcher starts 256 ranks, but 512 GPUs are priced (fix: pass --gpus 256)"),
        "{e}"
    );
    // --recompute-method alone recomputes nothing in Megatron-LM: priced so, and said.
    let p = from_megatron(&format!("{base} --recompute-method uniform"), &m, 512).unwrap();
    assert_eq!(p.plan.recompute, Recompute::None);
    assert!(
        p.warnings.iter().any(|w| w.contains("recomputes nothing")),
        "{:?}",
        p.warnings
    );
    // Block covering all 24 layers of a stage is full recomputation.
    let all = "--recompute-granularity full --recompute-method block --recompute-num-layers 24";
    let p = from_megatron(&format!("{base} {all}"), &m, 512).unwrap();
    assert_eq!(
        (p.plan.recompute, p.plan.dp, p.plan.global_batch),
        (Recompute::Full, 32, 32)
    );
    assert_eq!(p.plan.recompute_layers, None);
    // Uneven splits Megatron-Core cannot make: first + last ≠ the 48 layers with pp=2; 48 − 15
    // = 33 layers over the 2 middle stages of pp=3; first/last without a pipeline.
    let e = err("--decoder-first-pipeline-num-layers 20 --decoder-last-pipeline-num-layers 20");
    assert!(
        e.contains("40 layers on the first/last stage of a 48-layer model: the two stages must hold them all"),
        "{e}"
    );
    let three = base.replace(
        "--pipeline-model-parallel-size 2",
        "--pipeline-model-parallel-size 3",
    );
    let e = from_megatron(
        &format!("{three} --decoder-first-pipeline-num-layers 15"),
        &m,
        384,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the other 2 stages must share the rest evenly"),
        "{e}"
    );
    let one = base.replace(
        "--pipeline-model-parallel-size 2",
        "--pipeline-model-parallel-size 1",
    );
    let e = from_megatron(
        &format!("{one} --decoder-last-pipeline-num-layers 8"),
        &m,
        512,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("with pp=1: one stage holds every layer"), "{e}");
}

/// Megatron-Core's uneven stages and block recomputation read into the plan: the first and
/// last stage as stated, the rest split evenly over the middle stages; block N recomputes
/// min(N, n_i) layers of stage i.
#[test]
fn megatron_uneven_stages_and_block_recompute_are_read() {
    let m = load_model("gpt-39b").unwrap();
    let base = "--num-layers 48 --tensor-model-parallel-size 8 --micro-batch-size 1 --fp16";
    let read = |extra: &str| {
        from_megatron(&format!("{base} {extra}"), &m, 512)
            .unwrap_or_else(|e| panic!("{extra}: {e}"))
            .plan
    };
    // pp=4, first 9, last 9: (48 − 18)/2 = 15 on each middle stage. Block 12: min(12, n_i).
    let p = read(
        "--pipeline-model-parallel-size 4 --decoder-first-pipeline-num-layers 9 \
         --decoder-last-pipeline-num-layers 9 --recompute-granularity full \
         --recompute-method block --recompute-num-layers 12",
    );
    assert_eq!(p.stage_layers, Some(vec![9, 15, 15, 9]));
    assert_eq!(p.recompute_layers, Some(vec![9, 12, 12, 9]));
    assert_eq!((p.recompute, p.dp), (Recompute::Full, 16));
    // pp=2, last 23: the first stage holds 48 − 23 = 25. Block 3 of 24 even layers: 3 each.
    let p = read("--pipeline-model-parallel-size 2 --decoder-last-pipeline-num-layers 23");
    assert_eq!(p.stage_layers, Some(vec![25, 23]));
    let p = read(
        "--pipeline-model-parallel-size 2 --recompute-granularity full \
         --recompute-method block --recompute-num-layers 3",
    );
    assert_eq!(
        (p.stage_layers, p.recompute_layers),
        (None, Some(vec![3, 3]))
    );
    // A first count equal to the even split is the even split: 48/4 = 12.
    let p = read("--pipeline-model-parallel-size 4 --decoder-first-pipeline-num-layers 12");
    assert_eq!(p.stage_layers, None);
    // Block 40 of a stage's 24 layers recomputes all 24, as Megatron-LM's block method does,
    // and says so; block 24 (exactly the stage) says nothing.
    let args = |n: u64| {
        format!(
            "{base} --pipeline-model-parallel-size 2 --recompute-granularity full \
             --recompute-method block --recompute-num-layers {n}"
        )
    };
    let p = from_megatron(&args(40), &m, 512).unwrap();
    assert_eq!(
        (p.plan.recompute, &p.plan.recompute_layers),
        (Recompute::Full, &None)
    );
    assert!(
        p.warnings.iter().any(|w| w
            == "--recompute-num-layers 40 with the block method exceeds the 24 layers of a model chunk: Megatron-LM recomputes every layer, and so does the priced plan"),
        "{:?}",
        p.warnings
    );
    let p = from_megatron(&args(24), &m, 512).unwrap();
    assert!(
        p.warnings
            .iter()
            .all(|w| !w.contains("recompute-num-layers")),
        "{:?}",
        p.warnings
    );
}

/// Plans of uneven stages with per-stage recomputation, as the search writes them, export to
/// Megatron-Core arguments that read back to the same plan; what Megatron-LM has no argument
/// for is refused, naming the plan field and why.
#[test]
fn megatron_export_of_uneven_stages_round_trips_or_is_refused() {
    let llama = load_model("llama3-70b").unwrap();
    let gpt = load_model("gpt-39b").unwrap();
    let core = LaunchFormat::Megatron(MegatronVersion::Core);
    // 80 layers over pp=6: 13, 14×4, 11; the first 7 layers of every stage recompute. GPUs:
    // dp 4 · tp 8 · pp 6 · cp 2 = 384.
    let uneven = Plan {
        pp: 6,
        vpp: 1,
        schedule: Schedule::OneFOneB,
        recompute: Recompute::Full,
        stage_layers: Some(vec![13, 14, 14, 14, 14, 11]),
        recompute_layers: Some(vec![7; 6]),
        ..llama70b_plan()
    };
    // 48 layers over pp=2: 23 and 25; block 24 recomputes min(24, 23) = 23 and min(24, 25) = 24.
    // GPUs: dp 32 · tp 8 · pp 2 = 512.
    let two = Plan {
        stage_layers: Some(vec![23, 25]),
        recompute_layers: Some(vec![23, 24]),
        ..Plan {
            dp: 32,
            tp: 8,
            pp: 2,
            cp: 1,
            vpp: 1,
            global_batch: 512,
            seq_len: 2048,
            schedule: Schedule::OneFOneB,
            recompute: Recompute::Full,
            sequence_parallel: false,
            ..llama70b_plan()
        }
    };
    // Interleaved: 80 layers over pp=4 as 18, 22, 22, 18, two chunks a stage (9 and 11
    // layers). Megatron-Core takes the degree as --num-virtual-stages-per-pipeline-rank
    // beside uneven stages. GPUs: dp 4 · tp 8 · pp 4 · cp 2 = 256.
    let interleaved = Plan {
        vpp: 2,
        stage_layers: Some(vec![18, 22, 22, 18]),
        ..llama70b_plan()
    };
    for (model, plan, gpus, lines) in [
        (
            &llama,
            &interleaved,
            256,
            &[
                "--pipeline-model-parallel-size 4 \\\n--decoder-first-pipeline-num-layers 18 \\\n--decoder-last-pipeline-num-layers 18 \\\n--num-virtual-stages-per-pipeline-rank 2 \\",
            ][..],
        ),
        (
            &llama,
            &uneven,
            384,
            &[
                "--pipeline-model-parallel-size 6 \\\n--decoder-first-pipeline-num-layers 13 \\\n--decoder-last-pipeline-num-layers 11 \\",
                "--recompute-granularity full \\\n--recompute-method block \\\n--recompute-num-layers 7 \\",
            ][..],
        ),
        (
            &gpt,
            &two,
            512,
            &[
                "--decoder-first-pipeline-num-layers 23 \\",
                "--recompute-method block \\\n--recompute-num-layers 24 \\",
            ][..],
        ),
    ] {
        let text = export(model, plan, core).unwrap().text;
        for line in lines {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("--decoder-last-pipeline-num-layers 25"),
            "{text}"
        );
        let parsed = from_megatron(&text, model, gpus).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&parsed.plan, plan, "{text}");
        assert_eq!(export(model, &parsed.plan, core).unwrap().text, text);
    }
    let refused = |model: &ModelSpec, plan: &Plan, format: LaunchFormat| {
        export(model, plan, format).unwrap_err().to_string()
    };
    // Read back, layers per virtual stage beside uneven stages are refused as Megatron-LM
    // refuses them, and so is a stage its chunks cannot share.
    let text = export(&llama, &interleaved, core).unwrap().text;
    let per_stage = text.replace(
        "--num-virtual-stages-per-pipeline-rank 2",
        "--num-layers-per-virtual-pipeline-stage 10",
    );
    let e = from_megatron(&per_stage, &llama, 256)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("give the virtual stages as --num-virtual-stages-per-pipeline-rank"),
        "{e}"
    );
    let odd = text.replace(
        "--decoder-first-pipeline-num-layers 18 \\\n--decoder-last-pipeline-num-layers 18",
        "--decoder-first-pipeline-num-layers 17 \\\n--decoder-last-pipeline-num-layers 19",
    );
    let e = from_megatron(&odd, &llama, 256).unwrap_err().to_string();
    assert!(
        e.contains("17 layers on a stage with 2 virtual stages: Megatron-Core needs every stage's layers divisible by them"),
        "{e}"
    );
    // The embedding in the split: 80 layers + 1 slot = 81 over pp = 3, vpp = 3, 9 slots a
    // chunk. Megatron-Core's flag and the degree beside it, read back to the same plan; not
    // in 2021's Megatron-LM, nor beside first/last counts. GPUs: 4 · 8 · 3 · 2 = 192; 48
    // sequences make 12 micro-batches, a multiple of pp.
    let slots = Plan {
        pp: 3,
        vpp: 3,
        global_batch: 48,
        stage_layers: None,
        split_accounts: planner::spec::SplitAccounts {
            embedding: true,
            loss: false,
        },
        ..llama70b_plan()
    };
    let text = export(&llama, &slots, core).unwrap().text;
    assert!(
        text.contains("--account-for-embedding-in-pipeline-split \\\n--num-virtual-stages-per-pipeline-rank 3 \\"),
        "{text}"
    );
    let parsed = from_megatron(&text, &llama, 192).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.plan, slots, "{text}");
    let e = refused(
        &llama,
        &slots,
        LaunchFormat::Megatron(MegatronVersion::V2021),
    );
    assert!(
        e.contains("`account_for_embedding_in_pipeline_split`: counting the embedding or loss in the pipeline split is not in Megatron-LM 2021"),
        "{e}"
    );
    let both = text.replace(
        "--account-for-embedding-in-pipeline-split",
        "--account-for-embedding-in-pipeline-split --decoder-first-pipeline-num-layers 24",
    );
    let e = from_megatron(&both, &llama, 192).unwrap_err().to_string();
    assert!(e.contains("which Megatron-Core refuses beside it"), "{e}");
    // torchtitan's first/last allowances shorten one virtual stage each, not every chunk.
    let e = refused(
        &llama,
        &Plan {
            zero: 2,
            cp: 1,
            ..interleaved.clone()
        },
        LaunchFormat::Torchtitan,
    );
    assert!(e.contains("`stage_layers`: 18,22×2,18"), "{e}");
    // Middle stages of different sizes: Megatron-Core sets only the first and the last.
    let middle = Plan {
        stage_layers: Some(vec![13, 13, 14, 14, 14, 12]),
        ..uneven.clone()
    };
    let e = refused(&llama, &middle, core);
    assert!(
        e.contains("`stage_layers`: 13×2,14×3,12: Megatron-Core sets only the first and the last stage's layers"),
        "{e}"
    );
    // Recomputed layers no single N gives: 13 on a 13-layer stage needs N ≥ 13, 7 on a
    // 14-layer stage N = 7.
    let mixed = Plan {
        recompute_layers: Some(vec![13, 7, 7, 7, 7, 7]),
        ..uneven.clone()
    };
    let e = refused(&llama, &mixed, core);
    assert!(
        e.contains("`recompute_layers`: 13,7×5 layers recomputed per stage: Megatron-LM recomputes the first N layers"),
        "{e}"
    );
    // Part of each stage with virtual stages: Megatron's N counts per chunk.
    let chunks = Plan {
        stage_layers: None,
        recompute_layers: Some(vec![4; 4]),
        recompute: Recompute::Full,
        ..llama70b_plan()
    };
    let e = refused(&llama, &chunks, core);
    assert!(
        e.contains("`recompute_layers`: 4×4 layers recomputed per stage with vpp=5"),
        "{e}"
    );
    // Megatron-LM 2021 splits evenly; DeepSpeed by its partition method; torchtitan writes
    // 23,25 (two layers' allowance for the embedding: pipeline_parallel_first_stage_less_layers).
    let legacy = Plan {
        grad_accumulation_fusion: true,
        dtype: Dtype::Fp16,
        attention: AttentionImpl::Unfused,
        zero: 0,
        ..two.clone()
    };
    let e = refused(
        &gpt,
        &legacy,
        LaunchFormat::Megatron(MegatronVersion::V2021),
    );
    assert!(
        e.contains("`stage_layers`: 23,25: Megatron-LM 2021 splits the layers evenly"),
        "{e}"
    );
    // A plan priced with fused gradient accumulation is not what 2021 code runs.
    assert!(
        e.contains(
            "`grad_accumulation_fusion`: Megatron-LM 2021 accumulates gradients in a backward hook"
        ),
        "{e}"
    );
    let e = refused(&gpt, &two, LaunchFormat::Torchtitan);
    assert!(!e.contains("`stage_layers`"), "{e}");
    assert!(
        e.contains("`recompute_layers`: 23,24 layers recomputed per stage: torchtitan"),
        "{e}"
    );
    let e = refused(&gpt, &two, LaunchFormat::Deepspeed);
    assert!(
        e.contains("`stage_layers`: 23,25: DeepSpeed's PipelineModule"),
        "{e}"
    );
    assert!(
        e.contains("`recompute_layers`: 23,24 layers recomputed per stage: a DeepSpeed config"),
        "{e}"
    );
}

fn run_ok(args: &[&str]) -> String {
    let o = planner(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn saved_plans_load_back_everywhere() {
    let dir = std::env::temp_dir().join(format!("planner-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plan.json");
    let file = file.to_str().unwrap();
    let target = ["--model", "llama3-8b", "--cluster", "h100x8"];
    let flags = [
        "--tp",
        "2",
        "--pp",
        "2",
        "--vpp",
        "2",
        "--micro-batch",
        "1",
        "--global-batch",
        "32",
        "--recompute",
        "full",
        "--sequence-parallel",
        "--zero",
        "1",
    ];
    let by_flags = run_ok(
        &[
            &["estimate"][..],
            &target,
            &flags,
            &["--format", "json", "--save-plan", file],
        ]
        .concat(),
    );
    let by_file = run_ok(
        &[
            &["estimate"][..],
            &target,
            &["--plan", file, "--format", "json"],
        ]
        .concat(),
    );
    assert_eq!(by_flags, by_file);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let estimated: serde_json::Value = serde_json::from_str(&by_file).unwrap();
    assert_eq!(saved, estimated["plan"]);
    // The same file exports.
    let args = run_ok(
        &[
            &["export"][..],
            &target,
            &["--plan", file, "--format", "megatron"],
        ]
        .concat(),
    );
    assert!(
        args.contains("--num-layers-per-virtual-pipeline-stage 8 \\"),
        "{args}"
    );
    // A bad plan file: every problem, exit 2.
    std::fs::write(file, r#"{"dp": 2, "tp": 2, "pp": 2, "mbs": 1, "global_batch": 32, "seq_len": 8192, "zero": 9, "vp": 2}"#).unwrap();
    let o = planner(&[&["estimate"][..], &target, &["--plan", file]].concat());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`zero`: expected a ZeRO stage") && err.contains("`vp`: unknown key"),
        "{err}"
    );
    // --plan with plan flags is a usage error.
    let o = planner(&[&["estimate"][..], &target, &["--plan", file, "--tp", "2"]].concat());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn suggest_exports_its_top_plan() {
    let target = [
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--global-batch",
        "64",
        "--seq-len",
        "4096",
    ];
    let json = run_ok(
        &[
            &["suggest"][..],
            &target,
            &["--format", "json", "--top", "1"],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let top: Plan = serde_json::from_value(v["plans"][0]["plan"].clone()).unwrap();
    let args = run_ok(&[&["suggest"][..], &target, &["--export", "megatron"]].concat());
    let m = load_model("llama3-8b").unwrap();
    assert_eq!(from_megatron(&args, &m, 8).unwrap().plan, top, "{args}");
}

/// `suggest --export torchtitan` prices the plans as torchtitan runs them (eager kernels,
/// op-level checkpointing, FSDP's state layout) among those its configuration expresses. On
/// Llama 3 8B over 8 H100s the Megatron-priced best, exportable, was dp=8 zero3 at mbs 1 with
/// no recomputation: 53.5 s and 65.2 GiB as Megatron runs it, but 74.4 s and 84.5 GiB — out
/// of memory — as torchtitan does.
#[test]
fn suggest_export_prices_plans_for_the_framework_that_runs_them() {
    let target = ["--model", "llama3-8b", "--cluster", "h100x8"];
    let toml = run_ok(&[&["suggest"][..], &target, &["--export", "torchtitan"]].concat());
    let json = run_ok(
        &[
            &["suggest"][..],
            &target,
            &[
                "--framework",
                "torchtitan",
                "--format",
                "json",
                "--top",
                "1",
            ],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let top: Plan = serde_json::from_value(v["plans"][0]["plan"].clone()).unwrap();
    assert_eq!(top.framework, planner::spec::Framework::Torchtitan);
    assert!(
        toml.contains(&format!(": {}\n", top.short())),
        "{}\n{toml}",
        top.short()
    );
    assert!(v["plans"][0]["fits"].as_bool().unwrap());
    // torchtitan runs no ZeRO-1: not searched for it.
    let all = run_ok(
        &[
            &["suggest"][..],
            &target,
            &[
                "--framework",
                "torchtitan",
                "--format",
                "json",
                "--top",
                "50",
            ],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert!(
        v["plans"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["plan"]["zero"] != 1)
    );
    // The plan that was exported before, priced as torchtitan runs it, does not fit.
    let o = planner(
        &[
            &["estimate"][..],
            &target,
            &[
                "--dp",
                "8",
                "--zero",
                "3",
                "--micro-batch",
                "1",
                "--global-batch",
                "512",
            ],
            &[
                "--overlap-grad-reduce",
                "--framework",
                "torchtitan",
                "--format",
                "json",
            ],
        ]
        .concat(),
    );
    let e: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(!e["fits"].as_bool().unwrap(), "{e}");
    // Nothing that fits: said as a search among what the format can write (exit 1).
    let o = planner(&[
        "suggest",
        "--model",
        "llama3-405b",
        "--cluster",
        "h100x8",
        "--export",
        "torchtitan",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("among the plans --export torchtitan can write"),
        "{}",
        stderr(&o)
    );
    // Pricing for one framework and exporting for another is refused.
    let o = planner(
        &[
            &["suggest"][..],
            &target,
            &["--framework", "llm-foundry", "--export", "torchtitan"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "--framework llm-foundry prices plans as llm-foundry runs them, but --export torchtitan"
        ),
        "{}",
        stderr(&o)
    );
}

/// `suggest` ranks only plans the framework they are priced for can launch as priced: here
/// Megatron-LM, which sets only the first and last stage's layers and one recompute count for
/// every stage, so ILP 2's other partitions are tallied as rejected, not ranked (the fastest
/// plans had split the stages unevenly in ways Megatron cannot write); and which has no
/// ZeRO-2, a stage the search no longer enumerates for it (`Framework::zero_stages`).
/// `--export megatron` then writes the top plan itself.
#[test]
fn suggest_ranks_only_plans_the_framework_can_launch() {
    let target = [
        "--model",
        "llama3-70b",
        "--cluster",
        "h100-x1024",
        "--gpus",
        "64",
    ];
    let json = run_ok(&[&["suggest"][..], &target, &["--format", "json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let plans: Vec<Plan> = v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e["plan"].clone()).unwrap())
        .collect();
    let m = load_model("llama3-70b").unwrap();
    let core = LaunchFormat::Megatron(MegatronVersion::Core);
    assert_eq!(plans.len(), 10);
    for p in &plans {
        assert!(export(&m, p, core).is_ok(), "{}", p.short());
    }
    let tally = v["infeasible"].as_object().unwrap();
    assert!(
        !tally.contains_key("ZeRO stage the framework lacks"),
        "{}",
        v["infeasible"]
    );
    let o = planner(&[&["suggest"][..], &target, &["--export", "megatron"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cannot be written"), "{}", stderr(&o));
    let exported = from_megatron(&stdout(&o), &m, 64).unwrap().plan;
    let cluster = load_cluster("h100-x1024").unwrap().with_gpus(64).unwrap();
    let t = planner::cost::estimate(&m, &cluster, &exported, None).step_time_s;
    let best = v["plans"][0]["step_time_s"].as_f64().unwrap();
    assert!((t - best).abs() <= best * 1e-9, "{t} vs {best}");
}

#[test]
fn torchtitan_and_deepspeed_carry_the_plan() {
    let target = ["--model", "llama3-8b", "--cluster", "h100x8"];
    let plan = [
        "--tp",
        "2",
        "--sequence-parallel",
        "--zero",
        "3",
        "--micro-batch",
        "2",
        "--global-batch",
        "64",
        "--recompute",
        "full",
        "--seq-len",
        "4096",
    ];
    let toml = run_ok(&[&["export"][..], &target, &plan, &["--format", "torchtitan"]].concat());
    // dp = 8/2 = 4 FSDP ranks; no PP: local batch = micro-batch, 64/(4·2) = 8 accumulation steps.
    for line in [
        "[parallelism]\ndata_parallel_replicate_degree = 1\ndata_parallel_shard_degree = 4\nfsdp_reshard_after_forward = \"always\"\ntensor_parallel_degree = 2\npipeline_parallel_degree = 1\n",
        "[training]\nlocal_batch_size = 2\nglobal_batch_size = 64\nseq_len = 4096\nmixed_precision_param = \"bfloat16\"\n",
        "[activation_checkpoint]\nmode = \"full\"\n",
    ] {
        assert!(toml.contains(line), "{line} in\n{toml}");
    }
    // DeepSpeed: ZeRO-2 on 8 ranks, 64 = 2 per GPU × 4 accumulation steps × 8; gradients
    // reduced in fp32 as priced (DeepSpeed's own default would follow bf16). Without
    // --framework, `export` prices for the framework its format runs (Megatron has no ZeRO-2).
    let ds = run_ok(
        &[
            &["export"][..],
            &target,
            &[
                "--zero",
                "2",
                "--micro-batch",
                "2",
                "--global-batch",
                "64",
                "--format",
                "deepspeed",
            ],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_str(&ds).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 2,
            "gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2, "overlap_comm": false},
            "bf16": {"enabled": true}, "communication_data_type": "fp32"})
    );
    let o = planner(
        &[
            &["export"][..],
            &target,
            &[
                "--framework",
                "deepspeed",
                "--zero",
                "2",
                "--micro-batch",
                "2",
                "--global-batch",
                "64",
                "--grad-reduce-dtype",
                "bf16",
                "--format",
                "deepspeed",
            ],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["communication_data_type"], "bf16");
    // At pp 1, Megatron-DeepSpeed must be told not to build its pipeline model, whose engine
    // refuses ZeRO-2 and 3.
    assert!(
        stderr(&o).contains("--no-pipeline-parallel"),
        "{}",
        stderr(&o)
    );
    // What a format cannot express is exit 2 naming the plan field.
    let o = planner(
        &[
            &["export"][..],
            &target,
            &["--cp", "2", "--format", "deepspeed"],
        ]
        .concat(),
    );
    // (Priced for DeepSpeed, the format's framework, the plan meets its refusal at once.)
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cp=2: deepspeed has no context parallelism"),
        "{}",
        stderr(&o)
    );
    let o = planner(
        &[
            &["export"][..],
            &target,
            &["--tp", "2", "--zero", "3", "--format", "torchtitan"],
        ]
        .concat(),
    );
    assert!(stderr(&o).contains("`sequence_parallel`"), "{}", stderr(&o));
    // torchtitan runs DDP alone: replicated data parallelism beside TP is refused.
    let o = planner(
        &[
            &["export"][..],
            &target,
            &[
                "--tp",
                "2",
                "--sequence-parallel",
                "--zero",
                "0",
                "--format",
                "torchtitan",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`zero`: zero=0 with dp=4 beside tp/pp/cp: torchtitan runs DDP alone"),
        "{}",
        stderr(&o)
    );
    // Selective recomputation exports as torchtitan's op-level policy: as priced when the plan
    // was priced for torchtitan; a plan priced for Megatron-LM (whose selective recomputation
    // is the attention core, whose kernels are fused) is written with a warning saying so.
    let selective = |framework: &str| {
        planner(
            &[
                &["export"][..],
                &target,
                &["--recompute", "selective", "--framework", framework],
                &["--format", "torchtitan"],
            ]
            .concat(),
        )
    };
    let o = selective("torchtitan");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("selective_ac_option = \"op\""));
    assert!(!stderr(&o).contains("priced as"), "{}", stderr(&o));
    let o = selective("megatron");
    assert!(
        stderr(&o).contains("warning: the plan was priced as megatron runs it, and torchtitan runs it with other kernels, checkpointing and optimizer-state memory: `estimate --framework torchtitan`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn huge_sizes_are_exit_2_not_a_panic() {
    let big = "16777216";
    let dir = std::env::temp_dir().join(format!("planner-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.json");
    let sizes = ["dp", "tp", "pp", "cp", "mbs", "global_batch", "seq_len"];
    let json: Vec<String> = sizes.iter().map(|k| format!("\"{k}\": {big}")).collect();
    std::fs::write(&file, format!("{{{}}}", json.join(", "))).unwrap();
    let megatron = format!(
        "--tensor-model-parallel-size {big} --pipeline-model-parallel-size {big} \
         --context-parallel-size {big} --micro-batch-size 1 --num-layers-per-virtual-pipeline-stage {big}"
    );
    let target = ["estimate", "--model", "gpt-39b", "--cluster", "a100x8"];
    for extra in [
        vec!["--tp", big, "--pp", big, "--cp", big],
        vec!["--plan", file.to_str().unwrap()],
        vec!["--megatron-args", &megatron],
    ] {
        let o = planner(&[&target[..], &extra].concat());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("implausibly large") || err.contains("overflows"),
            "{err}"
        );
    }
}

/// `suggest --export megatron --megatron-version 2021` searches what Megatron-LM 2021 runs
/// (unfused attention, TP collectives exposed, hook-side gradient accumulation, no ZeRO, no
/// selective recomputation) and writes its best: it had searched the Megatron-Core space, none
/// of which 2021 can write, and always failed with "no plan fits".
#[test]
fn suggest_exports_for_megatron_2021() {
    let o = planner(&[
        "suggest",
        "--model",
        "gpt-1.7b",
        "--cluster",
        "a100x8",
        "--global-batch",
        "64",
        "--export",
        "megatron",
        "--megatron-version",
        "2021",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("--DDP-impl"), "{out}");
    for absent in [
        "--use-flash-attn",
        "--use-distributed-optimizer",
        "--sequence-parallel",
    ] {
        assert!(!out.contains(absent), "{absent} in {out}");
    }
}

/// What Megatron-LM itself refuses or reads otherwise is refused naming the argument, not
/// priced: a switch given a value (`--sequence-parallel=false` had turned SP on), a value
/// after a switch, a recompute method with selective granularity, an FP8 recipe Megatron
/// does not have, a sequence longer than the position table, and expert arguments that
/// contradict the model without the shape arguments beside them (they had been ignored).
/// The official Mixtral example's router arguments are read.
#[test]
fn megatron_arguments_megatron_refuses_are_refused() {
    let m = load_model("gpt-39b").unwrap();
    let base = "--num-layers 48 --tensor-model-parallel-size 8 --pipeline-model-parallel-size 2 --micro-batch-size 1 --fp16";
    let err = |extra: &str| {
        from_megatron(&format!("{base} {extra}"), &m, 512)
            .unwrap_err()
            .to_string()
    };
    for (extra, needle) in [
        (
            "--sequence-parallel=false",
            "`--sequence-parallel`: takes no value, but `=false`",
        ),
        (
            "--sequence-parallel true",
            "`--sequence-parallel`: takes no value, but `true` follows",
        ),
        (
            "--recompute-granularity selective --recompute-method uniform",
            "`--recompute-method`: given with selective granularity",
        ),
        ("--fp8-format bogus", "`--fp8-format`: `bogus`"),
        (
            "--seq-length 4096 --max-position-embeddings 2048",
            "`--seq-length`: 4096 exceeds --max-position-embeddings 2048",
        ),
        (
            "--num-experts 8",
            "`--num-experts`: 8, but the model `gpt-39b` has experts: none",
        ),
        // validate_args asserts these three.
        (
            "--tp-comm-overlap",
            "`--tp-comm-overlap`: without --sequence-parallel",
        ),
        (
            "--overlap-param-gather",
            "`--overlap-param-gather`: needs --use-distributed-optimizer",
        ),
        (
            "--num-layers-per-virtual-pipeline-stage 4 --num-virtual-stages-per-pipeline-rank 6",
            "`--num-virtual-stages-per-pipeline-rank`: given with",
        ),
    ] {
        let e = err(extra);
        assert!(e.contains(needle), "{extra}: {e}");
    }
    let mixtral = load_model("mixtral-8x7b").unwrap();
    let moe = "--tensor-model-parallel-size 2 --sequence-parallel --expert-model-parallel-size 8 --micro-batch-size 1 --bf16 --num-experts 8 --moe-router-topk 2 --moe-router-load-balancing-type aux_loss --moe-aux-loss-coeff 1e-2 --moe-token-dispatcher-type alltoall";
    let p = from_megatron(moe, &mixtral, 16).unwrap();
    assert_eq!((p.plan.tp, p.plan.ep), (2, 8));
    // The all-to-all dispatcher is what is priced; Megatron's default `allgather` is said.
    let warned = |args: &str| {
        from_megatron(args, &mixtral, 16)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("--moe-token-dispatcher-type"))
    };
    assert!(!warned(moe));
    assert!(warned(&moe.replace("alltoall", "allgather")));
    // QA: a launch line that builds experts and names no dispatcher gets Megatron's default
    // allgather, and without --moe-grouped-gemm its SequentialMLP: both said, neither priced.
    let bare = moe.replace(" --moe-token-dispatcher-type alltoall", "");
    let w = from_megatron(&bare, &mixtral, 16).unwrap().warnings;
    assert!(
        w.iter()
            .any(|w| w
                .starts_with("no --moe-token-dispatcher-type: Megatron-LM's default is allgather")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("no --moe-grouped-gemm: Megatron-LM runs each local expert")),
        "{w:?}"
    );
    let grouped = format!("{moe} --moe-grouped-gemm");
    let w = from_megatron(&grouped, &mixtral, 16).unwrap().warnings;
    assert!(!w.iter().any(|w| w.starts_with("no --moe-")), "{w:?}");
    // QA: DeepSeek-V3's router arguments had been unknown, refusing the recipe's line; they
    // score and balance the same GEMM's tokens (ignored), while group-limited routing and
    // padding to capacity change what moves and are said.
    let router = format!(
        "{grouped} --moe-router-score-function sigmoid --moe-router-enable-expert-bias \
         --moe-router-topk-scaling-factor 2.5 --moe-router-dtype fp32 --moe-permute-fusion \
         --moe-router-bias-update-rate 1e-3 --moe-router-num-groups 8 --moe-router-group-topk 4 \
         --moe-pad-expert-input-to-capacity"
    );
    let w = from_megatron(&router, &mixtral, 16).unwrap().warnings;
    assert!(
        w.iter().any(
            |w| w.starts_with("ignored (they do not change what is priced)")
                && w.contains("--moe-router-score-function")
                && w.contains("--moe-permute-fusion")
        ),
        "{w:?}"
    );
    for name in [
        "--moe-router-num-groups",
        "--moe-router-group-topk",
        "--moe-pad-expert-input-to-capacity",
    ] {
        assert!(
            w.iter()
                .any(|w| w.starts_with(&format!("{name}: not modelled"))),
            "{name}: {w:?}"
        );
    }
}

/// `export` refuses a plan priced for one framework in a format another framework runs when
/// that framework cannot run it at all, naming why (QA: a Mixtral plan priced for DeepSpeed,
/// tp 2 without sequence parallelism, had been written as Megatron arguments Megatron refuses;
/// a torchtitan ZeRO-3 pipeline as a DeepSpeed stage-3 config); one it can run is written with
/// the pricing warning.
#[test]
fn export_refuses_what_the_target_framework_cannot_run() {
    for (args, needle) in [
        (
            &[
                "--model",
                "mixtral-8x7b",
                "--cluster",
                "h100-x1024",
                "--tp",
                "2",
                "--zero",
                "3",
                "--framework",
                "deepspeed",
                "--format",
                "megatron",
            ][..],
            "sequence parallelism",
        ),
        (
            &[
                "--model",
                "llama3-8b",
                "--cluster",
                "h100x8",
                "--pp",
                "4",
                "--zero",
                "3",
                "--framework",
                "torchtitan",
                "--format",
                "deepspeed",
            ][..],
            "ZeRO-3 with pp=4",
        ),
    ] {
        let o = planner(&[&["export"], args].concat());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("cannot run it") && err.contains(needle),
            "{err}"
        );
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    }
    let o = planner(&[
        "export",
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--tp",
        "2",
        "--framework",
        "deepspeed",
        "--format",
        "megatron",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("priced as deepspeed"), "{}", stderr(&o));
}

/// Megatron asserts `--moe-layer-freq`'s pattern has one entry per layer. planner's expert
/// layers are every 4th counting from 1 (layers 3, 7, …, 27 of 30): seven `[0,0,0,1]` groups
/// then the two dense layers left, 30 entries; an `every` that divides the layers needs no
/// tail, and every layer an expert layer is the integer 1.
#[test]
fn moe_layer_freq_has_one_entry_per_layer() {
    use planner::spec::launch::megatron::moe_layer_freq;
    assert_eq!(moe_layer_freq(4, 30), "([0]*3+[1])*7+[0]*2");
    assert_eq!(moe_layer_freq(2, 32), "([0]*1+[1])*16");
    assert_eq!(moe_layer_freq(1, 30), "1");
}

/// What Megatron-LM's `validate_args` asserts is refused at export, naming the field: ZeRO-3
/// (`--use-torch-fsdp2`) with a tied head or fp16, and experts in fp16 (grouped GEMM and
/// expert parallelism are bf16 only). The distributed optimizer overlapping its reduction
/// also overlaps the weights' all-gather, as priced (`--overlap-param-gather`).
#[test]
fn megatron_export_refuses_what_validate_args_asserts() {
    let export = |args: &[&str]| planner(&[&["export", "--format", "megatron"][..], args].concat());
    for (args, needle) in [
        (
            &["--model", "gpt-1.7b", "--cluster", "a100x8", "--zero", "3"][..],
            "`tied_embeddings`: true with ZeRO-3",
        ),
        (
            &[
                "--model",
                "llama3-8b",
                "--cluster",
                "h100x8",
                "--zero",
                "3",
                "--dtype",
                "fp16",
            ],
            "`dtype`: fp16 with ZeRO-3",
        ),
        (
            &[
                "--model",
                "mixtral-8x7b",
                "--cluster",
                "h100x8",
                "--ep",
                "2",
                "--dtype",
                "fp16",
            ],
            "`dtype`: fp16 with experts",
        ),
    ] {
        let o = export(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    let o = export(&[
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--zero",
        "1",
        "--overlap-grad-reduce",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("--overlap-grad-reduce") && text.contains("--overlap-param-gather"),
        "{text}"
    );
    assert!(!text.contains("CUDA_DEVICE_MAX_CONNECTIONS"), "{text}");
    // TP needs CUDA_DEVICE_MAX_CONNECTIONS=1; FSDP2 (an untied Llama at ZeRO-3) refuses it.
    for (zero, needle) in [
        ("1", "CUDA_DEVICE_MAX_CONNECTIONS=1"),
        ("3", "CUDA_DEVICE_MAX_CONNECTIONS unset or other than 1"),
    ] {
        let o = export(&[
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--tp",
            "2",
            "--zero",
            zero,
        ]);
        assert!(stdout(&o).contains(needle), "{}{}", stdout(&o), stderr(&o));
    }
    // Megatron-LM 2021 asserted neither: its launch header says nothing of it.
    let o = export(&[
        "--model",
        "gpt-18b",
        "--cluster",
        "a100x8",
        "--tp",
        "8",
        "--megatron-version",
        "2021",
        "--attention",
        "unfused",
        "--tp-overlap",
        "none",
        "--no-gradient-accumulation-fusion",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("CUDA_DEVICE_MAX_CONNECTIONS"),
        "{}",
        stdout(&o)
    );
    // A plan priced past the device's memory is written with a warning, not silently:
    // GPT-3 at tp 4, pp 8 on 64 A100s is priced at 121 GiB.
    let o = export(&[
        "--model",
        "gpt3-175b",
        "--cluster",
        "a100-80g-x1024",
        "--gpus",
        "64",
        "--tp",
        "4",
        "--pp",
        "8",
        "--global-batch",
        "512",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("above the 80.0 GiB the device offers: it will run out of memory"),
        "{}",
        stderr(&o)
    );
}

/// The distributed optimizer overlapping its reduction without `--overlap-param-gather` is
/// priced as exported (weights gathered hidden) but warned: Megatron then gathers them
/// exposed after the optimizer step.
#[test]
fn megatron_distributed_optimizer_without_param_gather_is_warned() {
    let m = load_model("llama3-8b").unwrap();
    let base = "--tensor-model-parallel-size 2 --micro-batch-size 1 --bf16";
    let warned = |extra: &str| {
        from_megatron(&format!("{base} {extra}"), &m, 8)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("no --overlap-param-gather"))
    };
    assert!(warned("--use-distributed-optimizer --overlap-grad-reduce"));
    assert!(!warned(
        "--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather"
    ));
}

/// `--expert-tensor-parallel-size` on a dense model changes nothing in Megatron (its
/// arguments only default it): read with a warning, not refused. With the `alltoall_seq`
/// dispatcher and an expert TP size unlike tp, Megatron-Core's `TransformerConfig` raises:
/// refused.
#[test]
fn megatron_expert_tp_argument_is_read_as_megatron_reads_it() {
    let dense = load_model("llama3-8b").unwrap();
    let args = "--tensor-model-parallel-size 2 --expert-tensor-parallel-size 1 \
                --micro-batch-size 1 --global-batch-size 8 --seq-length 8192 --bf16";
    let parsed = from_megatron(args, &dense, 8).unwrap();
    assert_eq!(parsed.plan.etp, None);
    assert!(
        parsed
            .warnings
            .iter()
            .any(|w| w.contains("the model has no experts; ignored")),
        "{:?}",
        parsed.warnings
    );
    let mixtral = load_model("mixtral-8x7b").unwrap();
    let moe = "--tensor-model-parallel-size 2 --sequence-parallel --expert-model-parallel-size 8 \
               --expert-tensor-parallel-size 1 --micro-batch-size 1 --global-batch-size 8 \
               --seq-length 4096 --bf16";
    assert_eq!(from_megatron(moe, &mixtral, 8).unwrap().plan.etp, Some(1));
    let seq = format!("{moe} --moe-token-dispatcher-type alltoall_seq");
    let e = from_megatron(&seq, &mixtral, 8).unwrap_err().to_string();
    assert!(
        e.contains("alltoall_seq with --expert-tensor-parallel-size"),
        "{e}"
    );
}

/// Qwen3-30B-A3B's head size (128 on hidden 2048 / 32 heads = 64) and QK-norm are written as
/// Megatron-Core spells them (`--kv-channels 128`, `--qk-layernorm`, as slime's Qwen3
/// arguments do) and read back; arguments that leave either out describe another model.
#[test]
fn megatron_writes_and_reads_the_head_size_and_qk_norm() {
    let qwen = load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/qwen3-30b-a3b.json"
    ))
    .unwrap();
    let plan = Plan {
        ep: 8,
        etp: Some(1),
        sequence_parallel: true,
        ..Plan::new(32, 2, 1, 1, 1024, 4096)
    };
    let text = export(&qwen, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    for line in [
        "--kv-channels 128 \\",
        "--qk-layernorm \\",
        "--moe-ffn-hidden-size 768 \\",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert_eq!(from_megatron(&text, &qwen, 64).unwrap().plan, plan);
    for (drop, field) in [
        ("--kv-channels 128 \\\n", "--kv-channels"),
        ("--qk-layernorm \\\n", "--qk-layernorm"),
    ] {
        let e = from_megatron(&text.replace(drop, ""), &qwen, 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
    }
}

/// fp32 training (no --bf16/--fp16) with no kernel named: Megatron-Core's auto backend falls
/// back to the unfused attention, which is what is priced (flash had been, which takes 16-bit
/// tensors only); `estimate --dtype fp32` defaults to it too, and flash is refused.
#[test]
fn fp32_attention_is_the_unfused_one() {
    let gpt = load_model("gpt-1.7b").unwrap();
    let args = "--micro-batch-size 1 --global-batch-size 64 --seq-length 2048";
    let parsed = from_megatron(args, &gpt, 8).unwrap();
    assert_eq!(
        (parsed.plan.dtype, parsed.plan.attention),
        (Dtype::Fp32, AttentionImpl::Unfused)
    );
    let est = |extra: &[&str]| {
        planner(
            &[
                &[
                    "estimate",
                    "--model",
                    "gpt-1.7b",
                    "--cluster",
                    "a100x8",
                    "--dtype",
                    "fp32",
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    let o = est(&["--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["plan"]["attention"], "unfused", "{v}");
    let o = est(&["--attention", "flash"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("attention=flash with dtype=fp32"),
        "{}",
        stderr(&o)
    );
    // TF32 GEMMs (`--dtype tf32`, which the command line had refused) on the same fp32
    // tensors: unfused attention too, and the A100's 156 TF32 TFLOP/s against 19.5 fp32.
    let o = planner(&[
        "estimate",
        "--model",
        "gpt-1.7b",
        "--cluster",
        "a100x8",
        "--dtype",
        "tf32",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (&t["plan"]["dtype"], &t["plan"]["attention"]),
        (&serde_json::json!("tf32"), &serde_json::json!("unfused"))
    );
    let (fp32, tf32) = (
        v["step_time_s"].as_f64().unwrap(),
        t["step_time_s"].as_f64().unwrap(),
    );
    assert!(tf32 < fp32 / 3.0, "tf32 {tf32} s, fp32 {fp32} s");
}

/// `--rotary-base` is the model's (Megatron's default 10000 when absent), checked with the
/// other shape arguments: Llama 3's arguments without it describe another model. A YAML head
/// size equal to hidden/heads needs no `--kv-channels`. Experts in fp32 cannot be exported:
/// Megatron's grouped expert GEMM runs bf16 only.
#[test]
fn megatron_rotary_base_head_size_and_expert_dtype() {
    let llama = load_model("llama3-8b").unwrap();
    let plan = Plan::new(4, 2, 1, 1, 8, 8192);
    let text = export(&llama, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    assert!(from_megatron(&text, &llama, 8).is_ok());
    let e = from_megatron(&text.replace("--rotary-base 500000 \\\n", ""), &llama, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`--rotary-base`: absent"), "{e}");
    let e = from_megatron(&text.replace("500000", "10000"), &llama, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rope_theta: 500000"), "{e}");
    let same = ModelSpec {
        head_size: Some(128),
        ..llama.clone()
    };
    assert!(from_megatron(&text, &same, 8).is_ok());
    let mixtral = load_model("mixtral-8x7b").unwrap();
    let fp32 = Plan {
        dtype: Dtype::Fp32,
        attention: AttentionImpl::Unfused,
        ep: 4,
        ..Plan::new(8, 1, 1, 1, 64, 4096)
    };
    let e = export(
        &mixtral,
        &fp32,
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap_err();
    assert!(e.to_string().contains("fp32 with experts"), "{e}");
}

/// A sliding window exports as Transformer Engine's (left, right) pair, W − 1 keys before
/// each query and none after, with the layer pattern as `--window-attn-skip-freq`: n (gpt-oss
/// alternates: 2) or the first layers full as a list. The arguments read back to the plan;
/// without the window they describe another model, and are refused naming `--window-size`.
/// Where the window is no shorter than the sequence, a plan with context parallelism writes
/// none (Transformer Engine's ring asserts on any window; the attention is the same).
#[test]
fn megatron_writes_and_reads_the_sliding_window() {
    use planner::spec::{SlidingWindow, WindowLayers};
    let mut m = load_model("llama3-8b").unwrap();
    let plan = Plan::new(4, 2, 1, 1, 64, 8192);
    let text_for = |m: &ModelSpec, plan: &Plan| {
        export(m, plan, LaunchFormat::Megatron(MegatronVersion::Core))
            .unwrap()
            .text
    };
    for (layers, pattern) in [
        (WindowLayers::All, None),
        (WindowLayers::FullEvery(2), Some("2")),
        (WindowLayers::From(30), Some("([0]*30+[1]*2)")),
    ] {
        m.attention_window = Some(SlidingWindow { size: 128, layers });
        let text = text_for(&m, &plan);
        let args = arg_map(&text);
        assert_eq!(args["--window-size"], "127,0", "{text}");
        assert_eq!(
            args.get("--window-attn-skip-freq").map(String::as_str),
            pattern,
            "{text}"
        );
        assert_eq!(from_megatron(&text, &m, 8).unwrap().plan, plan);
        let e = from_megatron(&text.replace("--window-size 127,0 \\\n", ""), &m, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`--window-size`"), "{e}");
        // QA: Megatron-Bridge writes Hugging Face's window 128 as (128, 0), one key more; it
        // reads back as the same model, said; two keys more is another model.
        let bridge = from_megatron(
            &text.replace("--window-size 127,0", "--window-size 128,0"),
            &m,
            8,
        )
        .unwrap();
        assert_eq!(bridge.plan, plan);
        assert!(
            bridge
                .warnings
                .iter()
                .any(|w| w.starts_with("--window-size 128,0 is 129 keys")),
            "{:?}",
            bridge.warnings
        );
        let e = from_megatron(
            &text.replace("--window-size 127,0", "--window-size 129,0"),
            &m,
            8,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`--window-size`"), "{e}");
    }
    // Megatron-LM's other spellings of the same layers: any list expression it evaluates,
    // and a frequency past the layers (no layer full). A 0 frequency (Megatron divides by
    // it), a list shorter than the layers, or a pattern planner does not price are refused.
    m.attention_window = Some(SlidingWindow {
        size: 128,
        layers: WindowLayers::FullEvery(2),
    });
    let text = text_for(&m, &plan);
    let with_freq = |freq: &str| {
        text.replace(
            "--window-attn-skip-freq 2 \\\n",
            &format!("--window-attn-skip-freq '{freq}' \\\n"),
        )
    };
    assert_eq!(
        from_megatron(&with_freq("[1,0]*16"), &m, 8).unwrap().plan,
        plan
    );
    assert_eq!(
        from_megatron(&with_freq("16 * [1, 0]"), &m, 8)
            .unwrap()
            .plan,
        plan
    );
    for (freq, says) in [
        ("0", "modulo"),
        ("([1,0]*15)", "30 entries for 32 layers"),
        ("[1,0,0,1]*8", "does not price"),
        ("[1,2]*16", "other than 0 and 1"),
        ("abc", "not a whole number"),
        ("[1,0]*16 + 1", "not a whole number"),
    ] {
        let e = from_megatron(&with_freq(freq), &m, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{freq}: {e}");
    }
    m.attention_window = Some(SlidingWindow {
        size: 128,
        layers: WindowLayers::All,
    });
    for freq in ["33", "([0]*0+[1]*32)", "[1]*40"] {
        assert_eq!(
            from_megatron(&with_freq(freq), &m, 8).unwrap().plan,
            plan,
            "{freq}"
        );
    }
    m.attention_window = Some(SlidingWindow {
        size: 8192,
        layers: WindowLayers::All,
    });
    let cp = Plan {
        cp: 2,
        ..Plan::new(2, 2, 1, 1, 64, 8192)
    };
    let text = text_for(&m, &cp);
    assert!(!text.contains("--window-size"), "{text}");
    assert_eq!(from_megatron(&text, &m, 8).unwrap().plan, cp);
    assert!(text_for(&m, &plan).contains("--window-size 8191,0"));
}

/// `--transformer-impl local` builds Megatron-Core's own `DotProductAttention`: the plan is
/// priced unfused whatever the kernel flags say (it had been ignored, and flash priced); an
/// unknown implementation is refused naming the argument.
#[test]
fn megatron_local_transformer_impl_is_the_unfused_attention() {
    let m = load_model("llama3-8b").unwrap();
    let plan = Plan::new(4, 2, 1, 1, 64, 8192);
    let text = export(&m, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    assert_eq!(
        from_megatron(&text, &m, 8).unwrap().plan.attention,
        AttentionImpl::Flash
    );
    let local = from_megatron(&format!("{text} --transformer-impl local"), &m, 8).unwrap();
    assert_eq!(local.plan.attention, AttentionImpl::Unfused);
    let e = from_megatron(&format!("{text} --transformer-impl bogus"), &m, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`--transformer-impl`"), "{e}");
}

/// gpt-oss exports as Megatron-Bridge's `GPTOSSProvider` configures it: biases on every
/// linear (Megatron's default; its router and grouped experts take them with
/// `add_bias_linear`), learnable attention sinks, the clamped quick-GELU GLU with its +1
/// offset, a 128-key window (127 before each query) on every other layer. The arguments
/// read back to the plan; without the activation's arguments they describe another model.
/// A model with biases on some linears only has no Megatron switch, and is refused.
#[test]
fn megatron_writes_and_reads_gpt_oss() {
    let (m, plan) = gpt_oss_20b();
    let text = export(&m, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    let args = arg_map(&text);
    for (k, v) in [
        ("--softmax-type", "learnable"),
        ("--quick-geglu", ""),
        ("--glu-linear-offset", "1.0"),
        ("--activation-func-clamp-value", "7.0"),
        ("--window-size", "127,0"),
        ("--window-attn-skip-freq", "2"),
        ("--kv-channels", "64"),
        ("--num-experts", "32"),
        ("--moe-router-topk", "4"),
    ] {
        assert_eq!(args.get(k).map(String::as_str), Some(v), "{k} in\n{text}");
    }
    for absent in ["--swiglu", "--disable-bias-linear", "--add-qkv-bias"] {
        assert!(!args.contains_key(absent), "{absent} in\n{text}");
    }
    assert_eq!(from_megatron(&text, &m, 8).unwrap().plan, plan);
    for (drop, field) in [
        ("--quick-geglu \\\n", "--quick-geglu"),
        ("--softmax-type learnable \\\n", "--softmax-type"),
        (
            "--activation-func-clamp-value 7.0 \\\n",
            "--activation-func-clamp-value",
        ),
    ] {
        let e = from_megatron(&text.replace(drop, ""), &m, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
    }
    let mut some = load_model("llama3-8b").unwrap();
    (some.qkv_bias, some.proj_bias) = (true, true);
    let e = export(
        &some,
        &Plan::new(4, 2, 1, 1, 64, 8192),
        LaunchFormat::Megatron(MegatronVersion::Core),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("biases every linear, none, or Q/K/V only"),
        "{e}"
    );
}

/// gpt-oss-20b (the Hub config) on 8 GPUs with its 32 experts over EP 8, 8k sequences.
fn gpt_oss_20b() -> (ModelSpec, Plan) {
    let m = load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/gpt-oss-20b.json"
    ))
    .unwrap();
    let plan = Plan {
        ep: 8,
        ..Plan::new(8, 1, 1, 1, 64, 8192)
    };
    (m, plan)
}

/// Megatron-Core biases the router with the other linears (`add_bias_linear`): gpt-oss with
/// a router that has no bias is another model, refused in the export and in the arguments
/// read; `--window-attn-skip-freq 1` (every layer full) is named as the argument at fault;
/// and `suggest --export` for a model the format cannot write says why (it had said "0
/// plans enumerated", exit 1).
#[test]
fn megatron_router_bias_skip_freq_and_unwritable_models() {
    let (m, plan) = gpt_oss_20b();
    let core = LaunchFormat::Megatron(MegatronVersion::Core);
    let text = export(&m, &plan, core).unwrap().text;
    let mut plain_router = m.clone();
    plain_router.moe.as_mut().unwrap().router_bias = false;
    let e = export(&plain_router, &plan, core).unwrap_err().to_string();
    assert!(e.contains("`moe.router_bias`"), "{e}");
    let e = from_megatron(&text, &plain_router, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("router bias"), "{e}");
    let every_full = text.replace("--window-attn-skip-freq 2", "--window-attn-skip-freq 1");
    let e = from_megatron(&every_full, &m, 8).unwrap_err().to_string();
    assert!(
        e.contains("`--window-attn-skip-freq`: a window on no layer"),
        "{e}"
    );
    // With gpt-oss's activation Megatron-LM's default MLP is 4h (its SwiGLU default holds
    // under --swiglu only): a width equal to the SwiGLU default is written out.
    let mut clamped = load_model("llama3-8b").unwrap();
    (clamped.ffn_hidden, clamped.swiglu_limit) = (10880, Some(7.0));
    let text = export(&clamped, &Plan::new(4, 2, 1, 1, 64, 8192), core)
        .unwrap()
        .text;
    assert_eq!(arg_map(&text)["--ffn-hidden-size"], "10880", "{text}");
    let mut some = load_model("llama3-8b").unwrap();
    (some.qkv_bias, some.proj_bias) = (true, true);
    let dir = std::env::temp_dir().join(format!("planner-oss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = dir.join("some.yaml");
    std::fs::write(&yaml, some.to_yaml(&[])).unwrap();
    let o = planner(&[
        "suggest",
        "--model",
        yaml.to_str().unwrap(),
        "--cluster",
        "h100x8",
        "--seq-len",
        "2048",
        "--export",
        "megatron",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--export can write no plan of"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Shared experts and dense layers first (Mixtral's shape with DeepSeek's layout: layers 0–2
/// dense, a 14336-wide shared MLP) export as DeepSeek-V3's Megatron-LM recipes write them,
/// `--moe-layer-freq ([0]*3+[1]*29)` and `--moe-shared-expert-intermediate-size`, and read
/// back against the model: experts moved to other layers of the same count warn, another
/// count or another shared width is refused; a shared gate has no Megatron-LM flag, which the
/// export says.
#[test]
fn shared_experts_and_dense_first_layers_round_trip_through_megatron() {
    let mut m = load_model("mixtral-8x7b").unwrap();
    let e = m.moe.as_mut().unwrap();
    (e.first_dense, e.shared_ffn_hidden) = (3, 14336);
    let plan = Plan {
        ep: 8,
        ..Plan::new(8, 1, 1, 1, 64, 4096)
    };
    let text = export(&m, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
        .unwrap()
        .text;
    let args = arg_map(&text);
    assert_eq!(args["--moe-layer-freq"], "([0]*3+[1]*29)");
    assert_eq!(args["--moe-shared-expert-intermediate-size"], "14336");
    let parsed = from_megatron(&text, &m, 8).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        !parsed.warnings.iter().any(|w| w.contains("--moe")),
        "{:?}",
        parsed.warnings
    );
    let moved = text.replace("([0]*3+[1]*29)", "([1]*29+[0]*3)");
    let parsed = from_megatron(&moved, &m, 8).unwrap();
    assert!(
        parsed.warnings.iter().any(|w| w.contains("same count")),
        "{:?}",
        parsed.warnings
    );
    for (from, to, needle) in [
        ("([0]*3+[1]*29)", "1", "--moe-layer-freq"),
        ("([0]*3+[1]*29)", "([0]*3+[1]*28)", "--moe-layer-freq"),
        (
            "--moe-shared-expert-intermediate-size 14336",
            "",
            "moe.shared_ffn_hidden",
        ),
    ] {
        let e = from_megatron(&text.replace(from, to), &m, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{to}: {e}");
    }
    m.moe.as_mut().unwrap().shared_gate = true;
    let out = export(&m, &plan, LaunchFormat::Megatron(MegatronVersion::Core)).unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("moe_shared_expert_gate")),
        "{:?}",
        out.warnings
    );
}

/// DeepSeek-V3 exports as its Megatron-LM recipes launch it: `--multi-latent-attention` with
/// every size written (Megatron's defaults are not DeepSeek's: a 32-rank key/value latent),
/// `--qk-layernorm` for the latents' norms, experts from layer 3 with a 2048-wide shared
/// expert; it reads back against the model, a wrong latent rank is refused, and a launch
/// leaving `--kv-lora-rank` out is read at Megatron's default, 32.
#[test]
fn deepseek_v3_round_trips_its_latent_attention_through_megatron() {
    let m = load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/deepseek-v3.json"
    ))
    .unwrap();
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
    let args = arg_map(&text);
    for (k, v) in [
        ("--multi-latent-attention", ""),
        ("--qk-layernorm", ""),
        ("--q-lora-rank", "1536"),
        ("--kv-lora-rank", "512"),
        ("--qk-head-dim", "128"),
        ("--qk-pos-emb-head-dim", "64"),
        ("--v-head-dim", "128"),
        ("--moe-layer-freq", "([0]*3+[1]*58)"),
        ("--moe-shared-expert-intermediate-size", "2048"),
        ("--moe-ffn-hidden-size", "2048"),
    ] {
        assert_eq!(args.get(k).map(String::as_str), Some(v), "{k}\n{text}");
    }
    assert_eq!(args["--kv-channels"], "128", "{text}");
    // Dense layers first with experts every other layer after them: layers 3, 5, 7 of 8.
    let mut sparse = load_model("mixtral-8x7b").unwrap();
    (sparse.layers, sparse.moe.as_mut().unwrap().every) = (8, 2);
    sparse.moe.as_mut().unwrap().first_dense = 3;
    assert_eq!(
        planner::spec::launch::megatron::moe_layer_pattern(&sparse),
        "([0]*3+[1]*1+[0]*1+[1]*1+[0]*1+[1]*1)"
    );
    from_megatron(&text, &m, 32).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (from, to) in [
        ("--kv-lora-rank 512", "--kv-lora-rank 256"),
        ("--kv-lora-rank 512", ""),
        ("--multi-latent-attention", ""),
    ] {
        let e = from_megatron(&text.replace(from, to), &m, 32)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kv-lora-rank") || e.contains("latent"),
            "{to}: {e}"
        );
    }
    let e = from_megatron(&text.replace("--kv-lora-rank 512", ""), &m, 32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent (Megatron-LM's default is 32)"), "{e}");
    let e = from_megatron(&text.replace("([0]*3+[1]*58)", "([0]*3+[1]*58"), &m, 32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a whole number"), "{e}");
    // Latent-attention arguments describe another model than a Llama, shape given or not.
    let llama = load_model("llama3-8b").unwrap();
    let e = from_megatron(
        "--tensor-model-parallel-size 1 --micro-batch-size 1 --multi-latent-attention \
         --kv-lora-rank 512",
        &llama,
        8,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not have"), "{e}");
}

/// Arguments that give only the layout say nothing of the head size: a model whose heads are
/// set apart from hidden/heads (Qwen3-30B-A3B: 32 of 128 on 2048) is not refused for an absent
/// `--kv-channels` unless the arguments describe the shape, nor one with latent attention for
/// an absent `--multi-latent-attention`.
#[test]
fn layout_only_arguments_leave_the_head_size_to_the_model() {
    let m = load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/qwen3-30b-a3b.json"
    ))
    .unwrap();
    let args = "--tensor-model-parallel-size 2 --sequence-parallel \
                --expert-model-parallel-size 4 --micro-batch-size 1 --global-batch-size 64 \
                --seq-length 4096 --bf16";
    from_megatron(args, &m, 8).unwrap_or_else(|e| panic!("{e}"));
    let shaped = format!("{args} --num-layers 48 --hidden-size 2048");
    let e = from_megatron(&shaped, &m, 8).unwrap_err().to_string();
    assert!(e.contains("--kv-channels"), "{e}");
    // Nor is latent attention (DeepSeek-V3) refused for an absent --multi-latent-attention.
    let ds = load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/deepseek-v3.json"
    ))
    .unwrap();
    from_megatron(args, &ds, 8).unwrap_or_else(|e| panic!("{e}"));
    let e = from_megatron(&format!("{args} --num-layers 61"), &ds, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--multi-latent-attention"), "{e}");
}

/// QA: `--fp16 --fp8-format hybrid` came back from an export as `--bf16` without a word. FP8
/// GEMMs beside fp16 or fp32 weights are priced as FP8 training with bf16 outside the GEMMs,
/// and the import says so; with `--bf16` nothing is said.
#[test]
fn fp8_beside_fp16_or_fp32_is_priced_as_bf16_and_says_so() {
    let m = load_model("llama3-8b").unwrap();
    let parsed = |args: &str| from_megatron(args, &m, 8).unwrap();
    for (args, needle) in [
        (
            "--micro-batch-size 1 --fp16 --fp8-format hybrid",
            "with --fp16",
        ),
        (
            "--micro-batch-size 1 --fp8-format hybrid",
            "neither --bf16 nor --fp16",
        ),
    ] {
        let p = parsed(args);
        assert_eq!(p.plan.dtype, Dtype::Fp8);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains(needle) && w.contains("an export writes --bf16")),
            "{args}: {:?}",
            p.warnings
        );
    }
    let p = parsed("--micro-batch-size 1 --bf16 --fp8-format hybrid");
    assert!(
        !p.warnings.iter().any(|w| w.contains("--fp8-format with")),
        "{:?}",
        p.warnings
    );
}

/// `--fp8-recipe`: tensorwise (current scaling) and delayed are priced, each as itself;
/// block scaling (mxfp8, blockwise) is refused as not priced, a name Megatron-LM lacks as
/// such; delayed scaling's amax-history settings change no cast and are ignored; without
/// `--fp8-format` Megatron trains in 16 bits and the recipe means nothing.
#[test]
fn megatron_fp8_recipes_are_read_or_refused() {
    use planner::spec::Fp8Recipe;
    let m = load_model("llama3-8b").unwrap();
    let base = "--micro-batch-size 1 --global-batch-size 8 --bf16";
    let recipe = |extra: &str| {
        let p = from_megatron(&format!("{base} {extra}"), &m, 8).unwrap();
        assert!(
            !p.warnings
                .iter()
                .any(|w| w.contains("--fp8-recipe") || w.contains("--fp8-format")),
            "{extra}: {:?}",
            p.warnings
        );
        p.plan.fp8_recipe
    };
    assert_eq!(recipe("--fp8-format hybrid"), Fp8Recipe::Delayed);
    assert_eq!(
        recipe(
            "--fp8-format hybrid --fp8-recipe delayed --fp8-amax-history-len 1024 --fp8-amax-compute-algo max --fp8-margin 0"
        ),
        Fp8Recipe::Delayed
    );
    assert_eq!(
        recipe("--fp8-format e4m3 --fp8-recipe tensorwise"),
        Fp8Recipe::Tensorwise
    );
    // Without --fp8-format Megatron ignores the recipe: priced so, and said (QA).
    let p = from_megatron(&format!("{base} --fp8-recipe tensorwise"), &m, 8).unwrap();
    assert_eq!(p.plan.fp8_recipe, Fp8Recipe::Delayed);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.starts_with("--fp8-recipe tensorwise without --fp8-format")),
        "{:?}",
        p.warnings
    );
    let err = |extra: &str| {
        from_megatron(&format!("{base} --fp8-format hybrid {extra}"), &m, 8)
            .unwrap_err()
            .to_string()
    };
    let e = err("--fp8-recipe mxfp8");
    assert!(
        e.contains("`--fp8-recipe`: `mxfp8`: block-scaled FP8") && e.contains("is not priced"),
        "{e}"
    );
    let e = err("--fp8-recipe bogus");
    assert!(
        e.contains("Megatron-LM takes tensorwise, delayed, mxfp8 or blockwise"),
        "{e}"
    );
}

/// Megatron-Core's fused cross-entropy: Transformer Engine's kernel (`te`) is priced; the
/// native one is priced unfused and said; an implementation Megatron lacks is refused; the
/// implementation alone changes nothing.
#[test]
fn megatron_loss_fusion_is_read_by_implementation() {
    let m = load_model("llama3-8b").unwrap();
    let base = "--micro-batch-size 1 --global-batch-size 8 --bf16";
    let parsed = |extra: &str| from_megatron(&format!("{base} {extra}"), &m, 8).unwrap();
    let te = parsed("--cross-entropy-loss-fusion --cross-entropy-fusion-impl te");
    assert!(te.plan.loss_fusion);
    let native = parsed("--cross-entropy-loss-fusion");
    assert!(!native.plan.loss_fusion);
    assert!(
        native
            .warnings
            .iter()
            .any(|w| w.starts_with("--cross-entropy-loss-fusion with the native implementation")),
        "{:?}",
        native.warnings
    );
    let alone = parsed("--cross-entropy-fusion-impl te");
    assert!(!alone.plan.loss_fusion);
    assert!(
        alone
            .warnings
            .iter()
            .any(|w| w
                .starts_with("--cross-entropy-fusion-impl te without --cross-entropy-loss-fusion")),
        "{:?}",
        alone.warnings
    );
    let e = from_megatron(
        &format!("{base} --cross-entropy-loss-fusion --cross-entropy-fusion-impl triton"),
        &m,
        8,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`triton`: Megatron-LM takes native or te"),
        "{e}"
    );
}

/// QA: `--fp8-param-gather` refused inside `--megatron-args` had named planner's `--dtype`
/// and `--zero`, which cannot be given beside them; the fixes now name Megatron's arguments.
#[test]
fn fp8_param_gather_refusals_in_megatron_arguments_name_megatron_arguments() {
    let m = load_model("llama3-8b").unwrap();
    let err = |args: &str| from_megatron(args, &m, 8).unwrap_err().to_string();
    let e = err("--micro-batch-size 1 --bf16 --fp8-param-gather --use-distributed-optimizer");
    assert!(e.contains("add --fp8-format hybrid"), "{e}");
    assert!(!e.contains("--dtype"), "{e}");
    let e = err("--micro-batch-size 1 --bf16 --fp8-format hybrid --fp8-param-gather");
    assert!(e.contains("add --use-distributed-optimizer"), "{e}");
    assert!(!e.contains("--zero"), "{e}");
    let ok = "--micro-batch-size 1 --bf16 --fp8-format hybrid --fp8-param-gather \
              --use-distributed-optimizer";
    assert!(from_megatron(ok, &m, 8).unwrap().plan.fp8_param_gather);
}

/// A Megatron-LM 2021 plan (scatter/gather pipeline sends, legacy Megatron's own) exports
/// to DeepSpeed, which sends its own way: the knob had made the format's framework refuse it.
#[test]
fn a_legacy_megatron_plan_exports_to_deepspeed() {
    let target = ["--model", "gpt-1.7b", "--cluster", "a100x8"];
    let plan = [
        "--tp",
        "2",
        "--pp",
        "2",
        "--micro-batch",
        "1",
        "--global-batch",
        "64",
        "--dtype",
        "fp16",
        "--p2p-scatter-gather",
    ];
    let o = planner(&[&["export"][..], &target, &plan, &["--format", "deepspeed"]].concat());
    // Priced for DeepSpeed (the format's framework), the Megatron-only knob is refused…
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("p2p_scatter_gather"), "{}", stderr(&o));
    // …but priced for Megatron, it is written, with DeepSpeed's own sends.
    let o = planner(
        &[
            &["export"][..],
            &target,
            &plan,
            &["--framework", "megatron", "--format", "deepspeed"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"train_micro_batch_size_per_gpu\": 1"));
}

/// Megatron-LM pads the vocabulary to a multiple of `--make-vocab-size-divisible-by` · tp
/// (128 by default), which the cost model prices (`Framework::vocab_rows`): the multiple is
/// read into the plan (`Plan::vocab_divisor`) and priced, another vocabulary is read with a
/// warning that says what is priced instead, and the default says nothing. The export header
/// names the padded size: GPT-2's 50,257 at tp 8 is ⌈50,257 / 1,024⌉·1,024 = 51,200 by
/// default and ⌈50,257 / 512⌉·512 = 50,688 with 64.
#[test]
fn megatron_vocabulary_arguments_say_what_is_priced() {
    let m = load_model("gpt-39b").unwrap();
    let base = "--num-layers 48 --tensor-model-parallel-size 8 --micro-batch-size 1 --fp16";
    let parsed = |extra: &str| {
        from_megatron(&format!("{base} {extra}"), &m, 512)
            .unwrap_or_else(|e| panic!("{extra}: {e}"))
    };
    let p = parsed("--vocab-size 50257 --make-vocab-size-divisible-by 64");
    assert!(
        p.warnings.contains(&"--vocab-size 50257: the model's vocabulary, 51200, is priced instead (padded as Megatron-LM pads it, to a multiple of --make-vocab-size-divisible-by·tp)".to_string()),
        "{:?}",
        p.warnings
    );
    assert!(
        p.warnings.iter().all(|w| !w.contains("divisible-by 64")),
        "{:?}",
        p.warnings
    );
    assert_eq!(p.plan.vocab_divisor, 64);
    let p = parsed("--vocab-size 51200 --make-vocab-size-divisible-by 128");
    assert!(
        p.warnings.iter().all(|w| !w.contains("vocab")),
        "{:?}",
        p.warnings
    );
    assert_eq!(p.plan.vocab_divisor, 128);
    let gpt2 = load_model("gpt2-xl").unwrap();
    let header = |divisor: u64| {
        let plan = Plan {
            vocab_divisor: divisor,
            ..Plan::new(1, 8, 1, 1, 8, 1024)
        };
        export(&gpt2, &plan, LaunchFormat::Megatron(MegatronVersion::Core))
            .unwrap()
            .text
    };
    let text = header(128);
    assert!(text.contains("pads it to 51200, as priced"), "{text}");
    assert!(!text.contains("--make-vocab-size-divisible-by"), "{text}");
    let text = header(64);
    assert!(text.contains("pads it to 50688, as priced"), "{text}");
    assert!(
        text.contains("--make-vocab-size-divisible-by 64 \\"),
        "{text}"
    );
}

/// `--make-vocab-size-divisible-by` is priced, saved and read back: GPT-2 XL at tp 1 holds
/// 50,304 vocabulary rows by default (393 · 128) and 50,257 with 1, 47 fewer of h = 1,600:
/// 75,200 parameters at 18 bytes each without ZeRO (bf16 weight 2, fp32 gradient 4, master
/// weight and two moments 12) = 1,353,600 bytes, plus at least the saved fp32 softmax of the
/// 47 logit columns over 1,024 tokens (4 · 47 · 1,024 = 192,512): more than 1,546,112 bytes
/// fewer. torchtitan, which does not pad, refuses the flag.
#[test]
fn vocabulary_padding_is_priced_saved_and_read_back() {
    let dir = std::env::temp_dir().join(format!("planner-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("plan.json").display().to_string();
    let base = ["estimate", "--model", "gpt2-xl", "--cluster", "a100x8"];
    let memory = |extra: &[&str]| -> f64 {
        let out = run_ok(&[&base[..], extra, &["--format", "json"]].concat());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["memory_gib_per_gpu"].as_f64().unwrap() * (1u64 << 30) as f64
    };
    let padded = memory(&["--global-batch", "8"]);
    let exact = memory(&[
        "--global-batch",
        "8",
        "--make-vocab-size-divisible-by",
        "1",
        "--save-plan",
        &saved,
    ]);
    let fewer = padded - exact;
    assert!((1_546_112.0..2_000_000.0).contains(&fewer), "{fewer}");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("\"make_vocab_size_divisible_by\": 1"),
        "{text}"
    );
    assert_eq!(memory(&["--plan", &saved]), exact);
    // Bounded as the plan file bounds it (QA: 0 had been exported for Megatron to divide by,
    // and 2^63 had overflowed the padding and panicked).
    for (v, why) in [
        ("0", "--make-vocab-size-divisible-by 0: must be at least 1"),
        (
            "9223372036854775808",
            "--make-vocab-size-divisible-by 9223372036854775808: implausibly large",
        ),
    ] {
        let o = planner(
            &[
                &base[..],
                &["--tp", "2", "--make-vocab-size-divisible-by", v],
            ]
            .concat(),
        );
        assert_eq!(o.status.code(), Some(2), "{v}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{v}: {}", stderr(&o));
    }
    let o = planner(
        &[
            &base[..],
            &[
                "--framework",
                "torchtitan",
                "--make-vocab-size-divisible-by",
                "64",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "torchtitan builds the embedding and output layer at the vocabulary's own size"
        ),
        "{}",
        stderr(&o)
    );
}

/// The torchtitan export warns that overlap was left out only where it would have changed
/// the price: DDP's step all-reduce (ZeRO-0). FSDP reduce-scatters with each backward either
/// way, and under pipelining after the last one, which nothing overlaps.
#[test]
fn torchtitan_overlap_warning_only_where_overlap_is_priced() {
    let m = load_model("llama3-8b").unwrap();
    let warned = |zero: u8, pp: u64| {
        let mut p = Plan::new(8 / pp, 1, pp, 1, 32, 8192);
        (p.framework, p.zero, p.overlap_grad_reduce) = (Framework::Torchtitan, zero, false);
        export(&m, &p, LaunchFormat::Torchtitan)
            .unwrap_or_else(|e| panic!("zero {zero} pp {pp}: {e}"))
            .warnings
            .iter()
            .any(|w| w.contains("priced without overlap"))
    };
    assert!(warned(0, 1));
    assert!(!warned(2, 1));
    assert!(!warned(3, 1));
    assert!(!warned(2, 2));
    assert!(!warned(3, 2));
}

/// Megatron command lines as scripts write them (QA): a weighted data blend and a batch ramp
/// are one argument each (argparse `nargs="*"`), not stray words; Megatron-Core's
/// `--no-bias-swiglu-fusion` and `--no-rope-fusion` are known (priced fused, warned); and a
/// command line without `--global-batch-size` says that Megatron's default is one
/// micro-batch per step: 1 · dp 1 = 1 sequence at tp 8, pp 1 on 8 GPUs.
#[test]
fn megatron_lists_fusion_switches_and_the_default_batch() {
    let m = load_model("gpt-39b").unwrap();
    let base = "--num-layers 48 --tensor-model-parallel-size 8 --micro-batch-size 1 --bf16";
    let p = from_megatron(
        &format!(
            "{base} --global-batch-size 64 --data-path 0.5 /data/a 0.5 /data/b \
             --no-bias-swiglu-fusion --no-rope-fusion --eod-mask-loss --manual-gc \
             --manual-gc-interval 100 --num-dataset-builder-threads 4 --reset-attention-mask"
        ),
        &m,
        8,
    )
    .unwrap();
    assert_eq!(p.plan.global_batch, 64);
    for w in [
        "--no-bias-swiglu-fusion: not modelled (bias + SwiGLU is priced fused)",
        "--no-rope-fusion: not modelled (the rotary embedding is priced fused)",
        "--reset-attention-mask: not modelled (attention is priced causal over the whole \
         sequence, not masked per document)",
    ] {
        assert!(p.warnings.contains(&w.to_string()), "{w}: {:?}", p.warnings);
    }
    assert!(
        p.warnings.iter().all(|w| !w.contains("global-batch")),
        "{:?}",
        p.warnings
    );
    let e = from_megatron(&format!("{base} --rampup-batch-size 16 16 1000000"), &m, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--rampup-batch-size"), "{e}");
    assert!(!e.contains("stray word"), "{e}");
    // An open quote is the one problem: the arguments before it are not read as missing.
    let e = from_megatron(&format!("{base} --data-path '/a b"), &m, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("close the quote"), "{e}");
    assert!(!e.contains("missing"), "{e}");
    let p = from_megatron(base, &m, 8).unwrap();
    assert_eq!(p.plan.global_batch, 1);
    assert!(
        p.warnings.contains(
            &"no --global-batch-size: priced at Megatron-LM's default, --micro-batch-size · dp = \
              1 · 1 = 1 sequences, one micro-batch per step; add --global-batch-size if the \
              launch sets it elsewhere"
                .to_string()
        ),
        "{:?}",
        p.warnings
    );
}
