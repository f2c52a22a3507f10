//! `planner bench`: named speed benchmarks of the library — the simulator's registry here and
//! the search's cases (`search::bench`) — timed with the wall clock here at the edge (the
//! library stays clock-free); tests never assert timings.

use super::{CliError, render};
use crate::cost::stages::{StageWork, stage_work};
use crate::cost::{Machine, PricedGraphs};
use crate::search::{bench, search};
use crate::sim::{self, Pipeline};
use crate::spec::{self, Plan, Recompute, Schedule};
use std::hint::black_box;
use std::time::Instant;

/// One benchmark: `setup` loads its inputs (untimed) and returns the work to time.
struct Bench {
    name: &'static str,
    what: &'static str,
    goal_ms: Option<f64>,
    setup: fn() -> Box<dyn FnMut()>,
}

/// Every benchmark, by name. Add new ones here.
const BENCHES: &[Bench] = &[
    Bench {
        name: "sim-gpt3-175b-pp16-m192",
        what: "price + simulate gpt3-175b on a100-80g-x1024 (tp 8, pp 16, dp 8, 192 \
               micro-batches, 1F1B), no trace — issue 5 goal",
        goal_ms: Some(50.0),
        setup: || gpt3_plan_sim(Schedule::OneFOneB, 1, false),
    },
    Bench {
        name: "sim-gpt3-175b-pp16-m192-trace",
        what: "the same, recording the timeline and writing its Chrome trace JSON to memory",
        goal_ms: None,
        setup: || gpt3_plan_sim(Schedule::OneFOneB, 1, true),
    },
    Bench {
        name: "sim-gpt3-175b-pp16-m192-v6",
        what: "price + simulate the same plan interleaved with 6 chunks per stage",
        goal_ms: Some(50.0),
        setup: || gpt3_plan_sim(Schedule::Interleaved, 6, false),
    },
    Bench {
        name: "sim-loop-gpt3-175b-pp16-m192",
        what: "the event loop alone on pre-priced stage work (1F1B)",
        goal_ms: None,
        setup: gpt3_event_loop,
    },
];

fn gpt3() -> (spec::ModelSpec, spec::ClusterSpec, Plan) {
    let model = spec::load_model("gpt3-175b").expect("preset");
    let cluster = spec::load_cluster("a100-80g-x1024").expect("preset");
    let mut plan = Plan::new(8, 8, 16, 1, 1536, 2048);
    plan.recompute = Recompute::Selective;
    plan.zero = 1;
    plan.sequence_parallel = true;
    (model, cluster, plan)
}

fn gpt3_plan_sim(schedule: Schedule, vpp: u64, trace: bool) -> Box<dyn FnMut()> {
    let (model, cluster, mut plan) = gpt3();
    plan.schedule = schedule;
    plan.vpp = vpp;
    Box::new(move || {
        let ps = sim::simulate_plan(&model, &cluster, None, &plan, trace).expect("valid plan");
        if let Some(t) = &ps.sim.trace {
            black_box(t.to_json());
        }
        black_box(ps);
    })
}

fn gpt3_event_loop() -> Box<dyn FnMut()> {
    let (model, cluster, plan) = gpt3();
    let m = Machine {
        cluster: &cluster,
        profile: None,
    };
    let pg = PricedGraphs::new(&model, &plan, &m);
    let work: Vec<StageWork> = stage_work(&model, &plan, &m, &pg);
    Box::new(move || {
        let pipe = Pipeline {
            stages: &work,
            schedule: plan.schedule,
            n_micro: plan.n_micro(),
            grad_sync: crate::cost::stages::grad_sync(&plan),
        };
        black_box(sim::simulate(&pipe, false).expect("valid pipeline"));
    })
}

/// Median, min and mean milliseconds of `iters` timed runs of `work` after one warm-up.
fn time(iters: u32, mut work: impl FnMut()) -> (f64, f64, f64) {
    work();
    let mut ms: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            work();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (
        ms[ms.len() / 2],
        ms[0],
        ms.iter().sum::<f64>() / ms.len() as f64,
    )
}

fn goal(median_ms: f64, goal_ms: Option<f64>) -> String {
    goal_ms.map_or("-".into(), |g| {
        let ok = if median_ms <= g { "met" } else { "MISSED" };
        format!("≤ {g:.0} ({ok})")
    })
}

/// Runs the benchmark called `name` (all when `None`): the simulator benchmarks above and
/// the search's (`search::bench::cases`, issue 4's goals), `iters` timed runs each after one
/// warm-up (at most 3 for the searches, which take up to seconds), with min/median/mean wall
/// time against each goal and, for searches, plans priced per second.
pub fn run(name: Option<&str>, iters: u32) -> Result<String, CliError> {
    if iters == 0 || iters > 10_000 {
        return Err(CliError::BadInput(format!(
            "--iters {iters}: give 1 to 10000 timed runs (each benchmark keeps every time to take the median)"
        )));
    }
    let searches = bench::cases()?;
    let wanted = |n: &str| name.is_none_or(|x| x == n);
    let sims: Vec<&Bench> = BENCHES.iter().filter(|b| wanted(b.name)).collect();
    let finds: Vec<&bench::BenchCase> = searches.iter().filter(|c| wanted(c.name)).collect();
    if sims.is_empty() && finds.is_empty() {
        let names: Vec<&str> = BENCHES
            .iter()
            .map(|b| b.name)
            .chain(searches.iter().map(|c| c.name))
            .collect();
        return Err(CliError::BadInput(format!(
            "bench: unknown benchmark `{}`; choose one of: {}",
            name.unwrap_or_default(),
            names.join(", ")
        )));
    }
    let mut rows = Vec::new();
    for b in sims {
        let (median, min, mean) = time(iters, (b.setup)());
        rows.push(vec![
            b.name.to_string(),
            format!("{:.2}", min),
            format!("{median:.2}"),
            format!("{mean:.2}"),
            goal(median, b.goal_ms),
            "-".into(),
            b.what.to_string(),
        ]);
    }
    for c in finds {
        let mut priced = 0;
        let mut ilp = 0;
        let (median, min, mean) = time(iters.min(3), || {
            let r = search(&c.model, &c.cluster, None, &c.space, c.top_k);
            priced = r.priced;
            ilp = r.ilp_solved;
        });
        rows.push(vec![
            c.name.to_string(),
            format!("{min:.1}"),
            format!("{median:.1}"),
            format!("{mean:.1}"),
            goal(median, Some(c.goal_s * 1e3)),
            format!("{:.0}", priced as f64 / (median / 1e3).max(1e-9)),
            format!(
                "{} ({priced} plans priced, {ilp} stage ILPs solved)",
                c.what
            ),
        ]);
    }
    let header = [
        "bench",
        "min ms",
        "median ms",
        "mean ms",
        "goal ms",
        "plans priced/s",
        "what",
    ];
    Ok(format!(
        "{}\n{}\n",
        render::table(&header, rows),
        if cfg!(debug_assertions) {
            "(debug build: time the release build, `cargo run --release -- bench`)"
        } else {
            "(release build)"
        }
    ))
}
