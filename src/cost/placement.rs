//! Where a plan's ranks sit: the shape of each parallel group on the cluster's nodes (how
//! many ranks, how many of them share a node), which prices its collectives
//! (`Machine::collective_s`).

use crate::graph::Group;
use crate::spec::Plan;

/// Where the ranks of one parallel group sit: `n` ranks, `per_node` of them in each node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupShape {
    /// Ranks in the group.
    pub n: u64,
    /// Ranks of the group inside one node.
    pub per_node: u64,
}

impl GroupShape {
    /// Nodes the group spans.
    pub fn nodes(&self) -> u64 {
        self.n / self.per_node.max(1)
    }
}

/// The shapes of every group of a plan, from Megatron-Core's rank order tp-cp-ep-dp-pp
/// (`parallel_state.initialize_model_parallel`: TP ranks are adjacent, then CP, then DP, and
/// pipeline stages are farthest apart). The expert layers have their own order, tp-ep-dp-pp
/// with the expert-TP size etp in place of tp (its `expert_decoder_rank_generator`): EP ranks
/// are strided by etp (by tp, out of the dp·cp ranks, at Megatron's default etp = tp;
/// adjacent at etp 1), expert-DP ranks by etp·ep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Tensor-parallel group.
    pub tp: GroupShape,
    /// Context-parallel group.
    pub cp: GroupShape,
    /// Expert-parallel group.
    pub ep: GroupShape,
    /// Expert-data-parallel group: the ranks holding the same expert shard, which reduce its
    /// gradients ([`Plan::expert_dp`]).
    pub edp: GroupShape,
    /// Gradient-reduction group: data × context parallel ranks.
    pub dp: GroupShape,
    /// Pipeline neighbours.
    pub pp: GroupShape,
}

impl Placement {
    /// Placement of `plan` on nodes of `gpus_per_node` GPUs.
    ///
    /// A group of `n` ranks `stride` apart meets q = gpus_per_node / stride of its lattice in
    /// each node. Groups start at multiples of n, so a node boundary cuts each into pieces
    /// that are multiples of gcd(n, q): that many per node, over n / gcd(n, q) nodes, is the
    /// worst group (all of it in one node when n divides q; q per node when q divides n; tp 4
    /// on nodes of 6 leaves ranks 4–7 two per node). A stride that does not divide the node
    /// is priced as one rank per node.
    pub fn of(plan: &Plan, gpus_per_node: u64) -> Placement {
        let shape = |stride: u64, n: u64| GroupShape {
            n,
            per_node: if stride >= gpus_per_node || gpus_per_node % stride != 0 {
                1
            } else {
                crate::units::gcd(n, gpus_per_node / stride).max(1)
            },
        };
        Placement {
            tp: shape(1, plan.tp),
            cp: shape(plan.tp, plan.cp),
            ep: shape(plan.etp(), plan.ep),
            edp: shape(plan.etp() * plan.ep, plan.expert_dp()),
            dp: {
                // DP×CP ranks: CP ranks are adjacent, DP ranks strided by tp·cp.
                let g = shape(plan.tp, plan.cp * plan.dp);
                GroupShape {
                    n: plan.cp * plan.dp,
                    per_node: g.per_node,
                }
            },
            pp: shape(plan.tp * plan.cp * plan.dp, plan.pp.min(2)),
        }
    }

    /// The first and last pipeline stages' ranks, which all-reduce the tied word embedding's
    /// gradient: tp·cp·dp·(pp−1) ranks apart in this rank order, so one node holds both when
    /// that is under a node.
    pub fn tied_pair(plan: &Plan, gpus_per_node: u64) -> GroupShape {
        let apart = plan.tp * plan.cp * plan.dp * plan.pp.saturating_sub(1);
        GroupShape {
            n: 2,
            per_node: if apart < gpus_per_node { 2 } else { 1 },
        }
    }

    /// The shape of `group`.
    pub fn group(&self, group: Group) -> GroupShape {
        match group {
            Group::Tp => self.tp,
            Group::Cp => self.cp,
            Group::Ep => self.ep,
            Group::Dp => self.dp,
            Group::Pp => self.pp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_follows_megatron_rank_order() {
        let plan = Plan::new(16, 4, 4, 1, 64, 2048);
        let p = Placement::of(&plan, 8);
        assert_eq!(p.tp, GroupShape { n: 4, per_node: 4 });
        assert_eq!(p.dp, GroupShape { n: 16, per_node: 2 });
        assert_eq!(p.pp, GroupShape { n: 2, per_node: 1 });
        // TP groups that a node boundary cuts: tp 4 on nodes of 6 (ranks 4–7 are 4, 5 | 6,
        // 7), tp 3 on nodes of 8 (6, 7 | 8): the worst group spans two nodes.
        let p = |tp, gpn| Placement::of(&Plan::new(48 / tp, tp, 1, 1, 48, 2048), gpn).tp;
        assert_eq!(p(4, 6), GroupShape { n: 4, per_node: 2 });
        assert_eq!(p(3, 8), GroupShape { n: 3, per_node: 1 });
        assert_eq!(p(2, 6), GroupShape { n: 2, per_node: 2 });
        assert_eq!(p(8, 8), GroupShape { n: 8, per_node: 8 });
        // Experts (tp 4, cp 2, dp 8: 64 ranks a stage; ep 8) split over the TP ranks stride EP
        // by 4, two ranks a node over four nodes; whole experts (etp 1) keep EP in one node and
        // stride the expert-DP group (64 / 8 = 8 ranks) by a node.
        let mut plan = Plan::new(8, 4, 1, 1, 64, 8192);
        (plan.cp, plan.ep) = (2, 8);
        let p = Placement::of(&plan, 8);
        assert_eq!(p.ep, GroupShape { n: 8, per_node: 2 });
        assert_eq!(p.edp, GroupShape { n: 2, per_node: 1 });
        plan.etp = Some(1);
        let p = Placement::of(&plan, 8);
        assert_eq!(p.ep, GroupShape { n: 8, per_node: 8 });
        assert_eq!(p.edp, GroupShape { n: 8, per_node: 1 });
    }
}
