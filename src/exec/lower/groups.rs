//! The communicators of a plan: each rank's coordinates in Megatron-Core's rank order and the
//! groups (TP, CP, EP, DP, expert-DP, tied-embedding pair, pipeline) they make.

use crate::graph::Group;
use crate::spec::Plan;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The kinds of communicator a plan needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Tensor-parallel ranks.
    Tp,
    /// Context-parallel ranks.
    Cp,
    /// Expert-parallel ranks: `ep` of a stage's tp·cp·dp ranks, `etp` apart.
    Ep,
    /// Gradient reduction of dense parameters: data × context parallel ranks.
    Dp,
    /// Gradient reduction of expert parameters: the Dp ranks holding the same experts.
    ExpertDp,
    /// First and last stage, which share the tied word embedding's gradient.
    Tied,
    /// All stages of one pipeline (for point-to-point transfers).
    Pp,
}

/// One communicator: its kind and global ranks, ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDef {
    /// Kind.
    pub kind: GroupKind,
    /// Global ranks, ascending (the position in this list is the rank in the group).
    pub members: Vec<u64>,
}

/// A rank's place in Megatron-Core's rank order tp-cp-dp-pp (TP ranks adjacent, pipeline
/// stages farthest apart; `parallel_state.initialize_model_parallel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Coords {
    /// Tensor-parallel index.
    pub tp: u64,
    /// Context-parallel index.
    pub cp: u64,
    /// Data-parallel index.
    pub dp: u64,
    /// Pipeline stage.
    pub pp: u64,
}

impl Coords {
    /// Coordinates of global rank `r`.
    pub fn of(plan: &Plan, r: u64) -> Coords {
        Coords {
            tp: r % plan.tp,
            cp: r / plan.tp % plan.cp,
            dp: r / (plan.tp * plan.cp) % plan.dp,
            pp: r / (plan.tp * plan.cp * plan.dp),
        }
    }

    /// The global rank.
    pub fn rank(&self, plan: &Plan) -> u64 {
        self.tp + plan.tp * (self.cp + plan.cp * (self.dp + plan.dp * self.pp))
    }

    /// The key that every member of this rank's `kind` group shares (`None`: no such group).
    fn key(&self, plan: &Plan, kind: GroupKind) -> Option<[u64; 4]> {
        let Coords { tp, cp, dp, pp } = *self;
        let last = plan.pp - 1;
        // The expert layers lay a stage's tp·cp·dp ranks out again (Megatron-Core's expert
        // rank generator, order tp-ep-dp-pp with the expert TP size etp and cp folded in):
        // the stage-local index is (expert-TP index, EP index, expert-DP index), etp
        // fastest. EP groups share the expert-TP and expert-DP indices, expert-DP groups the
        // expert-TP and EP ones. At etp = tp this is EP as runs of `ep` over the dp·cp ranks.
        let etp = plan.etp();
        let local = tp + plan.tp * (cp + plan.cp * dp);
        let (e_tp, rest) = (local % etp, local / etp);
        let (e_ep, e_dp) = (rest % plan.ep, rest / plan.ep);
        Some(match kind {
            GroupKind::Tp => [cp, dp, pp, 0],
            GroupKind::Cp => [tp, dp, pp, 0],
            GroupKind::Ep => [e_tp, pp, e_dp, 0],
            GroupKind::Dp => [tp, pp, 0, 0],
            GroupKind::ExpertDp => [e_tp, pp, e_ep, 0],
            GroupKind::Tied if pp == 0 || pp == last => [tp, cp, dp, 0],
            GroupKind::Tied => return None,
            GroupKind::Pp => [tp, cp, dp, 0],
        })
    }
}

pub(super) fn group_kind(g: Group) -> GroupKind {
    match g {
        Group::Tp => GroupKind::Tp,
        Group::Cp => GroupKind::Cp,
        Group::Ep => GroupKind::Ep,
        Group::Dp => GroupKind::Dp,
        Group::Pp => GroupKind::Pp,
    }
}

/// Every communicator of `plan` with two ranks or more, and each rank's membership.
pub(super) fn make_groups(plan: &Plan) -> (Vec<GroupDef>, HashMap<(GroupKind, u64), usize>) {
    const KINDS: [GroupKind; 7] = [
        GroupKind::Tp,
        GroupKind::Cp,
        GroupKind::Ep,
        GroupKind::Dp,
        GroupKind::ExpertDp,
        GroupKind::Tied,
        GroupKind::Pp,
    ];
    let mut by_key: BTreeMap<(GroupKind, [u64; 4]), Vec<u64>> = BTreeMap::new();
    for r in 0..plan.n_gpus() {
        let c = Coords::of(plan, r);
        for kind in KINDS {
            if let Some(k) = c.key(plan, kind) {
                by_key.entry((kind, k)).or_default().push(r);
            }
        }
    }
    let mut all: Vec<(GroupKind, Vec<u64>)> = by_key
        .into_iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|((kind, _), m)| (kind, m))
        .collect();
    all.sort();
    let mut defs = Vec::new();
    let mut of = HashMap::new();
    for (kind, members) in all {
        for &r in &members {
            of.insert((kind, r), defs.len());
        }
        defs.push(GroupDef { kind, members });
    }
    (defs, of)
}
