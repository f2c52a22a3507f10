//! When a plan's data-parallel collectives run: the one description of each ZeRO stage that
//! the cost model (`stages`), the memory model and the executor's lowering (`exec::lower`) all
//! read, so what is priced is what runs.

use crate::spec::Plan;

/// What the optimizer step adds after a stage's last backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepReduce {
    /// All-reduce of the whole gradients (ZeRO-0, DDP).
    AllReduce,
    /// Reduce-scatter of the whole gradients, then all-gather of the updated weights (ZeRO-1:
    /// Megatron-LM's distributed optimizer, DeepSpeed stage 1).
    ReduceScatterGather,
    /// All-gather of the updated weights only, the gradients having been reduced with every
    /// micro-batch (DeepSpeed stage 2).
    Gather,
    /// Reduce-scatter of the whole gradients accumulated over the micro-batches, with the last
    /// backward (FSDP under pipelining); the weights are gathered when used.
    ReduceScatter,
    /// Nothing: weights are gathered when used, gradients were reduced (ZeRO-3, FSDP).
    Nothing,
}

/// When a plan's weights are gathered and its gradients reduced over the data-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpSchedule {
    /// The chunk's weights are all-gathered before every micro-batch's forward.
    pub gather_fwd: bool,
    /// … and again before its backward.
    pub gather_bwd: bool,
    /// Its gradients are reduce-scattered after every micro-batch's backward: a rank that
    /// keeps only its shard of them cannot accumulate whole ones over the micro-batches.
    pub reduce_per_micro: bool,
    /// What the step adds.
    pub step: StepReduce,
    /// The step's reduction can overlap the last backward (where the plan overlaps it): not
    /// a gather after the optimizer step, nor a reduction called after the backward ends.
    pub step_overlappable: bool,
    /// Weights and gradients stay whole between micro-batches besides the sharded state
    /// (FSDP under pipelining): the gradients accumulate in the reduction precision (FSDP2's
    /// `unsharded_accumulated_grad`) and the 16-bit weights stay gathered
    /// ([`memory::whole_state_bytes`](super::memory::whole_state_bytes)).
    pub holds_whole: bool,
}

/// The schedule of `plan`'s ZeRO stage (Rajbhandari et al. 2020 §5) as its framework runs it:
/// - 0: all-reduce at the step; 1: reduce-scatter and gather at the step.
/// - 2, DeepSpeed and Megatron: gradients reduce-scattered at every micro-step, updated weights
///   gathered after the optimizer step (DeepSpeed `stage_1_and_2.py`: `reduce_ipg_grads` per
///   micro-step, `all_gather_dp_groups` in `step`).
/// - 2, FSDP (torchtitan's `reshard_after_forward = "never"`, Composer's `SHARD_GRAD_OP`):
///   weights gathered for every forward and kept through its backward, then resharded;
///   gradients reduce-scattered after every backward (PyTorch FSDP `ShardingStrategy`
///   docs: "parameters are resharded after backward"; FSDP2 `fully_shard`
///   `reshard_after_forward`). Nothing at the step.
/// - 3: gathered for every forward and again for its backward, reduce-scattered after it.
/// - FSDP (2 or 3) under pipelining (torchtitan): `torch.distributed.pipelining` runs every
///   backward without gradient sync and without resharding (`stage.py`
///   `backward_maybe_with_nosync`: `set_requires_gradient_sync(False)`,
///   `set_reshard_after_backward(False)`), then, after the last one, the reduce-scatter of
///   the whole accumulated gradients (FSDP2 keeps `unsharded_accumulated_grad` in the
///   reduction dtype) in a manual `post_backward`, which nothing overlaps. The stage's
///   weights therefore stay gathered from a backward to the next forward: ZeRO-2 gathers once
///   per step, ZeRO-3 (resharded after every forward) again for every backward.
pub fn schedule(plan: &Plan) -> DpSchedule {
    let fsdp = plan.framework.fsdp();
    let no_sync = fsdp && plan.zero >= 2 && plan.pp > 1;
    let (fwd, bwd, micro) = match plan.zero {
        0 | 1 => (false, false, false),
        _ if no_sync => (false, plan.zero >= 3, false),
        2 if fsdp => (true, false, true),
        2 => (false, false, true),
        _ => (true, true, true),
    };
    let step = match plan.zero {
        0 => StepReduce::AllReduce,
        1 => StepReduce::ReduceScatterGather,
        2 if no_sync => StepReduce::ReduceScatterGather,
        _ if no_sync => StepReduce::ReduceScatter,
        2 if !fsdp => StepReduce::Gather,
        _ => StepReduce::Nothing,
    };
    DpSchedule {
        gather_fwd: fwd,
        gather_bwd: bwd,
        reduce_per_micro: micro,
        step,
        step_overlappable: !no_sync && step != StepReduce::Gather,
        holds_whole: no_sync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Framework;

    /// Every stage, both families: FSDP's ZeRO-2 gathers per forward and leaves the step
    /// nothing; DeepSpeed's gathers once, after the step.
    #[test]
    fn zero_stages_as_frameworks_run_them() {
        let mut p = Plan::new(8, 1, 1, 1, 8, 2048);
        let s = |p: &Plan| {
            let d = schedule(p);
            (d.gather_fwd, d.gather_bwd, d.reduce_per_micro, d.step)
        };
        use StepReduce::*;
        for fw in Framework::ALL {
            p.framework = fw;
            p.zero = 0;
            assert_eq!(s(&p), (false, false, false, AllReduce));
            p.zero = 1;
            assert_eq!(s(&p), (false, false, false, ReduceScatterGather));
            p.zero = 3;
            assert_eq!(s(&p), (true, true, true, Nothing));
            p.zero = 2;
            let want = if fw.fsdp() {
                (true, false, true, Nothing)
            } else {
                (false, false, true, Gather)
            };
            assert_eq!(s(&p), want, "{fw:?}");
        }
        // torchtitan's FSDP under pipelining: the weights stay gathered from a backward to
        // the next forward (ZeRO-2: one gather per step; ZeRO-3: one per backward), and one
        // reduce-scatter of the whole accumulated gradients follows the last backward,
        // overlapping nothing.
        (p.framework, p.pp) = (Framework::Torchtitan, 2);
        p.zero = 2;
        assert_eq!(s(&p), (false, false, false, ReduceScatterGather));
        p.zero = 3;
        assert_eq!(s(&p), (false, true, false, ReduceScatter));
        let d = schedule(&p);
        assert!(d.holds_whole && !d.step_overlappable);
        p.zero = 1;
        let d = schedule(&p);
        assert!(!d.holds_whole && d.step_overlappable);
    }
}
