//! `Plan`: its checks, labels and the folded counts it prints and reads.

use super::*;

/// The folded counts a label prints read back: runs, single counts, `x` for `×`; a part
/// that is not a count is named.
#[test]
fn folded_counts_read_back() {
    let v = [5, 3, 3, 3, 3, 3, 3, 1];
    assert_eq!(fold_counts(&v, ","), "5,3×6,1");
    assert_eq!(unfold_counts("5,3×6,1").unwrap(), v);
    assert_eq!(unfold_counts("21x2").unwrap(), [21, 21]);
    assert_eq!(unfold_counts(" 4 , 4*2 ").unwrap(), [4, 4, 4]);
    assert_eq!(unfold_counts("12×2 8").unwrap(), [12, 12, 8]);
    assert!(unfold_counts("5,three").unwrap_err().contains("`three`"));
    assert!(unfold_counts("3×0").is_err());
    // An empty entry is an error, not a count dropped: `5,,5x7` had read as 5, 5×7.
    for bad in ["5,,5x7", "5,5x7,", ""] {
        assert!(
            unfold_counts(bad).unwrap_err().contains("empty entry"),
            "{bad}"
        );
    }
}

/// Recomputing part of each stage is a plan only without virtual stages: with vpp > 1 the
/// priced "first r layers of the stage" is no framework's layout (Megatron's block method
/// counts per model chunk), and the closed form and the simulator disagreed on its memory
/// (the chunks then differ, and interleaving keeps more of the first in flight). Every
/// layer recomputed, or none, stays a plan.
#[test]
fn partial_recompute_needs_one_chunk_per_stage() {
    let m = crate::spec::load_model("llama3-70b").unwrap();
    let c = crate::spec::load_cluster("h100-x1024").unwrap();
    let mut p = Plan::new(32, 2, 4, 1, 1024, 8192);
    p.cp = 4;
    p.vpp = 5;
    p.schedule = Schedule::Interleaved;
    p.recompute = Recompute::Full;
    p.recompute_layers = Some(vec![3; 4]);
    let why = p.check(&m, &c);
    assert!(
        why.iter().any(
            |w| matches!(w, Infeasible::PartialRecomputeInterleaved { vpp: 5 })
                && w.field() == "recompute_layers"
        ),
        "{why:?}"
    );
    p.recompute_layers = Some(vec![20; 4]);
    assert!(p.check(&m, &c).is_empty(), "{:?}", p.check(&m, &c));
    p.recompute_layers = Some(vec![3; 4]);
    (p.vpp, p.schedule) = (1, Schedule::OneFOneB);
    assert!(p.check(&m, &c).is_empty(), "{:?}", p.check(&m, &c));
}

/// The one-line form names every knob a launch needs, uneven stages included.
#[test]
fn short_form_shows_stage_layers_and_recomputed_layers() {
    let mut p = Plan::new(8, 4, 4, 2, 512, 2048);
    p.recompute = Recompute::Full;
    p.zero = 1;
    p.sequence_parallel = true;
    assert_eq!(p.short(), "dp=8 tp=4 pp=4 mbs=2 rc=full zero1 sp");
    p.stage_layers = Some(vec![23, 24, 24, 25]);
    p.recompute_layers = Some(vec![23, 12, 0, 0]);
    assert_eq!(
        p.short(),
        "dp=8 tp=4 pp=4 mbs=2 rc=full zero1 sp layers=23,24×2,25 rc_layers=23,12,0×2"
    );
    assert_eq!(fold_counts(&[12; 8], " "), "12×8");
    assert_eq!(fold_counts(&[], ","), "");
}

/// Legacy Megatron's split pipeline sends (`p2p_scatter_gather`) are in the one-line form,
/// last, as `p2p-sg` (two plans that differ in them had printed the same line).
#[test]
fn short_form_shows_split_pipeline_sends() {
    let mut p = Plan::new(2, 2, 2, 1, 64, 2048);
    p.recompute = Recompute::Full;
    p.stage_layers = Some(vec![11, 13]);
    assert_eq!(p.short(), "dp=2 tp=2 pp=2 mbs=1 rc=full zero0 layers=11,13");
    p.p2p_scatter_gather = true;
    assert_eq!(
        p.short(),
        "dp=2 tp=2 pp=2 mbs=1 rc=full zero0 layers=11,13 p2p-sg"
    );
}

/// The flags a label leaves out: the defaults spelled as `estimate` reads them, and the
/// overlaps only when on and fusion only when off.
#[test]
fn label_flags_spell_what_the_label_omits() {
    let mut p = Plan::new(8, 1, 1, 1, 64, 2048);
    assert_eq!(
        p.label_flags(),
        "--global-batch 64 --seq-len 2048 --framework megatron --dtype bf16 --attention flash --tp-overlap backward"
    );
    (p.overlap_grad_reduce, p.grad_accumulation_fusion) = (true, false);
    (p.attention, p.framework) = (AttentionImpl::FlashTriton, Framework::LlmFoundry);
    assert_eq!(
        p.label_flags(),
        "--global-batch 64 --seq-len 2048 --framework llm-foundry --dtype bf16 --attention flash-triton --tp-overlap backward --overlap-grad-reduce --no-gradient-accumulation-fusion"
    );
}

/// What a framework cannot run is infeasible, naming the field: llm-foundry (Composer)
/// has no pipeline or context parallelism; ZeRO-3 under pipelining is torchtitan's alone.
#[test]
fn frameworks_refuse_what_they_cannot_run() {
    let m = crate::spec::load_model("llama3-8b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let labels = |p: &Plan| -> Vec<(&str, String)> {
        p.check(&m, &cluster)
            .iter()
            .map(|i| (i.field(), i.to_string()))
            .collect()
    };
    let mut p = Plan::new(4, 1, 2, 1, 64, 8192);
    p.framework = Framework::LlmFoundry;
    assert_eq!(
        labels(&p),
        [("pp", "pp=2: llm-foundry has no pipeline parallelism; use pp 1, or price for another --framework".to_string())]
    );
    (p.pp, p.cp) = (1, 2);
    assert_eq!(labels(&p)[0].0, "cp");
    // Context parallelism runs inside the fused attention kernel.
    (p.framework, p.attention) = (Framework::Megatron, AttentionImpl::Unfused);
    assert_eq!(labels(&p)[0].0, "attention");
    (p.framework, p.attention) = (Framework::LlmFoundry, AttentionImpl::Flash);
    // DeepSpeed's pipeline engine: no context parallelism, no interleaving.
    p.framework = Framework::DeepSpeed;
    assert_eq!(
        labels(&p),
        [("cp", "cp=2: deepspeed has no context parallelism; use cp 1, or price for another --framework".to_string())]
    );
    (p.dp, p.cp, p.pp, p.vpp, p.schedule) = (4, 1, 2, 2, Schedule::Interleaved);
    assert_eq!(labels(&p)[0].0, "vpp");
    (p.vpp, p.schedule) = (1, Schedule::OneFOneB);
    (p.cp, p.pp, p.zero) = (1, 2, 3);
    for (fw, ok) in Framework::ALL.map(|f| (f, f == Framework::Torchtitan)) {
        p.framework = fw;
        let l = labels(&p);
        assert_eq!(l.is_empty(), ok, "{fw:?}: {l:?}");
    }
    // torchtitan ties no weights across stages (`models/common/decoder.py` raises
    // NotImplementedError) and runs DDP (ZeRO-0) only without TP, PP or CP (`apply_ddp`).
    let mut tied = m.clone();
    tied.tied_embeddings = true;
    p.framework = Framework::Torchtitan;
    let tied_labels: Vec<(&str, String)> = p
        .check(&tied, &cluster)
        .iter()
        .map(|i| (i.field(), i.to_string()))
        .collect();
    assert_eq!(
        tied_labels,
        [("pp", "pp=2 with tied embeddings: torchtitan does not tie weights across pipeline stages (\"Weight tying is not supported with Pipeline Parallel\"); use pp 1, or price for --framework megatron, which keeps a copy on the last stage".to_string())]
    );
    p.framework = Framework::Megatron;
    p.zero = 1;
    assert!(p.check(&tied, &cluster).is_empty());
    (p.framework, p.zero) = (Framework::Torchtitan, 0);
    assert_eq!(
        labels(&p),
        [("zero", "zero=0 with dp=4 beside tp/pp/cp: torchtitan runs DDP alone (\"DDP has not supported > 1D parallelism\"); use zero 2 or 3 (FSDP), or dp 1".to_string())]
    );
    (p.dp, p.pp) = (8, 1);
    assert!(labels(&p).is_empty(), "DDP alone runs: {:?}", labels(&p));
}

/// Every TP rank holds ffn/tp columns of each expert too: an expert width tp does not
/// divide is infeasible, naming the field, even when the dense width divides.
#[test]
fn tp_must_divide_the_expert_mlp_width() {
    let mut m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let mut plan = Plan::new(4, 2, 1, 1, 64, 4096);
    // Megatron runs an MoE model with tp > 1 only with sequence parallelism.
    assert_eq!(
        plan.check(&m, &cluster),
        [Infeasible::MoeTpNeedsSp { tp: 2 }]
    );
    plan.sequence_parallel = true;
    assert!(
        plan.check(&m, &cluster).is_empty(),
        "{:?}",
        plan.check(&m, &cluster)
    );
    // 14335 = 5·47·61 is odd: tp=2 leaves half a column; ffn_hidden 14336 still divides.
    m.moe.as_mut().unwrap().expert_ffn_hidden = 14335;
    let why = plan.check(&m, &cluster);
    assert_eq!(
        why,
        [Infeasible::FfnNotDivisible {
            field: "moe.expert_ffn_hidden",
            ffn: 14335,
            tp: 2
        }]
    );
    assert_eq!(
        why[0].to_string(),
        "tp=2 does not divide moe.expert_ffn_hidden=14335; use a tp that divides it, or \
         --etp 1 (whole experts on each rank)"
    );
}

/// Expert parallelism is carved out of dp·cp (Megatron-Core folds CP into the expert
/// groups): cp 8 × ep 8 on one node runs, ep 3 does not divide 8. Megatron's ZeRO-3
/// (`--use-torch-fsdp2`) asserts ep == 1; its distributed optimizer (ZeRO-1) runs with EP;
/// torchtitan's own expert parallelism is not the one priced.
#[test]
fn expert_parallelism_rules_follow_the_frameworks() {
    let m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let fields =
        |p: &Plan| -> Vec<&str> { p.check(&m, &cluster).iter().map(|i| i.field()).collect() };
    let mut p = Plan::new(1, 1, 1, 1, 8, 8192);
    (p.cp, p.ep) = (8, 8);
    assert!(fields(&p).is_empty(), "{:?}", p.check(&m, &cluster));
    (p.dp, p.cp, p.ep) = (8, 1, 8);
    p.zero = 1;
    assert!(fields(&p).is_empty());
    p.zero = 3;
    assert_eq!(fields(&p), ["ep"]);
    assert!(
        p.check(&m, &cluster)[0]
            .to_string()
            .contains("--use-torch-fsdp2")
    );
    (p.zero, p.framework) = (3, Framework::Torchtitan);
    assert_eq!(fields(&p), ["ep"]);
    (p.framework, p.zero, p.ep) = (Framework::Megatron, 1, 1);
    (p.dp, p.tp, p.sequence_parallel) = (4, 2, true);
    p.ep = 8;
    assert_eq!(fields(&p), ["ep"], "ep 8 over dp·cp = 4");
    // Whole experts (etp 1) take their EP ranks from all tp·cp·dp = 8 of the stage.
    p.etp = Some(1);
    assert!(fields(&p).is_empty(), "{:?}", p.check(&m, &cluster));
    assert_eq!(
        p.short(),
        "dp=4 tp=2 pp=1 ep=8 etp=1 mbs=1 rc=none zero1 sp"
    );
    // Only 1 or tp; only on a model with experts; only where Megatron prices it.
    (p.dp, p.tp, p.ep, p.etp) = (2, 4, 4, Some(2));
    let why = p.check(&m, &cluster);
    assert_eq!(fields(&p), ["etp"], "{why:?}");
    assert!(
        why[0].to_string().contains("use --etp 1 or --etp 4"),
        "{}",
        why[0]
    );
    (p.etp, p.framework, p.zero) = (Some(1), Framework::Torchtitan, 3);
    assert_eq!(fields(&p), ["etp", "ep"]);
    let dense = crate::spec::load_model("llama3-8b").unwrap();
    (p.framework, p.ep) = (Framework::Megatron, 1);
    let why = p.check(&dense, &cluster);
    assert!(
        why.iter()
            .any(|i| i.to_string().contains("etp=1 on a model without experts")),
        "{why:?}"
    );
    // A zero etp is a zero size, not a division by zero.
    p.etp = Some(0);
    assert_eq!(p.check(&m, &cluster), [Infeasible::Zero]);
}

/// Whole experts need no TP split of the expert width: 14335 (odd) runs at tp 2 with etp 1.
#[test]
fn whole_experts_need_no_tp_split_of_their_width() {
    let mut m = crate::spec::load_model("mixtral-8x7b").unwrap();
    m.moe.as_mut().unwrap().expert_ffn_hidden = 14335;
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let mut plan = Plan::new(4, 2, 1, 1, 64, 4096);
    (plan.sequence_parallel, plan.etp) = (true, Some(1));
    assert!(
        plan.check(&m, &cluster).is_empty(),
        "{:?}",
        plan.check(&m, &cluster)
    );
}

/// A partition or recomputation list that does not fit is refused naming its own flag and
/// each condition it breaks, not `pp` and a list of every rule: llama3-8b has 32 layers.
#[test]
fn stage_and_recompute_lists_say_what_is_wrong() {
    let m = crate::spec::load_model("llama3-8b").unwrap();
    let c = crate::spec::load_cluster("h100x8").unwrap();
    let reasons = |p: &Plan| -> Vec<(String, String)> {
        p.check(&m, &c)
            .iter()
            .map(|i| (i.field().to_string(), i.to_string()))
            .collect()
    };
    let mut p = Plan::new(2, 1, 4, 1, 8, 2048);
    p.stage_layers = Some(vec![8, 8, 8]);
    assert_eq!(
        reasons(&p),
        [(
            "stage_layers".to_string(),
            "stage layers [8, 8, 8]: 3 counts for pp=4, they sum to 24, not layers=32; give 4 \
             positive counts summing to 32"
                .to_string()
        )]
    );
    p.stage_layers = Some(vec![8; 4]);
    p.recompute_layers = Some(vec![2, 9, 0, 0]);
    let r = reasons(&p);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "recompute_layers");
    assert!(
        r[0].1.contains("recompute is not full") && r[0].1.contains("stage 1 has 8 layers, not 9"),
        "{}",
        r[0].1
    );
}

/// The GPU-count refusal suggests a dp only where one exists: 8 GPUs at tp 2 → dp = 4; at
/// tp 3 no dp makes 8, and the fix is the model-parallel sizes or the GPU count.
#[test]
fn gpu_count_refusal_suggests_a_whole_dp() {
    let m = crate::spec::load_model("llama3-8b").unwrap();
    let c = crate::spec::load_cluster("h100x8").unwrap();
    let text = |dp, tp| {
        Plan::new(dp, tp, 1, 1, 24, 2048)
            .check(&m, &c)
            .iter()
            .find(|i| i.field() == "dp")
            .map(|i| i.to_string())
            .unwrap()
    };
    assert!(
        text(1, 2).ends_with("choose dp = 8/(tp·pp·cp) = 4"),
        "{}",
        text(1, 2)
    );
    let t = text(2, 3);
    assert!(t.contains("tp·pp·cp = 3 does not divide 8"), "{t}");
    assert!(!t.contains("choose dp"), "{t}");
}

/// FlashAttention and Transformer Engine's fused attention take 16-bit tensors only: an fp32
/// plan with them is refused for Megatron-LM and DeepSpeed (and llm-foundry's Triton kernel
/// everywhere), while torchtitan's SDPA runs fp32 in its memory-efficient kernel.
#[test]
fn fused_attention_needs_16_bit_tensors_where_the_framework_says() {
    let m = crate::spec::load_model("gpt-1.7b").unwrap();
    let c = crate::spec::load_cluster("a100x8").unwrap();
    let mut p = Plan::new(8, 1, 1, 1, 64, 2048);
    p.dtype = Dtype::Fp32;
    let fields = |p: &Plan| -> Vec<&str> { p.check(&m, &c).iter().map(|i| i.field()).collect() };
    assert_eq!(fields(&p), ["attention"]);
    assert!(
        p.check(&m, &c)[0]
            .to_string()
            .contains("use --attention unfused")
    );
    p.attention = AttentionImpl::Unfused;
    assert!(fields(&p).is_empty());
    (p.attention, p.framework) = (AttentionImpl::Flash, Framework::Torchtitan);
    assert!(fields(&p).is_empty());
    (p.attention, p.framework) = (AttentionImpl::FlashTriton, Framework::LlmFoundry);
    assert_eq!(fields(&p), ["attention"]);
    // llm-foundry's `flash_attn_fn` checks for fp16/bf16 inputs too.
    p.attention = AttentionImpl::Flash;
    assert_eq!(fields(&p), ["attention"]);
    p.dtype = Dtype::Bf16;
    assert!(fields(&p).is_empty());
    // Heads wider than 256 take no fused kernel (FlashAttention, cuDNN).
    let mut wide = m.clone();
    wide.head_size = Some(512);
    let why = p.check(&wide, &c);
    assert_eq!(
        why.iter().map(|i| i.field()).collect::<Vec<_>>(),
        ["attention"]
    );
    assert!(why[0].to_string().contains("head_dim=512"), "{}", why[0]);
    p.attention = AttentionImpl::Unfused;
    assert!(p.check(&wide, &c).is_empty());
}

/// An expert TP size that is neither 1 nor tp is said once, not again as the expert width
/// and the EP layout it breaks; at tp 1 the fix is to leave it out. A width tp does not
/// divide runs with whole experts, which the fix says.
#[test]
fn bad_etp_is_refused_once_and_expert_widths_offer_whole_experts() {
    let mut m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let c = crate::spec::load_cluster("h100x8").unwrap();
    let mut p = Plan::new(8, 1, 1, 1, 64, 4096);
    p.etp = Some(4096);
    let why = p.check(&m, &c);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].to_string().contains("leave --etp out"), "{}", why[0]);
    m.moe.as_mut().unwrap().expert_ffn_hidden = 770;
    let mut p = Plan::new(2, 4, 1, 1, 64, 4096);
    p.sequence_parallel = true;
    let why = p.check(&m, &c);
    assert!(why[0].to_string().contains("or --etp 1"), "{why:?}");
    p.etp = Some(1);
    assert!(p.check(&m, &c).is_empty(), "{:?}", p.check(&m, &c));
}

/// Gradients reduce in fp32 or in the 16-bit type the plan trains in (bf16 under FP8):
/// TF32, FP8, or the other 16-bit type are refused, naming what to write. (`tf32` had been
/// priced as fp32, and fp16 beside bf16 training as if Megatron could reduce so.)
#[test]
fn gradients_reduce_in_fp32_or_the_training_type() {
    let model = crate::spec::load_model("llama3-8b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let refused = |dtype: Dtype, reduce: Dtype| {
        let mut p = Plan::new(8, 1, 1, 1, 64, 8192);
        (p.dtype, p.grad_reduce_dtype) = (dtype, Some(reduce));
        p.check(&model, &cluster)
            .iter()
            .find(|i| i.field() == "grad_reduce_dtype")
            .map(ToString::to_string)
    };
    assert_eq!(refused(Dtype::Bf16, Dtype::Fp32), None);
    assert_eq!(refused(Dtype::Bf16, Dtype::Bf16), None);
    assert_eq!(refused(Dtype::Fp8, Dtype::Bf16), None);
    assert_eq!(refused(Dtype::Fp16, Dtype::Fp16), None);
    let tf32 = refused(Dtype::Bf16, Dtype::Tf32).unwrap();
    assert!(
        tf32.contains("grad_reduce_dtype=tf32 with dtype=bf16")
            && tf32.ends_with("use fp32 or bf16"),
        "{tf32}"
    );
    assert!(
        refused(Dtype::Bf16, Dtype::Fp16)
            .unwrap()
            .ends_with("use fp32 or bf16")
    );
    assert!(
        refused(Dtype::Fp16, Dtype::Bf16)
            .unwrap()
            .ends_with("use fp32 or fp16")
    );
    assert!(refused(Dtype::Fp8, Dtype::Fp8).is_some());
    assert!(
        refused(Dtype::Fp32, Dtype::Bf16)
            .unwrap()
            .ends_with("use fp32")
    );
}

/// FP8 weights gathered in FP8 need what Megatron-LM asks of `--fp8-param-gather`: FP8
/// training, Megatron, and the distributed optimizer (ZeRO-1); each missing one is named.
#[test]
fn fp8_param_gather_needs_fp8_megatron_and_the_distributed_optimizer() {
    let model = crate::spec::load_model("llama3-8b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let why = |dtype: Dtype, framework: Framework, zero: u8| {
        let mut p = Plan::new(8, 1, 1, 1, 64, 8192);
        (p.dtype, p.framework, p.zero, p.fp8_param_gather) = (dtype, framework, zero, true);
        p.check(&model, &cluster)
            .iter()
            .find(|i| i.field() == "fp8_param_gather")
            .map(ToString::to_string)
    };
    assert_eq!(why(Dtype::Fp8, Framework::Megatron, 1), None);
    assert!(
        why(Dtype::Bf16, Framework::Megatron, 1)
            .unwrap()
            .contains("use --dtype fp8")
    );
    assert!(
        why(Dtype::Fp8, Framework::DeepSpeed, 1)
            .unwrap()
            .contains("use --framework megatron")
    );
    assert!(
        why(Dtype::Fp8, Framework::Megatron, 0)
            .unwrap()
            .contains("use --zero 1")
    );
    let mut p = Plan::new(8, 1, 1, 1, 64, 8192);
    (p.dtype, p.zero, p.fp8_param_gather) = (Dtype::Fp8, 1, true);
    assert_eq!(p.short(), "dp=8 tp=1 pp=1 mbs=1 rc=none zero1 fp8-params");
}

/// Splitting pipeline sends over the TP ranks is legacy Megatron-LM's option: another
/// framework's plan with it is refused, naming the field and the flag to drop.
#[test]
fn p2p_scatter_gather_is_megatron_only() {
    let model = crate::spec::load_model("llama3-8b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let why = |framework: Framework| {
        let mut p = Plan::new(2, 2, 2, 1, 64, 8192);
        (p.framework, p.p2p_scatter_gather) = (framework, true);
        p.check(&model, &cluster)
            .iter()
            .find(|i| i.field() == "p2p_scatter_gather")
            .map(ToString::to_string)
    };
    assert_eq!(why(Framework::Megatron), None);
    let e = why(Framework::DeepSpeed).unwrap();
    assert!(
        e.contains("not deepspeed's") && e.contains("drop --p2p-scatter-gather"),
        "{e}"
    );
}

/// QA: `estimate` had priced Megatron at ZeRO-2 (which Megatron-LM lacks: its distributed
/// optimizer is ZeRO-1, FSDP2 ZeRO-3) and DeepSpeed in FP8 (its config sets bf16, fp16 or
/// fp32), plans `suggest` never ranks and `export` refuses; both are refused by name.
#[test]
fn megatron_zero_2_and_deepspeed_fp8_are_refused() {
    let model = crate::spec::load_model("llama3-8b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let refusals = |framework: Framework, zero: u8, dtype: Dtype| {
        let mut p = Plan::new(4, 2, 1, 1, 64, 8192);
        (p.framework, p.zero, p.dtype) = (framework, zero, dtype);
        p.check(&model, &cluster)
            .iter()
            .map(|i| (i.field(), i.to_string()))
            .collect::<Vec<_>>()
    };
    let r = refusals(Framework::Megatron, 2, Dtype::Bf16);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "zero");
    assert!(
        r[0].1.contains("megatron runs ZeRO stages 0, 1, 3"),
        "{}",
        r[0].1
    );
    for zero in [0, 1, 3] {
        assert_eq!(refusals(Framework::Megatron, zero, Dtype::Bf16), vec![]);
    }
    assert_eq!(refusals(Framework::DeepSpeed, 2, Dtype::Bf16), vec![]);
    let r = refusals(Framework::DeepSpeed, 1, Dtype::Fp8);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "dtype");
    assert!(
        r[0].1.contains("deepspeed does not train in fp8"),
        "{}",
        r[0].1
    );
    assert_eq!(refusals(Framework::Megatron, 1, Dtype::Fp8), vec![]);
}

/// Megatron-Core's embedding and loss slots (`--account-for-embedding/loss-in-pipeline-split`):
/// Llama 3 405B's 126 layers with both count 128 slots; over pp = 16, vpp = 4 that is 2 a
/// chunk, the first chunk of stage 0 and the last of stage 15 building one layer
/// (`get_num_layers_to_build`): 7 layers on the end stages, 8 on the rest. The label says
/// so, the plan file carries Megatron's names, and the checks refuse what Megatron-Core would
/// not split: 127 slots, one slot per chunk (the embedding alone), another framework, pp = 1
/// and explicit stage layers beside it.
#[test]
fn embedding_and_loss_slots_split_the_pipeline_as_megatron_core() {
    let m = crate::spec::load_model("llama3-405b").unwrap();
    let c = crate::spec::load_cluster("h100-x1024").unwrap();
    let mut p = Plan::new(8, 8, 16, 1, 512, 8192);
    (p.vpp, p.schedule, p.zero, p.sequence_parallel) = (4, Schedule::Interleaved, 1, true);
    p.split_accounts = SplitAccounts {
        embedding: true,
        loss: true,
    };
    let chunks = p.chunk_layer_counts(m.layers);
    assert_eq!(chunks[0], [1, 2, 2, 2]);
    assert_eq!(chunks[7], [2; 4]);
    assert_eq!(chunks[15], [2, 2, 2, 1]);
    let stages = p.stage_layer_counts(m.layers);
    assert_eq!((stages[0], stages[1], stages[15]), (7, 8, 7));
    assert_eq!(stages.iter().sum::<u64>(), 126);
    let stage_problems = |p: &Plan| -> Vec<String> {
        p.check(&m, &c)
            .into_iter()
            .filter(|w| w.field().starts_with("account_for"))
            .map(|w| w.to_string())
            .collect()
    };
    assert!(stage_problems(&p).is_empty(), "{:?}", stage_problems(&p));
    assert!(p.short().ends_with("sp split+emb+loss"), "{}", p.short());
    let json = p.to_json();
    assert!(
        json.contains("\"account_for_embedding_in_pipeline_split\": true")
            && json.contains("\"account_for_loss_in_pipeline_split\": true"),
        "{json}"
    );
    assert_eq!(Plan::from_json("p.json", &json).unwrap(), p);
    p.split_accounts.loss = false;
    assert_eq!(
        stage_problems(&p),
        [
            "126 layers and 1 slot = 127 do not split over pp·vpp = 64; pick pp and vpp dividing \
             127, or count the loss too (--account-for-loss-in-pipeline-split)"
        ]
    );
    (p.split_accounts.loss, p.vpp) = (true, 8);
    assert_eq!(
        stage_problems(&p),
        [
            "one slot per model chunk (pp·vpp = 128) leaves a chunk with the embedding or loss alone; pick fewer stages or virtual stages"
        ]
    );
    p.vpp = 4;
    p.framework = Framework::Torchtitan;
    assert_eq!(
        stage_problems(&p),
        [
            "counting the embedding and loss as a layer of the pipeline split is Megatron-Core's, not torchtitan's; drop it"
        ]
    );
    p.framework = Framework::Megatron;
    p.stage_layers = Some(vec![8; 16]);
    assert!(stage_problems(&p)[0].starts_with("beside stage_layers"));
    let mut one = Plan::new(64, 8, 1, 1, 512, 8192);
    one.split_accounts.embedding = true;
    assert_eq!(
        stage_problems(&one),
        ["with pp=1: there is no pipeline split to even; drop it"]
    );
}

/// More micro-batches per step than any run (65,536) is infeasible for every caller, the
/// search included: `report` and `suggest` had simulated 4,194,304 of them (27 s, 4.5 GB)
/// for a plan `estimate` refuses.
#[test]
fn implausibly_many_micro_batches_are_infeasible() {
    let m = crate::spec::load_model("llama3-8b").unwrap();
    let cluster = crate::spec::load_cluster("h100x8").unwrap();
    let p = Plan::new(8, 1, 1, 1, 8 * 65_537, 2048);
    let why = p.check(&m, &cluster);
    assert_eq!(
        why.iter().map(|i| i.field()).collect::<Vec<_>>(),
        ["micro_batch"]
    );
    assert!(
        why[0]
            .to_string()
            .starts_with("65537 micro-batches per step, beyond the 65536")
    );
    let p = Plan::new(8, 1, 1, 1, 8 * 65_536, 2048);
    assert!(p.check(&m, &cluster).is_empty());
}

/// The expert-parallel refusal names the condition that fails: Mixtral's 8 experts at ep 4
/// divide, but 4 does not divide a stage of 2 ranks; ep 3 divides 6 ranks but not 8 experts;
/// ep 16 neither 8 experts nor a stage of 8 ranks.
#[test]
fn expert_refusal_names_the_failing_condition() {
    let m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let c = crate::spec::load_cluster("h100x8").unwrap();
    let refusal = |dp: u64, ep: u64| {
        let p = Plan {
            ep,
            sequence_parallel: true,
            ..Plan::new(dp, 1, 1, 1, 48, 4096)
        };
        p.check(&m, &c)
            .iter()
            .find(|i| i.field() == "ep")
            .map(|i| i.to_string())
            .unwrap()
    };
    assert_eq!(
        refusal(2, 4),
        "etp·ep=4 must divide the 2 ranks of a pipeline stage (tp·cp·dp, which the expert layers \
         lay out as etp × ep × expert-dp); choose a smaller ep"
    );
    assert_eq!(
        refusal(6, 3),
        "ep=3 must divide experts=8; choose an ep that divides it"
    );
    assert_eq!(
        refusal(8, 16),
        "ep=16 must divide experts=8, and etp·ep=16 must divide the 8 ranks of a pipeline stage \
         (tp·cp·dp, which the expert layers lay out as etp × ep × expert-dp); choose an ep that \
         divides both"
    );
}

/// A layer count no pp·vpp divides points at the pipeline-split slots where they would
/// divide it: Llama 3.1 405B's 126 layers on pp 8 × vpp 8 take the embedding and the loss
/// (126 + 2 = 128), and with only the embedding counted (127, a prime) the loss is named too.
/// torchtitan, which has no such slots, is not told of them.
#[test]
fn layer_counts_point_at_the_split_slots_that_divide_them() {
    let m = crate::spec::load_model("llama3-405b").unwrap();
    let c = crate::spec::load_cluster("h100-x1024").unwrap();
    let refusal = |p: &Plan, field: &str| {
        p.check(&m, &c)
            .iter()
            .find(|i| i.field() == field)
            .map(|i| i.to_string())
            .unwrap()
    };
    let mut p = Plan {
        vpp: 8,
        sequence_parallel: true,
        ..Plan::new(8, 8, 8, 1, 512, 8192)
    };
    assert_eq!(
        refusal(&p, "pp"),
        "pp·vpp = 64 does not divide layers=126; pick pp (and vpp) dividing 126, or count the \
         embedding and the loss as layers (--account-for-embedding-in-pipeline-split \
         --account-for-loss-in-pipeline-split)"
    );
    p.split_accounts.embedding = true;
    assert_eq!(
        refusal(&p, "account_for_embedding_in_pipeline_split"),
        "126 layers and 1 slot = 127 do not split over pp·vpp = 64; pick pp and vpp dividing \
         127, or count the loss too (--account-for-loss-in-pipeline-split)"
    );
    p.split_accounts.loss = true;
    assert!(
        p.check(&m, &c)
            .iter()
            .all(|i| i.field() != "pp" && !i.field().starts_with("account_for"))
    );
    let tt = Plan {
        framework: Framework::Torchtitan,
        zero: 3,
        ..Plan::new(8, 8, 8, 1, 512, 8192)
    };
    let why = tt
        .check(&m, &c)
        .iter()
        .find(|i| i.field() == "pp")
        .map(|i| i.to_string())
        .unwrap_or_default();
    assert!(!why.contains("account-for"), "{why}");
}
