//! Tests of the lowering: rank order and groups, matched transfers, schedules that run to the
//! end, prices that recompose the estimate, activations held as the closed form says.

use super::*;
use crate::cost::{estimate, memory::in_flight_chunks};
use crate::spec::{AttentionImpl, Schedule, TpOverlap, load_cluster};
use std::collections::HashMap;

const SMALL: &str =
    "name: small\narch: gpt\nlayers: 4\nhidden: 512\nheads: 8\nvocab: 8192\nseq_len: 256\n";

fn small() -> ModelSpec {
    ModelSpec::from_yaml("small.yaml", SMALL).unwrap()
}

fn plan(dp: u64, tp: u64, pp: u64, gb: u64) -> Plan {
    let mut p = Plan::new(dp, tp, pp, 1, gb, 256);
    p.attention = AttentionImpl::Unfused;
    p.tp_overlap = TpOverlap::None;
    p
}

fn lowered(p: &Plan) -> (Lowered, crate::spec::ClusterSpec) {
    lowered_for(&small(), p)
}

fn lowered_for(model: &ModelSpec, p: &Plan) -> (Lowered, crate::spec::ClusterSpec) {
    let c = load_cluster("a100x8")
        .unwrap()
        .with_gpus(p.n_gpus())
        .unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    (lower(model, p, &m).unwrap(), c)
}

#[test]
fn ranks_follow_megatron_order_and_groups_their_coordinates() {
    // dp = tp = pp = 2: rank = tp + 2·dp + 4·pp.
    let p = plan(2, 2, 2, 8);
    for r in 0..8 {
        assert_eq!(Coords::of(&p, r).rank(&p), r);
    }
    assert_eq!(
        Coords::of(&p, 6),
        Coords {
            tp: 0,
            cp: 0,
            dp: 1,
            pp: 1
        }
    );
    let (groups, _) = make_groups(&p);
    let of = |kind| members(&groups, kind);
    assert_eq!(
        of(GroupKind::Tp),
        vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
    );
    assert_eq!(
        of(GroupKind::Dp),
        vec![vec![0, 2], vec![1, 3], vec![4, 6], vec![5, 7]]
    );
    assert_eq!(
        of(GroupKind::Pp),
        vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]
    );
    // No context or expert parallelism: no such groups.
    assert!(of(GroupKind::Cp).is_empty() && of(GroupKind::Ep).is_empty());
}

/// The members of every `kind` group, in group order.
fn members(groups: &[GroupDef], kind: GroupKind) -> Vec<Vec<u64>> {
    groups
        .iter()
        .filter(|g| g.kind == kind)
        .map(|g| g.members.clone())
        .collect()
}

/// Megatron-Core folds CP into the expert layers' data parallelism: with tp 2, cp 2, dp 2 and
/// ep 4, each TP rank's four dp·cp ranks (tp + 2·(cp + 2·dp)) form one EP group, ep dividing
/// dp·cp = 4 though not dp = 2; the CP groups stay the attention's.
#[test]
fn expert_groups_span_the_context_parallel_ranks() {
    let mut p = Plan::new(2, 2, 1, 1, 8, 4096);
    (p.cp, p.ep) = (2, 4);
    let (groups, _) = make_groups(&p);
    let of = |kind| members(&groups, kind);
    assert_eq!(of(GroupKind::Ep), vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
    assert_eq!(
        of(GroupKind::Cp),
        vec![vec![0, 2], vec![1, 3], vec![4, 6], vec![5, 7]]
    );
    // One expert copy per EP group: no expert-DP reduction.
    assert!(of(GroupKind::ExpertDp).is_empty());
}

/// Whole experts per rank (etp 1) lay the stage's tp·cp·dp ranks out as ep × expert-dp,
/// the TP ranks included: tp 2, dp 4, ep 4 makes EP groups of four adjacent ranks and pairs
/// them across for the expert gradients; at etp = tp the same sizes stride EP by tp.
#[test]
fn whole_experts_take_adjacent_ranks_for_expert_parallelism() {
    let mut p = Plan::new(4, 2, 1, 1, 8, 4096);
    (p.ep, p.etp) = (4, Some(1));
    let (groups, _) = make_groups(&p);
    let of = |kind| members(&groups, kind);
    assert_eq!(of(GroupKind::Ep), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    assert_eq!(
        of(GroupKind::ExpertDp),
        vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]
    );
    assert_eq!(p.expert_dp(), 2);
    p.etp = None;
    let (groups, _) = make_groups(&p);
    let of = |kind| members(&groups, kind);
    assert_eq!(of(GroupKind::Ep), vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
    assert!(of(GroupKind::ExpertDp).is_empty());
}

/// Runs every program with sends that never block, receives that wait for their message and
/// collectives that wait for every member; returns the number of instructions run, or the
/// ranks still waiting when nothing can move (a deadlock).
fn run_abstract(l: &Lowered) -> Result<usize, Vec<u64>> {
    let n = l.programs.len();
    let mut pc = vec![0usize; n];
    let mut mail: HashMap<(u64, u64, u64), usize> = HashMap::new();
    let mut calls = vec![HashMap::<usize, usize>::new(); n];
    let mut ran = 0;
    loop {
        let mut moved = false;
        for r in 0..n {
            while let Some(i) = l.programs[r].instrs.get(pc[r]) {
                match &i.op {
                    Op::Send { peer, tag, .. } => {
                        *mail.entry((r as u64, *peer, *tag)).or_default() += 1;
                    }
                    Op::Recv { peer, tag, .. } => {
                        let k = (*peer, r as u64, *tag);
                        match mail.get_mut(&k) {
                            Some(c) if *c > 0 => *c -= 1,
                            _ => break,
                        }
                    }
                    Op::Coll { group, .. } => {
                        // Ready when every member's next instruction is its matching call.
                        let mine = calls[r].get(group).copied().unwrap_or(0);
                        let ready = l.groups[*group].members.iter().all(|&q| {
                            let q = q as usize;
                            let at = l.programs[q].instrs.get(pc[q]);
                            matches!(at.map(|x| &x.op), Some(Op::Coll { group: g, .. }) if g == group)
                                && calls[q].get(group).copied().unwrap_or(0) == mine
                        });
                        if !ready {
                            break;
                        }
                        for &q in &l.groups[*group].members {
                            let q = q as usize;
                            *calls[q].entry(*group).or_default() += 1;
                            pc[q] += 1;
                            ran += 1;
                        }
                        moved = true;
                        continue;
                    }
                    _ => {}
                }
                pc[r] += 1;
                ran += 1;
                moved = true;
            }
        }
        let waiting: Vec<u64> = (0..n)
            .filter(|&r| pc[r] < l.programs[r].instrs.len())
            .map(|r| r as u64)
            .collect();
        if waiting.is_empty() {
            assert!(mail.values().all(|&c| c == 0), "unreceived messages");
            return Ok(ran);
        }
        if !moved {
            return Err(waiting);
        }
    }
}

#[test]
fn every_schedule_runs_to_the_end_with_every_message_received() {
    let mut cases = vec![plan(2, 2, 2, 8), plan(1, 1, 4, 8), plan(2, 1, 2, 4)];
    let mut gpipe = plan(1, 2, 2, 6);
    gpipe.schedule = Schedule::Gpipe;
    gpipe.framework = crate::spec::Framework::Torchtitan;
    cases.push(gpipe);
    let mut inter = plan(1, 1, 2, 4);
    inter.vpp = 2;
    inter.schedule = Schedule::Interleaved;
    cases.push(inter);
    let mut inter4 = plan(1, 2, 2, 8);
    inter4.vpp = 2;
    inter4.schedule = Schedule::Interleaved;
    inter4.zero = 1;
    cases.push(inter4);
    // torchtitan, which alone runs GPipe, ties no weights across stages: the GPipe case
    // lowers the model untied.
    let mut untied = small();
    untied.tied_embeddings = false;
    for p in cases {
        let m = if p.schedule == Schedule::Gpipe {
            untied.clone()
        } else {
            small()
        };
        let (l, c) = lowered_for(&m, &p);
        assert!(p.check(&m, &c).is_empty(), "{}", p.short());
        let total: usize = l.programs.iter().map(|x| x.instrs.len()).sum();
        assert_eq!(run_abstract(&l), Ok(total), "{}", p.short());
    }
}

/// Experts run to the end too, split over the TP ranks or whole (etp 1, whose EP group of
/// four takes both TP ranks of two data-parallel replicas), with ZeRO-1 reducing the expert
/// gradients over their own expert-DP groups.
#[test]
fn expert_layouts_run_to_the_end() {
    let moe = ModelSpec::from_yaml(
        "moe.yaml",
        "name: moe\narch: llama\nlayers: 2\nhidden: 256\nheads: 4\nffn_hidden: 512\nvocab: 1024\nseq_len: 128\nmoe: {experts: 4, top_k: 2}\n",
    )
    .unwrap();
    let c = load_cluster("a100x8").unwrap().with_gpus(8).unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    for (ep, etp) in [(2, None), (4, Some(1))] {
        let mut p = Plan::new(4, 2, 1, 1, 8, 128);
        (p.ep, p.etp, p.sequence_parallel, p.zero) = (ep, etp, true, 1);
        assert!(p.check(&moe, &c).is_empty(), "{:?}", p.check(&moe, &c));
        let l = lower(&moe, &p, &m).unwrap();
        let total: usize = l.programs.iter().map(|x| x.instrs.len()).sum();
        assert_eq!(run_abstract(&l), Ok(total), "{}", p.short());
    }
}

#[test]
fn transfers_pair_up_and_stages_exchange_every_micro_batch() {
    // pp = 2, 1F1B, 4 micro-batches: stage 0 sends 4 activations and receives 4 gradients
    // of b·s·h·2 = 256·512·2 bytes; its first instruction is compute, stage 1's a receive.
    let p = plan(1, 1, 2, 4);
    let (l, _) = lowered(&p);
    let count =
        |r: usize, f: fn(&Op) -> bool| l.programs[r].instrs.iter().filter(|i| f(&i.op)).count();
    assert_eq!(count(0, |o| matches!(o, Op::Send { .. })), 4);
    assert_eq!(count(0, |o| matches!(o, Op::Recv { .. })), 4);
    assert!(
        l.programs[0].instrs.iter().any(
            |i| matches!(i.op, Op::Send { peer: 1, bytes, .. } if bytes == 256.0 * 512.0 * 2.0)
        )
    );
    assert!(!matches!(l.programs[0].instrs[0].op, Op::Recv { .. }));
    assert!(matches!(
        l.programs[1].instrs[0].op,
        Op::Recv { peer: 0, .. }
    ));
}

/// Peak number of slots kept at once.
fn peak_kept(p: &Program) -> usize {
    let (mut now, mut peak) = (0usize, 0usize);
    for i in &p.instrs {
        match i.op {
            Op::Keep { .. } => now += 1,
            Op::Release { .. } => now -= 1,
            _ => {}
        }
        peak = peak.max(now);
    }
    assert_eq!(now, 0, "every kept slot is released");
    peak
}

#[test]
fn activations_in_flight_match_the_closed_form() {
    // 1F1B on 4 stages with 8 micro-batches: stage i holds min(p − i, m); GPipe all 8.
    let mut p = plan(1, 1, 4, 8);
    for schedule in [Schedule::OneFOneB, Schedule::Gpipe] {
        p.schedule = schedule;
        let (l, _) = lowered(&p);
        for (i, prog) in l.programs.iter().enumerate() {
            assert_eq!(
                peak_kept(prog) as f64,
                in_flight_chunks(&p, i as u64),
                "{schedule:?} stage {i}"
            );
        }
    }
}

#[test]
fn prices_recompose_the_estimate_of_one_stage() {
    // dp = 2, no pipeline, nothing overlapped: the program's GEMM and memory-bound seconds
    // are the estimate's compute, its TP and DP collectives and optimizer step the same
    // terms, and nothing is left for the bubble.
    for p in [plan(2, 1, 1, 4), plan(1, 2, 1, 4)] {
        let (l, c) = lowered(&p);
        let e = estimate(&small(), &c, &p, None);
        let prog = &l.programs[0];
        let b = &e.breakdown;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.max(1e-12);
        let compute = prog.predicted(Class::Gemm) + prog.predicted(Class::Memory);
        assert!(close(compute, b.compute_s), "{compute} vs {}", b.compute_s);
        assert!(close(prog.predicted(Class::TpComm), b.tp_comm_s));
        assert!(close(prog.predicted(Class::DpComm), b.dp_comm_s));
        assert!(close(prog.predicted(Class::Optimizer), b.optimizer_s));
        let all: f64 = prog.instrs.iter().map(|i| i.predicted_s).sum();
        assert!(close(all, e.step_time_s), "{all} vs {}", e.step_time_s);
    }
}

#[test]
fn recomputation_reruns_the_forward_before_the_backward() {
    // Full recomputation re-runs every forward kernel once: the recompute seconds equal the
    // forward compute of the layers (the embedding and head are not recomputed).
    let mut p = plan(1, 1, 1, 2);
    p.recompute = Recompute::Full;
    let (l, c) = lowered(&p);
    let e = estimate(&small(), &c, &p, None);
    let rc = l.programs[0].predicted(Class::Recompute);
    assert!((rc - e.breakdown.recompute_s).abs() <= 1e-9 * rc, "{rc}");
    assert!(rc > 0.0);
}
