//! ILP 2's instance for one plan, read off the cost model itself: each stage's time and
//! memory are affine in its layer and recompute counts, so pricing a few probe partitions
//! with `cost::estimate_priced` gives every coefficient exactly — the ILP and the estimate
//! can never disagree about a stage (of whole periods, where a sliding window on one layer in
//! n makes the layers repeat every n: [`period`]). The answer goes back into the plan as
//! `Plan::stage_layers` / `Plan::recompute_layers`, which the cost model honours.

use super::partition::{Partition, PartitionProblem, StageCoeffs};
use crate::cost::{Machine, PricedGraphs, estimate_priced};
use crate::spec::{Framework, ModelSpec, Plan, Recompute, WindowLayers};
use crate::units::GIB;

/// Whether ILP 2 has anything to choose for `plan`: layers alike, or alike over a period
/// ([`period`]), and a partition to choose (pp > 1, no interleaving) or recomputation to
/// choose (full recomputation). Not for uneven interleaved stages (explicit, or the
/// embedding and loss in the split): under interleaving the probes hold the even split fixed
/// (`fixed_layers`).
pub fn applies(model: &ModelSpec, plan: &Plan) -> bool {
    let alike = (0..model.layers).all(|i| model.is_moe_layer(i) == model.is_moe_layer(0));
    let partition = plan.pp > 1 && plan.vpp == 1;
    let recompute = plan.recompute == Recompute::Full;
    let uneven_chunks = plan.vpp > 1 && (plan.stage_layers.is_some() || plan.split_accounts.any());
    alike
        && !uneven_chunks
        && period(model, plan).is_some()
        && plan.pp <= model.layers
        && (partition || recompute)
}

/// Layers after which the layer kinds repeat: 1 where every layer is alike (a sliding window
/// on all layers, or one no shorter than the sequence), n where one layer in n attends to
/// the whole sequence (`WindowLayers::FullEvery`), `None` where the layers from one on slide
/// (`WindowLayers::From`). The probes hold whole periods, so their per-layer coefficients are
/// the period's mean, exact for stages of whole periods; other stages are near it, and every
/// answer is priced again by the cost model before it is adopted (`refine`).
fn period(model: &ModelSpec, plan: &Plan) -> Option<u64> {
    match model.window_at(plan.seq_len).map(|w| w.layers) {
        None | Some(WindowLayers::All) => Some(1),
        Some(WindowLayers::FullEvery(n)) => Some(n),
        Some(WindowLayers::From(_)) => None,
    }
}

/// Per-stage (time per micro-batch, memory bytes) of `plan` with every stage holding `n`
/// layers of which `r` recompute.
fn probe(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
    pg: &PricedGraphs,
    n: u64,
    r: u64,
) -> Vec<(f64, f64)> {
    let mut p = plan.clone();
    p.stage_layers = Some(vec![n; plan.pp as usize]);
    p.recompute_layers = (plan.recompute == Recompute::Full).then(|| vec![r; plan.pp as usize]);
    estimate_priced(model, &p, m, pg)
        .stages
        .iter()
        .map(|s| (s.fwd_s + s.bwd_s, s.memory.total()))
        .collect()
}

/// ILP 2's instance for `plan` (see [`applies`]), its coefficients from four probe
/// partitions: every stage at v and 2v layers without recomputation, and at 2v layers with
/// one and two recomputed (v = vpp). Interleaved stages recompute all their layers or none
/// (`Plan::check`: `PartialRecomputeInterleaved`), and a part recomputed would make their
/// chunks unequal, whose peak the cost model takes chunk by chunk
/// (`memory::peak_chunk_bytes`): they are probed at v and 2v layers all recomputed instead,
/// so chunks stay whole and the coefficients exact for r = 0 or n.
pub fn problem(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
    pg: &PricedGraphs,
) -> Option<PartitionProblem> {
    if !applies(model, plan) {
        return None;
    }
    let v = plan.vpp;
    // Probes of whole interleaved chunks, and of whole periods of layers.
    let step = v * period(model, plan)?;
    let recompute = plan.recompute == Recompute::Full;
    let a = probe(model, plan, m, pg, step, 0);
    let b = probe(model, plan, m, pg, 2 * step, 0);
    let whole = v > 1;
    let (c, d) = match (recompute, whole) {
        (false, _) => (b.clone(), b.clone()),
        (true, false) => (
            probe(model, plan, m, pg, 2 * step, 1),
            probe(model, plan, m, pg, 2 * step, 2),
        ),
        (true, true) => (
            probe(model, plan, m, pg, step, step),
            probe(model, plan, m, pg, 2 * step, 2 * step),
        ),
    };
    let vf = step as f64;
    let stages = (0..plan.pp as usize)
        .map(|i| {
            let time_per_layer_s = (b[i].0 - a[i].0) / vf;
            let mem_per_layer_bytes = (b[i].1 - a[i].1) / vf;
            let time_fixed_s = a[i].0 - vf * time_per_layer_s;
            let mem_fixed_bytes = a[i].1 - vf * mem_per_layer_bytes;
            // Time and memory at (n, r): fixed + n·per layer + r·per recomputed, and memory
            // [r > 0]·recompute fixed besides.
            let (time_per_recomputed_s, mem_per_recomputed_bytes, mem_recompute_fixed_bytes) =
                if whole && recompute {
                    // c = (step, step), d = (2·step, 2·step).
                    let tr = (d[i].0 - c[i].0) / vf - time_per_layer_s;
                    let mr = (d[i].1 - c[i].1) / vf - mem_per_layer_bytes;
                    let fixed = c[i].1 - mem_fixed_bytes - vf * (mem_per_layer_bytes + mr);
                    (tr, mr, fixed)
                } else {
                    // c = (2·step, 1), d = (2·step, 2).
                    let mr = d[i].1 - c[i].1;
                    (c[i].0 - b[i].0, mr, c[i].1 - b[i].1 - mr)
                };
            StageCoeffs {
                time_fixed_s,
                time_per_layer_s,
                time_per_recomputed_s,
                mem_fixed_bytes,
                mem_recompute_fixed_bytes,
                mem_per_layer_bytes,
                mem_per_recomputed_bytes,
            }
        })
        .collect();
    Some(PartitionProblem {
        layers: model.layers,
        stages,
        n_micro: plan.n_micro(),
        vpp: v,
        capacity_bytes: m.cluster.gpu.memory_gib * GIB,
        fixed_layers: (v > 1).then(|| model.layers / plan.pp),
        recompute,
        // Megatron-LM launches only its own form of split and recomputation.
        megatron: plan.framework == Framework::Megatron,
    })
}

/// `plan` with ILP 2's partition: explicit stage layers unless uniform, explicit recompute
/// counts unless every layer recomputes; a full-recompute plan whose answer recomputes nothing
/// becomes a plan without recomputation.
pub fn apply(model: &ModelSpec, plan: &Plan, part: &Partition) -> Plan {
    let mut p = plan.clone();
    let n = &part.stage_layers;
    let uniform = model.layers % plan.pp == 0 && n.iter().all(|&x| x == model.layers / plan.pp);
    if plan.vpp == 1 {
        p.stage_layers = (!uniform).then(|| n.clone());
    }
    if plan.recompute == Recompute::Full {
        let r = &part.recompute_layers;
        if r.iter().all(|&x| x == 0) {
            p.recompute = Recompute::None;
            p.recompute_layers = None;
        } else {
            p.recompute_layers = (r != n).then(|| r.clone());
        }
    }
    p
}

/// Layers per stage when pp does not divide them, as `framework` can set them (a start that
/// prices; ILP 2 then balances it): Megatron-LM sets only the first and last stage's counts
/// and splits the rest evenly, so the middle stages take ⌈L/p⌉ each (⌊L/p⌋ where that leaves
/// the ends less than a layer each) and the ends share the rest; otherwise the remainder goes
/// to the middle stages, away from the embedding and the head.
pub fn start_split(layers: u64, pp: u64, framework: Framework) -> Vec<u64> {
    if framework != Framework::Megatron || pp < 3 {
        return balanced(layers, pp);
    }
    let middle = pp - 2;
    let m = [layers.div_ceil(pp), layers / pp]
        .into_iter()
        .find(|&m| m >= 1 && layers >= middle * m + 2)
        .unwrap_or(1);
    let rest = layers.saturating_sub(middle * m);
    let mut n = vec![m; pp as usize];
    (n[0], n[pp as usize - 1]) = (rest / 2, rest - rest / 2);
    n
}

/// The partitions Megatron-LM can launch (equal middle stages, the first and last set apart:
/// `--decoder-first/last-pipeline-num-layers`) near the even split, for a plan ILP 2 cannot
/// model (layers of several kinds, DeepSeek's dense layers first): middle stages of ⌈L/p⌉ − 1
/// to ⌈L/p⌉ + 1 layers and every split of the rest between the ends, each end at least one
/// layer and at most twice a middle stage. The search prices each (`refine`), so the ends'
/// embedding, head and multi-token prediction weigh as the cost model weighs them.
pub fn end_splits(layers: u64, pp: u64) -> Vec<Vec<u64>> {
    if pp < 3 {
        return Vec::new();
    }
    let mid = layers.div_ceil(pp);
    let mut out = Vec::new();
    for m in mid.saturating_sub(1).max(1)..=mid + 1 {
        let Some(rest) = layers.checked_sub((pp - 2) * m).filter(|&r| r >= 2) else {
            continue;
        };
        for first in 1..rest {
            let last = rest - first;
            if first <= 2 * m && last <= 2 * m {
                let mut n = vec![m; pp as usize];
                (n[0], n[pp as usize - 1]) = (first, last);
                out.push(n);
            }
        }
    }
    out
}

/// Layers per stage when pp does not divide them: the remainder goes to the middle stages,
/// away from the embedding and the head (a start that prices; ILP 2 then balances it).
pub fn balanced(layers: u64, pp: u64) -> Vec<u64> {
    let (base, extra) = (layers / pp, layers % pp);
    let start = (pp - extra) / 2;
    (0..pp)
        .map(|i| base + u64::from(i >= start && i < start + extra))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::estimate;
    use crate::search::ilp::{IlpOptions, SplitMix, partition};
    use crate::spec::{ClusterSpec, Schedule, load_cluster, load_model};

    fn plan(m: &ModelSpec, (dp, tp, pp, vpp): (u64, u64, u64, u64), rc: Recompute) -> Plan {
        let mut p = Plan::new(dp, tp, pp, 1, 512, m.seq_len);
        p.recompute = rc;
        p.zero = 1;
        p.sequence_parallel = true;
        p.overlap_grad_reduce = true;
        if vpp > 1 {
            p.vpp = vpp;
            p.schedule = Schedule::Interleaved;
        }
        p
    }

    fn x1024() -> ClusterSpec {
        load_cluster("a100-80g-x1024").unwrap()
    }

    /// The affine stage model read off four probes reproduces the cost model's per-stage time
    /// and memory for arbitrary layer and recompute counts (interleaved chunks included).
    #[test]
    fn affine_stages_reproduce_the_cost_model() {
        let c = x1024();
        let mach = Machine {
            cluster: &c,
            profile: None,
        };
        let mut rng = SplitMix(7);
        for (name, shape) in [("llama3-8b", (64, 4, 4, 1)), ("gpt3-175b", (16, 8, 8, 3))] {
            let m = load_model(name).unwrap();
            let p = plan(&m, shape, Recompute::Full);
            let pg = PricedGraphs::new(&m, &p, &mach);
            let prob = problem(&m, &p, &mach, &pg).unwrap();
            for _ in 0..5 {
                // Interleaved chunks are uniform: one count for every stage.
                let k = rng.int(1, 6);
                let n: Vec<u64> = (0..p.pp)
                    .map(|_| p.vpp * if p.vpp > 1 { k } else { rng.int(1, 6) })
                    .collect();
                // Interleaved stages recompute all their layers or none (`problem`).
                let r: Vec<u64> = n
                    .iter()
                    .map(|&x| match p.vpp {
                        1 => rng.int(0, x),
                        _ => x * rng.int(0, 1),
                    })
                    .collect();
                let mut q = p.clone();
                q.stage_layers = Some(n.clone());
                q.recompute_layers = Some(r.clone());
                let e = estimate_priced(&m, &q, &mach, &pg);
                for (i, st) in e.stages.iter().enumerate() {
                    let s = &prob.stages[i];
                    let (t, mem) = (s.time_s(n[i], r[i]), s.mem_bytes(n[i], r[i]));
                    assert!(
                        (t - st.fwd_s - st.bwd_s).abs() < 1e-9 * t,
                        "{name} stage {i}"
                    );
                    assert!(
                        (mem - st.memory.total()).abs() < 1e-6 * mem,
                        "{name} stage {i}: n {n:?} r {r:?}: {mem} vs {}",
                        st.memory.total()
                    );
                }
            }
        }
    }

    /// Issue 4: with Llama 3's 128,256-token vocabulary the LM head and loss weigh over two
    /// layers: ILP 2 gives the last stage fewer layers, never gives the first stage (which
    /// holds the most micro-batches in flight) more than the even share, and the cost model
    /// prices the result faster than the even split.
    #[test]
    fn large_vocabulary_gets_fewer_layers_at_both_ends() {
        let c = x1024();
        let mach = Machine {
            cluster: &c,
            profile: None,
        };
        for (name, shape, gain) in [
            ("llama3-8b", (64, 4, 4, 1), 0.95),
            ("llama3-70b", (16, 8, 8, 1), 0.999),
        ] {
            let m = load_model(name).unwrap();
            let p = plan(&m, shape, Recompute::None);
            let pg = PricedGraphs::new(&m, &p, &mach);
            // Any split, not only Megatron-LM's form (its own test is in `partition`).
            let prob = PartitionProblem {
                megatron: false,
                ..problem(&m, &p, &mach, &pg).unwrap()
            };
            let part = partition::solve(&prob, &IlpOptions::default()).unwrap();
            let even = m.layers / p.pp;
            let n = &part.stage_layers;
            assert!(n[0] <= even && n[n.len() - 1] < even, "{name}: {n:?}");
            assert_eq!(n.iter().sum::<u64>(), m.layers);
            let q = apply(&m, &p, &part);
            assert_eq!(q.stage_layers.as_ref(), Some(n));
            assert!(q.check(&m, &c).is_empty());
            let (before, after) = (estimate(&m, &c, &p, None), estimate(&m, &c, &q, None));
            assert!(after.fits, "{name}");
            assert!(
                after.step_time_s < gain * before.step_time_s,
                "{name}: {} vs even {}",
                after.step_time_s,
                before.step_time_s
            );
        }
    }

    /// Full recomputation is chosen per stage: with room to spare nothing recomputes (the plan
    /// becomes one without recomputation); on a device a third the size, only the stages
    /// that need it recompute, earlier stages (more micro-batches in flight) at least as
    /// many layers as later ones.
    #[test]
    fn recomputation_only_where_memory_needs_it() {
        let mut c = x1024();
        let m = load_model("llama3-8b").unwrap();
        let p = plan(&m, (64, 4, 4, 1), Recompute::Full);
        let solve = |c: &ClusterSpec| {
            let mach = Machine {
                cluster: c,
                profile: None,
            };
            let pg = PricedGraphs::new(&m, &p, &mach);
            let prob = problem(&m, &p, &mach, &pg).unwrap();
            partition::solve(&prob, &IlpOptions::default()).unwrap()
        };
        let roomy = solve(&c);
        assert!(roomy.recompute_layers.iter().all(|&r| r == 0));
        assert_eq!(apply(&m, &p, &roomy).recompute, Recompute::None);
        c.gpu.memory_gib = 10.0;
        let tight = solve(&c);
        let r = &tight.recompute_layers;
        assert!(r.iter().any(|&x| x > 0), "{r:?}");
        assert!(
            r.iter().zip(&tight.stage_layers).any(|(r, n)| r < n),
            "{r:?}"
        );
        assert!(r.windows(2).all(|w| w[0] >= w[1]), "{r:?}");
        let q = apply(&m, &p, &tight);
        let e = estimate(&m, &c, &q, None);
        assert!(e.fits, "{} GiB", e.memory_gib_per_gpu);
    }

    /// Windows and ILP 2: a window on every layer keeps the layers alike; one layer in 2
    /// full repeats every 2 layers, so the probes hold whole pairs and a stage of whole pairs
    /// is priced by the ILP's coefficients exactly as by the cost model; windows from a layer
    /// on make the stages unlike, and the ILP stands aside.
    #[test]
    fn windows_repeat_over_a_period_or_make_layers_unlike() {
        use crate::spec::SlidingWindow;
        let c = x1024();
        let mut m = load_model("llama3-8b").unwrap();
        let p = plan(&m, (1, 8, 4, 1), Recompute::None);
        let window = |size, layers| Some(SlidingWindow { size, layers });
        m.attention_window = window(1024, WindowLayers::All);
        assert_eq!((applies(&m, &p), period(&m, &p)), (true, Some(1)));
        m.attention_window = window(1024, WindowLayers::From(16));
        assert!(!applies(&m, &p));
        m.attention_window = window(1024, WindowLayers::FullEvery(2));
        assert_eq!((applies(&m, &p), period(&m, &p)), (true, Some(2)));
        let mach = Machine {
            cluster: &c,
            profile: None,
        };
        let pg = PricedGraphs::new(&m, &p, &mach);
        let prob = problem(&m, &p, &mach, &pg).unwrap();
        let mut even = p.clone();
        even.stage_layers = Some(vec![6, 10, 8, 8]);
        let est = estimate_priced(&m, &even, &mach, &pg);
        for (i, n) in [6.0, 10.0, 8.0, 8.0].into_iter().enumerate() {
            let k = &prob.stages[i];
            let ilp = k.time_fixed_s + n * k.time_per_layer_s;
            let cost = est.stages[i].fwd_s + est.stages[i].bwd_s;
            assert!(
                (ilp / cost - 1.0).abs() < 1e-9,
                "stage {i}: {ilp} vs {cost}"
            );
        }
    }

    #[test]
    fn balanced_split_gives_the_remainder_to_middle_stages() {
        assert_eq!(balanced(128, 5), vec![25, 26, 26, 26, 25]);
        assert_eq!(balanced(10, 4), vec![2, 3, 3, 2]);
        assert_eq!(balanced(8, 4), vec![2, 2, 2, 2]);
    }

    /// The Megatron splits priced for DeepSeek-V3's 61 layers over 16 stages: middle stages of
    /// ⌈61/16⌉ = 4 leave 61 − 14·4 = 5 for the ends, (1, 4) to (4, 1); 3 would leave 19, more
    /// than twice 3 at an end, and 5 more layers than there are. Two stages have no middle.
    #[test]
    fn end_splits_keep_the_middle_stages_equal() {
        let splits = end_splits(61, 16);
        let ends: Vec<(u64, u64)> = splits.iter().map(|n| (n[0], n[15])).collect();
        assert_eq!(ends, [(1, 4), (2, 3), (3, 2), (4, 1)]);
        assert!(splits.iter().all(|n| n[1..15].iter().all(|&m| m == 4)));
        assert!(end_splits(61, 2).is_empty());
    }

    /// Megatron-LM's start keeps the middle stages equal, so every pipeline depth reaches the
    /// search (the middle-remainder start had made BERT-large's 24 layers over 7 stages,
    /// 3,3,4,4,4,3,3, a split Megatron cannot set, and dropped pp = 7 whole): 24 over 7 is
    /// 2, 4×5, 2 (⌈24/7⌉ = 4 in the middle); over 16, ⌈24/16⌉ = 2 leaves the ends −4, so 1
    /// in the middle and 5 at each end; the Megatron exporter writes each.
    #[test]
    fn megatron_start_splits_are_ones_it_sets() {
        assert_eq!(
            start_split(24, 7, Framework::Megatron),
            [2, 4, 4, 4, 4, 4, 2]
        );
        let mut sixteen = vec![1; 16];
        (sixteen[0], sixteen[15]) = (5, 5);
        assert_eq!(start_split(24, 16, Framework::Megatron), sixteen);
        assert_eq!(start_split(10, 4, Framework::DeepSpeed), balanced(10, 4));
        let m = load_model("bert-large").unwrap();
        for pp in [5, 7, 9, 10, 11, 16] {
            let mut p = Plan::new(1, 1, pp, 1, 64, m.seq_len);
            p.stage_layers = Some(start_split(m.layers, pp, Framework::Megatron));
            assert!(crate::spec::launch::runnable(&m, &p), "pp {pp}");
        }
    }
}
