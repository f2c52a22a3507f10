//! The search: the space's defaults, enumeration and ranking.

use super::*;
use crate::spec::{load_cluster, load_model};

/// The space's attention follows the framework and the data type in either order: fp32
/// under Megatron prices unfused, under torchtitan (SDPA) flash, even when the framework
/// comes after the type (`suggest --dtype fp32 --export torchtitan` had priced unfused);
/// heads over 256 wide price unfused everywhere.
#[test]
fn space_attention_follows_framework_dtype_and_head_size() {
    let fp32 = Space::new(64, 2048).with_dtype(Dtype::Fp32);
    assert_eq!(fp32.attention, AttentionImpl::Unfused);
    let tt = fp32.clone().for_framework(Framework::Torchtitan);
    assert_eq!(tt.attention, AttentionImpl::Flash);
    assert_eq!(tt.with_head_dim(512).attention, AttentionImpl::Unfused);
    assert_eq!(
        Space::new(64, 2048).with_head_dim(128).attention,
        AttentionImpl::Flash
    );
}

/// Whole experts (etp 1) are enumerated where Megatron-LM runs them, their EP ranks
/// drawn from all tp·cp·dp ranks of a stage (ep 8 with tp 4 on 8 GPUs, dp 2), and not
/// for torchtitan, which refuses them: its search had rejected half its plans so.
#[test]
fn whole_experts_are_enumerated_for_megatron_only() {
    let m = load_model("mixtral-8x7b").unwrap();
    let c = load_cluster("h100x8").unwrap();
    let space = Space::new(64, 4096);
    let plans = enumerate(&m, &c, &space);
    assert!(
        plans
            .iter()
            .any(|p| (p.tp, p.ep, p.etp) == (4, 8, Some(1)) && p.dp == 2)
    );
    assert!(plans.iter().all(|p| p.etp.is_none() || p.tp > 1));
    let tt = enumerate(&m, &c, &space.clone().for_framework(Framework::Torchtitan));
    assert!(tt.iter().all(|p| p.etp.is_none()));
}

/// Llama 3 405B's 126 layers divide over no pp of 16 stages or more, nor interleave evenly;
/// with the embedding and loss in the split (128 slots) Megatron-Core interleaves pp 16 at
/// vpp 2 or 4 (8 and 4 slots a chunk; vpp 8 would leave the embedding alone in a chunk), and
/// the search tries those: the even vpp for pp 16 was only 1 and 7 (126/16 = 7 by integer
/// division, which the checks then refuse). None for pp 2 (126 layers split evenly), none for
/// torchtitan.
#[test]
fn embedding_and_loss_slots_are_searched_where_the_layers_do_not_split() {
    let m = load_model("llama3-405b").unwrap();
    let c = load_cluster("h100-x1024").unwrap();
    let space = Space::new(2048, 8192);
    let plans = enumerate(&m, &c, &space);
    let slots = |pp: u64| {
        let mut v: Vec<(u64, bool, bool)> = plans
            .iter()
            .filter(|p| p.pp == pp && p.split_accounts.any())
            .map(|p| (p.vpp, p.split_accounts.embedding, p.split_accounts.loss))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    assert_eq!(slots(16), [(2, true, true), (4, true, true)]);
    assert_eq!(slots(2), []);
    // pp 4: 128/4 = 32 slots a stage, vpp 2, 4, 8 (4 a chunk); 127 does not split over 4.
    assert_eq!(
        slots(4),
        [(2, true, true), (4, true, true), (8, true, true)]
    );
    let tt = enumerate(&m, &c, &space.clone().for_framework(Framework::Torchtitan));
    assert!(tt.iter().all(|p| !p.split_accounts.any()));
}

/// With one rank per shard group a ZeRO stage shards nothing: the space's lowest stage
/// stands for all (GPT-3 on 64 GPUs had ranked `dp=1 tp=4 pp=16 … zero0` and `… zero1`
/// second and third at one step time), unless the space holds that stage alone; FSDP
/// frameworks keep theirs (their stages lay the state out differently over one rank).
#[test]
fn zero_stages_over_one_rank_are_enumerated_once() {
    let m = load_model("gpt3-175b").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let space = Space::new(64, 2048).for_framework(Framework::DeepSpeed);
    let plans = enumerate(&m, &c, &space);
    let alone = |p: &Plan| p.dp * p.cp == 1;
    assert!(plans.iter().any(|p| alone(p) && p.zero == 0));
    assert!(plans.iter().filter(|p| alone(p)).all(|p| p.zero == 0));
    assert!(plans.iter().any(|p| !alone(p) && p.zero == 1));
    let forced = Space {
        zero: vec![1],
        ..space
    };
    let plans = enumerate(&m, &c, &forced);
    assert!(plans.iter().any(|p| alone(p) && p.zero == 1));
    let tt = enumerate(
        &m,
        &c,
        &Space::new(64, 2048).for_framework(Framework::Torchtitan),
    );
    assert!(tt.iter().any(|p| alone(p) && p.zero == 3));
}

/// FP8 plans under Megatron's distributed optimizer are priced with FP8 weights (less
/// memory, half the gather), and only those; `--no-fp8-param-gather` turns it off.
#[test]
fn fp8_plans_with_the_distributed_optimizer_keep_fp8_weights() {
    let m = load_model("llama3-8b").unwrap();
    let c = load_cluster("h100x8").unwrap();
    let space = Space::new(64, 8192).with_dtype(Dtype::Fp8);
    let plans = enumerate(&m, &c, &space);
    assert!(plans.iter().any(|p| p.zero == 1));
    assert!(plans.iter().all(|p| p.fp8_param_gather == (p.zero == 1)));
    // One data-parallel rank too: FP8 weights are no moot ZeRO stage.
    assert!(plans.iter().any(|p| p.dp * p.cp == 1 && p.fp8_param_gather));
    let off = Space {
        fp8_param_gather: false,
        ..space.clone()
    };
    assert!(enumerate(&m, &c, &off).iter().all(|p| !p.fp8_param_gather));
    let bf16 = Space::new(64, 8192);
    assert!(enumerate(&m, &c, &bf16).iter().all(|p| !p.fp8_param_gather));
    let ds = space.for_framework(Framework::DeepSpeed);
    assert!(enumerate(&m, &c, &ds).iter().all(|p| !p.fp8_param_gather));
}

#[test]
fn search_ranks_fitting_plans_and_tallies_the_rest() {
    let m = load_model("gpt2-xl").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let r = search(&m, &c, None, &Space::new(64, 1024), 5);
    assert_eq!(r.top.len(), 5);
    assert!(
        r.top
            .windows(2)
            .all(|w| w[0].step_time_s <= w[1].step_time_s)
    );
    assert!(r.top.iter().all(|e| e.fits && e.n_gpus == 8));
    // gpt2-xl has 25 heads: tp = 2, 4, 8 never divide them.
    assert!(r.infeasible["tp does not divide heads or kv heads"] > 0);
    assert_eq!(
        r.priced + r.infeasible.values().sum::<usize>(),
        r.enumerated
    );
    assert!(
        r.pareto
            .windows(2)
            .all(|w| w[0].memory_gib_per_gpu > w[1].memory_gib_per_gpu)
    );
}

#[test]
fn lower_bound_never_exceeds_the_estimate() {
    let m = load_model("llama2-7b").unwrap();
    let c = load_cluster("a100x8").unwrap();
    let r = search(&m, &c, None, &Space::new(64, 4096), 50);
    for e in &r.top {
        assert!(
            memory_lower_bound_gib(&m, &e.plan) <= e.memory_gib_per_gpu,
            "{}",
            e.plan.short()
        );
    }
}

#[test]
fn headroom_keeps_memory_free_and_costs_speed_only_when_it_binds() {
    // GPT-3 175B on 128 A100-80GB with 4 M tokens per step: the fastest plans (ILP 2
    // trading recomputed layers for memory) fill the devices to the last GiB, so keeping
    // 6% (4.8 GiB of 80) free must move the answer, never below it.
    let m = load_model("gpt3-175b").unwrap();
    let c = load_cluster("a100-80g-x1024")
        .unwrap()
        .with_gpus(128)
        .unwrap();
    let mut space = Space::new(2048, 2048);
    space.memory_headroom = 0.0;
    let tight = search(&m, &c, None, &space, 3);
    space.memory_headroom = MEMORY_HEADROOM;
    let safe = search(&m, &c, None, &space, 3);
    assert!(
        (safe.headroom_gib - 4.8).abs() < 1e-9,
        "{}",
        safe.headroom_gib
    );
    assert_eq!(tight.headroom_gib, 0.0);
    let peak = |r: &SearchResult| r.top[0].memory_gib_per_gpu;
    assert!(
        peak(&tight) > 75.2,
        "without headroom: {:.1} GiB, {}",
        peak(&tight),
        tight.top[0].plan.short()
    );
    for e in &safe.top {
        assert!(
            e.memory_gib_per_gpu <= 75.2,
            "{}: {:.1}",
            e.plan.short(),
            e.memory_gib_per_gpu
        );
        // Shown against the device, not the planning limit.
        assert_eq!(e.capacity_gib, 80.0);
    }
    // Leaving memory unused can only slow the best plan (it is a subset of the plans).
    assert!(safe.top[0].step_time_s >= tight.top[0].step_time_s);
}

/// Megatron-LM 2021 splits pipeline sends over the TP ranks by default: its search space
/// prices plans so (where it changes the sends), and exports them without
/// `--no-scatter-gather-tensors-in-pipeline`; Megatron-Core's sends whole tensors.
#[test]
fn megatron_2021_space_splits_pipeline_sends() {
    let legacy = Space::new(64, 2048).for_megatron_2021();
    assert!(bare(&legacy, [2, 2, 2, 1, 1, 1, 1]).p2p_scatter_gather);
    assert!(!bare(&legacy, [4, 2, 1, 1, 1, 1, 1]).p2p_scatter_gather);
    assert!(!bare(&legacy, [4, 1, 2, 1, 1, 1, 1]).p2p_scatter_gather);
    let core = Space::new(64, 2048).for_framework(Framework::Megatron);
    assert!(!bare(&core, [2, 2, 2, 1, 1, 1, 1]).p2p_scatter_gather);
}

/// `compare` names the binding reason a method has no plan: where some of its plans passed
/// every check and ran out of memory, memory (QA: Mixtral's TP-only on 8 H100s had read "MoE
/// with tp needs sequence parallelism", the most frequent rejection, though every plan with
/// sequence parallelism is out of memory too); otherwise the most frequent reason.
#[test]
fn compare_names_memory_when_checked_plans_ran_out_of_it() {
    let m = load_model("mixtral-8x7b").unwrap();
    let c = load_cluster("h100x8").unwrap();
    let r = compare::compare(&m, &c, None, &Space::new(64, 4096)).unwrap();
    let tp = r.strategies.iter().find(|s| s.name == "tp-only").unwrap();
    assert!(tp.best.is_none());
    assert_eq!(
        tp.why_none.as_deref(),
        Some(crate::spec::infeasible::OUT_OF_MEMORY)
    );
}
