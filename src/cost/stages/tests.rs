//! Tests of the per-stage work: it recomposes the estimate, and hand-derived prices of its
//! collectives, transfers and passes.

use super::*;
use crate::cost::{estimate_priced, step};
use crate::spec::{ClusterSpec, Framework, Schedule, load_cluster, load_model};
use crate::units::Dtype;

fn plan(dp: u64, tp: u64, pp: u64, vpp: u64, gb: u64) -> Plan {
    let mut p = Plan::new(dp, tp, pp, 1, gb, 2048);
    p.vpp = vpp;
    p.recompute = Recompute::Selective;
    p.zero = 1;
    p.sequence_parallel = tp > 1;
    if vpp > 1 {
        p.schedule = Schedule::Interleaved;
    }
    p
}

/// The closed form of `estimate_priced`, recomposed from the stage work: pipeline time of
/// the per-micro-batch stage times (2 transfers per chunk, one fewer at either end of the
/// pipeline), the exposed gradient reduction, the slowest optimizer step.
fn closed_form(plan: &Plan, w: &[StageWork]) -> f64 {
    let (v, p) = (plan.vpp as f64, plan.pp as usize);
    let per_micro: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let sends = 2.0 * v - f64::from(u8::from(i == 0)) - f64::from(u8::from(i + 1 == p));
            s.chunks.iter().map(|c| c.fwd_s() + c.bwd_s()).sum::<f64>() + sends * s.p2p_s
        })
        .collect();
    let pipe = step::pipeline_time(plan.schedule, &per_micro, plan.n_micro(), plan.vpp);
    let opt = w.iter().map(|s| s.optimizer_s).fold(0.0, f64::max);
    pipe + dp_exposed_s(plan, w) + opt
}

/// The stage work recomposes the estimate exactly: same step time, same memory, for
/// plain, interleaved, overlapped, ZeRO-3 and MoE plans.
#[test]
fn stage_work_recomposes_the_estimate() {
    let c = load_cluster("a100-80g-x1024").unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    let gpt = load_model("gpt3-175b").unwrap();
    let mut overlapped = plan(8, 8, 16, 1, 1536);
    overlapped.overlap_grad_reduce = true;
    let mut z3 = plan(128, 8, 1, 1, 1024);
    z3.zero = 3;
    let mut interleaved_overlapped = plan(8, 8, 16, 3, 1536);
    interleaved_overlapped.overlap_grad_reduce = true;
    let mixtral = load_model("mixtral-8x7b").unwrap();
    let mut moe = plan(32, 8, 4, 1, 1024);
    moe.ep = 8;
    // ZeRO-3 on experts too: they gather and reduce over their own group (llm-foundry's
    // FSDP with MegaBlocks experts; Megatron's FSDP2 refuses expert parallelism).
    let mut moe_z3 = plan(256, 4, 1, 1, 1024);
    moe_z3.ep = 8;
    moe_z3.zero = 3;
    moe_z3.framework = crate::spec::Framework::LlmFoundry;
    // Uneven stages, recomputing fewer layers where fewer micro-batches are in flight.
    let mut uneven = plan(32, 8, 4, 1, 1024);
    uneven.stage_layers = Some(vec![23, 24, 24, 25]);
    uneven.recompute = Recompute::Full;
    uneven.recompute_layers = Some(vec![23, 12, 6, 0]);
    let cases = [
        (&gpt, plan(8, 8, 16, 1, 1536)),
        (&gpt, plan(8, 8, 16, 3, 1536)),
        (&gpt, overlapped),
        (&gpt, interleaved_overlapped),
        (&gpt, z3),
        (&mixtral, moe),
        (&mixtral, moe_z3),
        (&gpt, uneven),
    ];
    for (model, p) in cases {
        assert!(p.check(model, &c).is_empty(), "{}", p.short());
        let pg = PricedGraphs::new(model, &p, &m);
        let est = estimate_priced(model, &p, &m, &pg);
        let w = stage_work(model, &p, &m, &pg);
        let cf = closed_form(&p, &w);
        assert!(
            (cf - est.step_time_s).abs() <= 1e-9 * est.step_time_s,
            "{}: {cf} vs {}",
            p.short(),
            est.step_time_s
        );
        for (s, e) in w.iter().zip(&est.stages) {
            assert_eq!(s.memory, e.memory, "{}", p.short());
        }
        // Chunks partition the stage's layers.
        let layers: u64 = w.iter().flat_map(|s| &s.chunks).map(|c| c.layers).sum();
        assert_eq!(layers, model.layers);
    }
}

/// ZeRO-2 keeps only its shard of the gradients, so it reduce-scatters them with every
/// micro-batch and gathers the updated weights once per step; ZeRO-1 accumulates whole
/// gradients and does both once per step; ZeRO-3 also gathers the weights with every
/// forward and backward. gpt2-xl on 8 A100s under DeepSpeed: fp32 gradient reduction
/// (4 bytes per parameter), 16-bit weights (2).
#[test]
fn zero2_reduces_gradients_every_micro_batch() {
    let gpt = load_model("gpt2-xl").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    let work = |zero| {
        let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
        p.zero = zero;
        p.framework = Framework::DeepSpeed;
        let pg = PricedGraphs::new(&gpt, &p, &m);
        stage_work(&gpt, &p, &m, &pg).remove(0)
    };
    let dp = GroupShape { n: 8, per_node: 8 };
    // The rank's parameters, its embedding padded to 50,304 rows as Megatron-DeepSpeed pads
    // GPT-2's 50,257 (`Framework::vocab_rows`).
    let params = gpt.params() + (50_304.0 - 50_257.0) * 1_600.0;
    let rs = m.collective_s(Coll::ReduceScatter, dp, 4.0 * params).0;
    let ag = m.collective_s(Coll::AllGather, dp, 2.0 * params).0;
    let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-12 * b.max(1e-9), "{a} vs {b}");
    let one = work(1);
    close(one.dp_reduce_s, rs + ag);
    assert_eq!(
        (one.chunks[0].zero_reduce_s, one.chunks[0].zero_gather_fwd_s),
        (0.0, 0.0)
    );
    let two = work(2);
    close(two.dp_reduce_s, ag);
    close(two.chunks[0].zero_reduce_s, rs);
    assert_eq!(
        (
            two.chunks[0].zero_gather_fwd_s,
            two.chunks[0].zero_gather_bwd_s
        ),
        (0.0, 0.0)
    );
    // The gather follows the optimizer step: nothing left to overlap, even when asked.
    let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
    (p.zero, p.overlap_grad_reduce) = (2, true);
    assert!(!reduction_overlaps(&p));
    close(dp_exposed_s(&p, std::slice::from_ref(&two)), ag);
    let three = work(3);
    assert_eq!(three.dp_reduce_s, 0.0);
    close(three.chunks[0].zero_reduce_s, rs);
    close(three.chunks[0].zero_gather_fwd_s, ag);
    close(three.chunks[0].zero_gather_bwd_s, ag);
    // A plan that reduces in bf16 (Composer's `mixed_precision: PURE`) moves 2 bytes per
    // gradient; llm-foundry's default (Composer's DEFAULT) reduces in fp32 like the rest.
    let reduce = |framework, dtype| {
        let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
        (p.zero, p.framework, p.grad_reduce_dtype) = (3, framework, dtype);
        let pg = PricedGraphs::new(&gpt, &p, &m);
        stage_work(&gpt, &p, &m, &pg)[0].chunks[0].zero_reduce_s
    };
    // llm-foundry builds the vocabulary as given: the model's own parameter count.
    let raw = gpt.params();
    let rs32 = m.collective_s(Coll::ReduceScatter, dp, 4.0 * raw).0;
    let rs16 = m.collective_s(Coll::ReduceScatter, dp, 2.0 * raw).0;
    close(reduce(Framework::LlmFoundry, None), rs32);
    close(reduce(Framework::LlmFoundry, Some(Dtype::Bf16)), rs16);
}

/// FSDP's ZeRO-2 (torchtitan `reshard_after_forward = "never"`, Composer `SHARD_GRAD_OP`):
/// the weights are gathered for every forward and kept through its backward, the gradients
/// reduce-scattered after it, and the step has nothing left; at rest everything is sharded
/// but the 16-bit weights gathered from forward to backward. gpt2-xl on 8 A100s, torchtitan:
/// (2 + 4/8) + 4/8 + 8/8 = 4 bytes per parameter of model state, against ZeRO-3's 16/8 = 2
/// and DeepSpeed ZeRO-2's 2 + 6/8 + 12/8.
#[test]
fn fsdp_zero2_gathers_every_forward_and_keeps_the_weights() {
    let gpt = load_model("gpt2-xl").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
    (p.zero, p.framework) = (2, Framework::Torchtitan);
    let pg = PricedGraphs::new(&gpt, &p, &m);
    let st = stage_work(&gpt, &p, &m, &pg).remove(0);
    let dp = GroupShape { n: 8, per_node: 8 };
    let params = gpt.params();
    let rs = m.collective_s(Coll::ReduceScatter, dp, 4.0 * params).0;
    let ag = m.collective_s(Coll::AllGather, dp, 2.0 * params).0;
    let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-12 * b.max(1e-9), "{a} vs {b}");
    let w = &st.chunks[0];
    close(w.zero_gather_fwd_s, ag);
    close(w.zero_reduce_s, rs);
    assert_eq!((w.zero_gather_bwd_s, st.dp_reduce_s), (0.0, 0.0));
    let state = |fw, zero| {
        let (w, g, o) = crate::cost::memory::sharded_state_bytes(fw, Dtype::Bf16, zero, 8);
        w + g + o
    };
    assert_eq!(state(Framework::Torchtitan, 2), 4.0);
    assert_eq!(state(Framework::LlmFoundry, 2), 4.0);
    assert_eq!(state(Framework::Torchtitan, 3), 2.0);
    assert_eq!(state(Framework::DeepSpeed, 2), 2.0 + 6.0 / 8.0 + 12.0 / 8.0);
}

/// torchtitan's FSDP under pipelining (Llama 2 7B, untied, on 8 A100s as dp 4 × pp 2):
/// `torch.distributed.pipelining` runs the backwards without gradient sync or resharding,
/// then reduce-scatters the whole accumulated fp32 gradients once, after the last backward,
/// overlapping nothing. Under ZeRO-3 the stage's weights are gathered again for every
/// backward (resharded after each forward) and the whole stage's 16-bit weights stay
/// gathered between micro-batches; gradients are 4/4 sharded + 4 whole = 5 bytes per
/// parameter, weights 4/4 sharded + 2 whole = 3. Under ZeRO-2 the weights are gathered once
/// per step. Megatron-LM refuses the plan.
#[test]
fn fsdp_under_pipelining_reduces_once_per_step() {
    let gpt = load_model("llama2-7b").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    let mut p = Plan::new(4, 1, 2, 1, 64, 4096);
    (p.zero, p.framework, p.overlap_grad_reduce) = (3, Framework::Torchtitan, true);
    assert!(p.check(&gpt, &c).is_empty(), "{:?}", p.check(&gpt, &c));
    let mut mg = p.clone();
    mg.framework = Framework::Megatron;
    assert_eq!(mg.check(&gpt, &c)[0].label(), "zero 2/3 with pipeline");
    let pg = PricedGraphs::new(&gpt, &p, &m);
    let work = stage_work(&gpt, &p, &m, &pg);
    let st = &work[1];
    let dp = Placement::of(&p, 8).dp;
    let layouts = crate::cost::stage_layouts(&gpt, &p);
    let params = chunk_params(&gpt, &p, &pg, &layouts[1], 0).0;
    let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-9 * b.max(1e-9), "{a} vs {b}");
    let rs = m.collective_s(Coll::ReduceScatter, dp, 4.0 * params).0;
    let ag = m.collective_s(Coll::AllGather, dp, 2.0 * params).0;
    let w = &st.chunks[0];
    assert_eq!((w.zero_reduce_s, w.zero_gather_fwd_s), (0.0, 0.0));
    close(w.zero_gather_bwd_s, ag);
    close(st.dp_reduce_s, rs);
    assert!(!reduction_overlaps(&p));
    close(st.memory.grads, 5.0 * params);
    close(st.memory.weights, 3.0 * params);
    p.zero = 2;
    let pg = PricedGraphs::new(&gpt, &p, &m);
    let st = stage_work(&gpt, &p, &m, &pg).remove(1);
    let w = &st.chunks[0];
    assert_eq!((w.zero_gather_fwd_s, w.zero_gather_bwd_s), (0.0, 0.0));
    close(st.dp_reduce_s, rs + ag);
}

/// An overlapped collective slows the compute it hides behind: ZeRO-3's gathers for
/// gpt2-xl on 8 A100s (mbs 8, s 1024) hide inside the forward, costing
/// `overlap_interference` (0.16 on the A100 preset) of their time; the reduce-scatter with
/// them in the backward likewise. With the interference at 0 they are free.
#[test]
fn hidden_zero3_collectives_cost_their_interference() {
    let gpt = load_model("gpt2-xl").unwrap();
    let mut c = load_cluster("a100x8").unwrap();
    assert_eq!(c.gpu.efficiency.overlap_interference, 0.16);
    let mut p = Plan::new(8, 1, 1, 8, 64, 1024);
    p.zero = 3;
    p.framework = Framework::Torchtitan;
    let chunk = |c: &ClusterSpec| {
        let m = Machine {
            cluster: c,
            profile: None,
        };
        let pg = PricedGraphs::new(&gpt, &p, &m);
        stage_work(&gpt, &p, &m, &pg).remove(0).chunks.remove(0)
    };
    let w = chunk(&c);
    assert!(
        w.zero_gather_fwd_s < w.fwd.compute_s,
        "the gather hides in the forward"
    );
    let bwd_comm = w.zero_gather_bwd_s + w.zero_reduce_s;
    assert!(bwd_comm < w.bwd.compute_s);
    let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-12 * b, "{a} vs {b}");
    close(w.zero_fwd_exposed_s(), 0.16 * w.zero_gather_fwd_s);
    close(w.zero_bwd_exposed_s(), 0.16 * bwd_comm);
    close(w.fwd_s(), w.fwd.total() + 0.16 * w.zero_gather_fwd_s);
    c.gpu.efficiency.overlap_interference = 0.0;
    let free = chunk(&c);
    assert_eq!(
        (free.zero_fwd_exposed_s(), free.zero_bwd_exposed_s()),
        (0.0, 0.0)
    );
}

/// Interleaving deals layers round-robin: with p = 4, v = 2 and 96 layers (12 per
/// chunk), stage 1 holds layers 12..24 and 60..72.
#[test]
fn interleaved_chunks_deal_layers_round_robin() {
    let gpt = load_model("gpt3-175b").unwrap();
    let p = plan(1, 1, 4, 2, 8);
    let st = &crate::cost::stage_layouts(&gpt, &p)[1];
    let ids = |c| {
        chunk_layers(st, &p, c)
            .iter()
            .map(|l| l.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(0), (12..24).collect::<Vec<_>>());
    assert_eq!(ids(1), (60..72).collect::<Vec<_>>());
}

/// Uneven stages interleave as Megatron-Core lays them out (`get_transformer_layer_offset`):
/// 96 layers over p = 4, v = 2 as 20, 28, 28, 20 give chunks of 10, 14, 14, 10 layers, one
/// round of the stages covering 48. Stage 0 holds 0..10 and 48..58, stage 1 10..24 and
/// 58..72, stage 3 38..48 and 86..96; every layer once.
#[test]
fn uneven_interleaved_stages_take_their_own_chunk_sizes() {
    let gpt = load_model("gpt3-175b").unwrap();
    let mut p = plan(1, 1, 4, 2, 8);
    p.stage_layers = Some(vec![20, 28, 28, 20]);
    let cluster = load_cluster("a100x8").unwrap();
    let stage_problems = |p: &Plan| {
        p.check(&gpt, &cluster)
            .into_iter()
            .filter(|i| i.field() == "stage_layers")
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
    };
    assert!(stage_problems(&p).is_empty(), "{:?}", stage_problems(&p));
    let layouts = crate::cost::stage_layouts(&gpt, &p);
    let ids = |i: usize, c| {
        chunk_layers(&layouts[i], &p, c)
            .iter()
            .map(|l| l.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(0, 0), (0..10).collect::<Vec<_>>());
    assert_eq!(ids(0, 1), (48..58).collect::<Vec<_>>());
    assert_eq!(ids(1, 0), (10..24).collect::<Vec<_>>());
    assert_eq!(ids(1, 1), (58..72).collect::<Vec<_>>());
    assert_eq!(ids(3, 1), (86..96).collect::<Vec<_>>());
    let mut all: Vec<u64> = layouts
        .iter()
        .flat_map(|l| l.layers.iter().map(|x| x.0))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..96).collect::<Vec<_>>());
    // A stage whose layers its chunks cannot share evenly is refused, naming the count.
    p.stage_layers = Some(vec![21, 27, 28, 20]);
    let why = stage_problems(&p);
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(
        why[0],
        "stage layers [21, 27, 28, 20]: vpp=2 does not divide [21, 27] (each stage splits its layers evenly over its 2 chunks, as Megatron-Core requires); give 4 positive counts summing to 96, each a multiple of vpp=2"
    );
}

/// With the embedding and loss in the split (Llama 3 405B: 126 layers, 128 slots over
/// p = 16, v = 4, 2 a chunk), virtual stage k = c·p + i starts at 2k − 1 (Megatron-Core
/// `get_transformer_layer_offset`: the embedding's slot comes off every offset but the
/// first): stage 0 holds layer 0 alone in its first chunk, then 31..33 (k = 16), 63..65,
/// 95..97; stage 15 ends with layer 125 alone (k = 63, the loss's chunk). Every layer once.
#[test]
fn embedding_and_loss_slots_shift_the_chunks_as_megatron_core() {
    let m = load_model("llama3-405b").unwrap();
    let mut p = plan(8, 8, 16, 4, 512);
    p.split_accounts = crate::spec::SplitAccounts {
        embedding: true,
        loss: true,
    };
    let layouts = crate::cost::stage_layouts(&m, &p);
    let ids = |i: usize, c| {
        chunk_layers(&layouts[i], &p, c)
            .iter()
            .map(|l| l.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(0, 0), [0]);
    assert_eq!(ids(1, 0), [1, 2]);
    assert_eq!(ids(0, 1), [31, 32]);
    assert_eq!(ids(0, 3), [95, 96]);
    assert_eq!(ids(15, 3), [125]);
    let mut all: Vec<u64> = layouts
        .iter()
        .flat_map(|l| l.layers.iter().map(|x| x.0))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..126).collect::<Vec<_>>());
}

/// Gradient accumulation outside the GEMM, per micro-batch: GPT-2 XL whole on one A100
/// (1,557,611,200 parameters, HF `gpt2-xl`). DeepSpeed's BF16 optimizer moves 18 B/param:
/// 28.037 GB at 2,039 GB/s × 0.88 = 15.625 ms + a 4 µs launch; Megatron without fusion
/// 10 B/param: 8.683 ms; fused Megatron nothing (the GEMM epilogue adds into main_grad).
#[test]
fn gradient_accumulation_pass_is_priced_per_micro_batch_by_framework() {
    let gpt = load_model("gpt2-xl").unwrap();
    let c = load_cluster("a100x8").unwrap().with_gpus(1).unwrap();
    let machine = Machine {
        cluster: &c,
        profile: None,
    };
    let bwd = |framework, fused| {
        let mut p = Plan::new(1, 1, 1, 1, 4, 1024);
        p.framework = framework;
        p.grad_accumulation_fusion = fused;
        let pg = PricedGraphs::new(&gpt, &p, &machine);
        stage_work(&gpt, &p, &machine, &pg)[0].chunks[0]
            .bwd
            .compute_s
    };
    let fused = bwd(Framework::Megatron, true);
    let deepspeed = bwd(Framework::DeepSpeed, true) - fused;
    assert!((deepspeed - 15.629e-3).abs() < 0.01e-3, "{deepspeed}");
    let unfused = bwd(Framework::Megatron, false) - fused;
    assert!((unfused - 8.687e-3).abs() < 0.01e-3, "{unfused}");
}

/// FSDP's passes over the gradients before their reduce-scatter, per micro-batch, and the
/// optimizer step by framework: GPT-2 XL (1,557,611,200 parameters) at ZeRO-3 over 8 A100s
/// (2,039 GB/s × 0.88, 4 µs a kernel). Composer's FSDP1 casts the whole flat bf16 gradient
/// to its fp32 reduction dtype, 2 + 4 B/param: 9.346 GB, 5.212 ms; nothing when it reduces
/// in bf16. FSDP2 (torchtitan) copies the gradients into the reduce-scatter input, 2 + 2
/// B/param in bf16 (3.476 ms), 2 + 4 in fp32 (5.212 ms); DDP (ZeRO-0) neither. Under
/// pipelining (pp = 2; stage 0 holds 24 layers of 12h² + 13h and the token and position
/// embeddings, (50,257 + 1,024) · 1,600: 819,828,800 parameters) FSDP2 accumulates every
/// micro-batch's gradient in the fp32 reduction dtype, 2 + 4 + 4 B/param: 4.573 ms. The step:
/// eager AdamW with clipping moves 92 B per shard parameter, 194,701,400 × 92 B = 9.987 ms;
/// Megatron's fused Adam 34 B, 3.693 ms.
#[test]
fn fsdp_gradient_passes_and_optimizer_steps_by_framework() {
    let gpt = load_model("gpt2-xl").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let machine = Machine {
        cluster: &c,
        profile: None,
    };
    let work = |framework, zero, reduce: Option<Dtype>, pp| {
        let mut p = Plan::new(8 / pp, 1, pp, 1, 4, 1024);
        (p.framework, p.zero, p.grad_reduce_dtype) = (framework, zero, reduce);
        let pg = PricedGraphs::new(&gpt, &p, &machine);
        stage_work(&gpt, &p, &machine, &pg).remove(0)
    };
    let bwd =
        |framework, zero, reduce, pp| work(framework, zero, reduce, pp).chunks[0].bwd.compute_s;
    let close = |a: f64, b: f64| assert!((a - b).abs() < 0.002e-3, "{a} vs {b}");
    let (fdn, tt) = (Framework::LlmFoundry, Framework::Torchtitan);
    close(
        bwd(fdn, 3, None, 1) - bwd(fdn, 3, Some(Dtype::Bf16), 1),
        5.2125e-3,
    );
    close(
        bwd(tt, 3, Some(Dtype::Bf16), 1) - bwd(tt, 0, None, 1),
        3.4763e-3,
    );
    close(bwd(tt, 3, None, 1) - bwd(tt, 0, None, 1), 5.2125e-3);
    let stage0 = 819_828_800.0;
    let bw = 2039e9 * 0.88;
    close(
        bwd(tt, 3, None, 2) - bwd(tt, 0, None, 2),
        stage0 * 10.0 / bw + 4e-6,
    );
    // … and once per step, the whole accumulated gradients copied into the reduce-scatter
    // input (4 + 4 B/param) beside the optimizer's 92 B on the shard.
    let step = work(tt, 3, None, 2).optimizer_s;
    close(step, (stage0 * 8.0 + stage0 / 4.0 * 92.0) / bw + 4e-6);
    close(work(fdn, 3, None, 1).optimizer_s, 9.9869e-3);
    close(work(Framework::Megatron, 1, None, 1).optimizer_s, 3.6933e-3);
}

/// Pipeline transfers per pass: GPT-3 175B at tp = 2, pp = 2 on four GPUs of one DGX A100
/// (NVSwitch 300 GB/s × 0.77 = 231 GB/s, 3 µs per step), b·s = 2048 tokens, no sequence
/// parallelism. Megatron-Core sends the whole tensor from each rank, 2048 · 12,288 · 2 =
/// 50,331,648 bytes: 3 µs + 217.886 µs = 220.886 µs, once per pass (receive and send
/// batched). Sequence parallelism sends each rank's TP half, 25,165,824 bytes: 3 µs +
/// 108.943 µs = 111.943 µs. Legacy Megatron's scatter/gather sends the half too and gathers
/// the halves over TP after receipt, an all-gather of 50,331,648 bytes on 2 ranks: 3 µs +
/// ½ · 217.886 µs = 111.943 µs — 223.886 µs. DeepSpeed receives and sends the halves in
/// separate blocking calls (2 × 111.943 µs) and gathers them — 335.83 µs in all.
#[test]
fn pipeline_transfers_by_framework_and_sequence_split() {
    let gpt = load_model("gpt3-175b").unwrap();
    let c = load_cluster("a100x8").unwrap().with_gpus(4).unwrap();
    let machine = Machine {
        cluster: &c,
        profile: None,
    };
    let p2p = |f: &dyn Fn(&mut Plan)| {
        let mut p = Plan::new(1, 2, 2, 1, 4, 2048);
        f(&mut p);
        let pg = PricedGraphs::new(&gpt, &p, &machine);
        stage_work(&gpt, &p, &machine, &pg)[0].p2p_s
    };
    let core = p2p(&|_| {});
    let legacy = p2p(&|p| p.p2p_scatter_gather = true);
    let sp = p2p(&|p| p.sequence_parallel = true);
    let deepspeed = p2p(&|p| p.framework = Framework::DeepSpeed);
    assert!((core - 220.886e-6).abs() < 0.01e-6, "{core}");
    assert!((legacy - 223.886e-6).abs() < 0.01e-6, "{legacy}");
    assert!((sp - 111.943e-6).abs() < 0.01e-6, "{sp}");
    assert!((deepspeed - 335.83e-6).abs() < 0.01e-6, "{deepspeed}");
}

/// The tied-embedding gradient all-reduce between the first and last stage runs over
/// NVLink when one node holds both. GPT-2 XL (vocab 50,257, hidden 1,600; fp32 gradients
/// under Megatron: 4 B) at tp = 1, pp = 2: 50,257 · 1,600 · 4 = 321.6 MB, an all-reduce
/// of 2 ranks moving 2·(2−1)/2 = 1× the bytes. dp = 1 on one DGX A100 (NVSwitch 300 GB/s
/// × 0.77 = 231 GB/s): 321.6e6 / 231e9 = 1.392 ms + 2 steps × 3 µs = 1.398 ms. dp = 8
/// puts the stages on two nodes: one 200 Gb/s HDR NIC × 0.96 = 24 GB/s, 13.40 ms +
/// 2·log2(2)·5 µs = 13.41 ms.
#[test]
fn tied_embedding_reduction_stays_on_the_node_when_both_stages_do() {
    let tied = load_model("gpt2-xl").unwrap();
    assert!(tied.tied_embeddings);
    let mut untied = tied.clone();
    untied.tied_embeddings = false;
    // Stage 0 holds the same parameters either way (the untied LM head sits on the last
    // stage), so the difference of its reductions is the tied pair's all-reduce.
    let pair_s = |c: &ClusterSpec, dp: u64| {
        let machine = Machine {
            cluster: c,
            profile: None,
        };
        let p = Plan::new(dp, 1, 2, 1, 16 * dp, 1024);
        let first = |m: &ModelSpec| {
            let pg = PricedGraphs::new(m, &p, &machine);
            stage_work(m, &p, &machine, &pg)[0].dp_reduce_s
        };
        first(&tied) - first(&untied)
    };
    let one_node = pair_s(&load_cluster("a100x8").unwrap(), 1);
    assert!((one_node - 1.398e-3).abs() < 0.005e-3, "{one_node}");
    let c = load_cluster("a100-80g-x1024")
        .unwrap()
        .with_gpus(16)
        .unwrap();
    let two_nodes = pair_s(&c, 8);
    assert!((two_nodes - 13.41e-3).abs() < 0.05e-3, "{two_nodes}");
}

/// Each stage is priced with its own layers' attention: Llama 3 8B (32 layers) at s = 8192
/// with a 1024-key window from layer 16 on, pp 2: stage 0 holds the 16 full layers and is
/// priced as the model without a window, stage 1 the 16 sliding ones and is priced as the
/// model with a window on every layer (it had been priced at the layers' mean on both).
#[test]
fn each_stage_prices_its_own_layers_windows() {
    use crate::spec::{SlidingWindow, WindowLayers};
    let cluster = load_cluster("h100x8").unwrap();
    let mut p = plan(1, 4, 2, 1, 8);
    p.seq_len = 8192;
    let full = load_model("llama3-8b").unwrap();
    let with = |layers| {
        let mut m = full.clone();
        m.attention_window = Some(SlidingWindow { size: 1024, layers });
        m
    };
    let fwd = |m: &crate::spec::ModelSpec| -> Vec<f64> {
        crate::cost::estimate(m, &cluster, &p, None)
            .stages
            .iter()
            .map(|s| s.fwd_s)
            .collect()
    };
    let (from16, all, none) = (
        fwd(&with(WindowLayers::From(16))),
        fwd(&with(WindowLayers::All)),
        fwd(&full),
    );
    assert_eq!(from16[0], none[0]);
    assert_eq!(from16[1], all[1]);
    assert!(all[1] < none[1], "{all:?} vs {none:?}");
}

/// FP8 weights gathered in FP8 (`--fp8-param-gather`): the distributed optimizer's
/// all-gather moves one byte for each Transformer Engine linear parameter and two for the
/// rest. Llama 3 8B on 8 H100s, dp 8: the linears hold 218,103,808 parameters a layer
/// (Q and O 4096², K and V 4096·1024, gate/up/down 3·4096·14336), 6,979,321,856 over 32
/// layers, all on the one stage; the gather carries 2·P − 6,979,321,856 bytes where P is the
/// stage's parameters, and the reduce-scatter its fp32 gradients as before.
#[test]
fn fp8_weights_are_gathered_in_one_byte() {
    let model = load_model("llama3-8b").unwrap();
    let cluster = load_cluster("h100x8").unwrap();
    let m = Machine {
        cluster: &cluster,
        profile: None,
    };
    let mut p = Plan::new(8, 1, 1, 1, 64, 8192);
    (p.zero, p.dtype, p.fp8_param_gather) = (1, Dtype::Fp8, true);
    assert!(p.check(&model, &cluster).is_empty());
    let pg = PricedGraphs::new(&model, &p, &m);
    let layouts = crate::cost::stage_layouts(&model, &p);
    assert_eq!(
        chunk_fp8_params(&model, &p, &pg, &layouts[0], 0),
        (6_979_321_856.0, 0.0)
    );
    let params = chunk_params(&model, &p, &pg, &layouts[0], 0).0;
    let dp = Placement::of(&p, 8).dp;
    let rs = m.collective_s(Coll::ReduceScatter, dp, 4.0 * params).0;
    let ag = m
        .collective_s(Coll::AllGather, dp, 2.0 * params - 6_979_321_856.0)
        .0;
    let st = &stage_work(&model, &p, &m, &pg)[0];
    assert!((st.dp_reduce_s - (rs + ag)).abs() <= 1e-12 * (rs + ag));
    // Without FP8 weights the gather is the 16-bit one.
    p.fp8_param_gather = false;
    let pg = PricedGraphs::new(&model, &p, &m);
    assert_eq!(
        chunk_fp8_params(&model, &p, &pg, &layouts[0], 0),
        (0.0, 0.0)
    );
    let ag16 = m.collective_s(Coll::AllGather, dp, 2.0 * params).0;
    let st = &stage_work(&model, &p, &m, &pg)[0];
    assert!((st.dp_reduce_s - (rs + ag16)).abs() <= 1e-12 * (rs + ag16));
    assert!(ag < ag16);
}
