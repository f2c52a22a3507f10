//! Named benchmark cases of the search (issue 4's speed goals): the model, cluster and space
//! each one searches and the wall time it should stay under. `planner bench` times them; the
//! clock lives there, search/ has none.

use super::{Space, default_global_batch};
use crate::spec::{ClusterSpec, ModelSpec, SpecError, load_cluster, load_model};

/// One benchmark: a full `suggest` search.
#[derive(Clone, Debug)]
pub struct BenchCase {
    /// Name on the command line.
    pub name: &'static str,
    /// What it searches, in words.
    pub what: String,
    /// The model.
    pub model: ModelSpec,
    /// The cluster.
    pub cluster: ClusterSpec,
    /// The space (suggest's defaults).
    pub space: Space,
    /// Plans kept.
    pub top_k: usize,
    /// Wall time goal in a release build on the project's 2-core machine, s.
    pub goal_s: f64,
}

fn case(
    name: &'static str,
    model: &str,
    cluster: ClusterSpec,
    goal_s: f64,
) -> Result<BenchCase, SpecError> {
    let model = load_model(model)?;
    let gb = default_global_batch(model.seq_len, cluster.n_gpus());
    Ok(BenchCase {
        name,
        what: format!(
            "suggest {} on {} ({} GPUs), global batch {gb}",
            model.name,
            cluster.name,
            cluster.n_gpus()
        ),
        space: Space::new(gb, model.seq_len),
        model,
        cluster,
        top_k: 10,
        goal_s,
    })
}

/// Every benchmark: GPT-3 175B on 1,024 A100s (goal 1 s) and the 1T model of SC'21 Table 1 on
/// 10,240 A100s — the a100-80g-x1024 cluster grown to 1,280 nodes (goal 10 s).
pub fn cases() -> Result<Vec<BenchCase>, SpecError> {
    let x1024 = load_cluster("a100-80g-x1024")?;
    let mut x10240 = x1024.clone();
    x10240.nodes = 1280;
    x10240.name = "a100-80g-x10240".into();
    Ok(vec![
        case("gpt3-175b", "gpt3-175b", x1024, 1.0)?,
        case("gpt-1t-10240", "gpt-1t", x10240, 10.0)?,
    ])
}
