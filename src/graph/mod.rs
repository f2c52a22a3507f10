//! The compute graph: one transformer layer's operators (and the embedding and LM head/loss)
//! as a petgraph DAG, each operator knowing its kernels, FLOPs, bytes moved, parameters and
//! saved activations for one rank's shard of one micro-batch. Pure: no IO.

mod ends;
mod layer;
mod linear;
mod selective;

pub use ends::{embedding, head, mtp};
pub use layer::{ATTENTION_CORE, layer_graph, transformer_layer};

use crate::spec::{
    AttentionImpl, Fp8Recipe, Framework, ModelSpec, Plan, RecomputeModules, TpOverlap,
};
use crate::units::Dtype;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

/// Which parallel group a collective runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Group {
    /// Tensor-parallel group (inside a node).
    Tp,
    /// Context-parallel group.
    Cp,
    /// Expert-parallel group.
    Ep,
    /// Data-parallel group.
    Dp,
    /// Neighbouring pipeline stages.
    Pp,
}

/// Collective kinds, with NCCL's bus-bandwidth conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Coll {
    /// All-reduce: moves 2(n−1)/n·S per rank.
    AllReduce,
    /// All-gather of an S-byte result: (n−1)/n·S per rank.
    AllGather,
    /// Reduce-scatter of an S-byte input: (n−1)/n·S per rank.
    ReduceScatter,
    /// All-to-all of S bytes per rank: (n−1)/n·S leave each rank.
    AllToAll,
    /// Point-to-point send/receive of S bytes.
    SendRecv,
}

impl Coll {
    /// Name as nccl-tests spells it.
    pub fn name(self) -> &'static str {
        match self {
            Coll::AllReduce => "all_reduce",
            Coll::AllGather => "all_gather",
            Coll::ReduceScatter => "reduce_scatter",
            Coll::AllToAll => "alltoall",
            Coll::SendRecv => "sendrecv",
        }
    }
}

/// How a bandwidth-bound kernel touches memory: streaming elementwise kernels reach close to
/// the HBM peak, row reductions (norms, softmax) much less, their backward less again
/// (measured kernels: see the device presets' `efficiency` block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum MemClass {
    /// Elementwise: activations, dropout, residual adds, copies.
    Elementwise,
    /// Row reduction forward: LayerNorm/RMSNorm, softmax, cross-entropy.
    Reduction,
    /// Row reduction backward.
    ReductionBwd,
    /// The transposed FP8 copy a cast writes beside the FP8 tensor, inside the cast's kernel
    /// (TE `fp8_cast_transpose_fused`): streamed at the elementwise rate with no launch of its
    /// own, and not written at all where FP8 GEMMs take every layout
    /// (`DeviceSpec::fp8_any_layout`, Blackwell: TE keeps no transpose there).
    Fp8Transpose,
    /// An FP8 tensor transposed by a kernel of its own (after a norm that wrote it in FP8):
    /// the elementwise rate and a launch, and nothing where FP8 GEMMs take every layout.
    Fp8TransposeKernel,
}

/// One GPU kernel (or one collective) with the sizes its cost depends on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Kernel {
    /// `batch` independent GEMMs C[m,n] = A[m,k]·B[k,n].
    Gemm {
        /// Independent problems (attention heads for batched GEMMs).
        batch: u64,
        /// Rows of C.
        m: u64,
        /// Columns of C.
        n: u64,
        /// Reduction dimension.
        k: u64,
    },
    /// Fused (flash) attention over `batch_heads` heads.
    Attention {
        /// Micro-batch × local heads.
        batch_heads: u64,
        /// Query length.
        s_q: u64,
        /// Key/value length.
        s_kv: u64,
        /// Head size of the queries and keys.
        head_dim: u64,
        /// Head size of the values (and outputs): `head_dim`, but for MLA's (DeepSeek-V3:
        /// 192 and 128).
        v_dim: u64,
        /// Causal mask (half the score blocks are skipped).
        causal: bool,
        /// Backward pass (dQ, dK, dV) rather than forward.
        backward: bool,
        /// Which fused kernel (FlashAttention-2 class, or FlashAttention in Triton).
        kernel: AttentionImpl,
        /// Keys each query attends to at most, where a sliding window shortens this
        /// layer's attention.
        window: Option<u64>,
    },
    /// A bandwidth-bound kernel (norm, softmax, activation, dropout, residual add).
    Memory {
        /// Bytes read plus bytes written.
        bytes: f64,
        /// Access pattern, which sets the achieved fraction of HBM bandwidth.
        class: MemClass,
    },
    /// A collective (or send/receive) on a parallel group.
    Comm {
        /// Which collective.
        coll: Coll,
        /// On which group.
        group: Group,
        /// Message size S (NCCL's "size": the full buffer for all-reduce and the gathered
        /// result for all-gather / the input for reduce-scatter).
        bytes: f64,
        /// Whether the framework overlaps it with independent compute (e.g. the SP weight-
        /// gradient all-gather, or CP's ring exchange).
        overlapped: bool,
    },
}

/// Share of the s_q·s_kv score matrix of causal attention that the mask keeps, over `s_kv`
/// keys, with a sliding window of `window` keys: 1/2 with none (as FLOP counts write causal
/// attention); a window of w < s keeps w·s − w²/2 of s² pairs, (w/s)(1 − w/2s) (each of the
/// last s − w queries sees w keys, the first w a triangle; continuous form, which meets 1/2
/// at w = s). Context parallelism splits the queries and keeps the share.
pub fn causal_share(s_kv: u64, window: Option<u64>) -> f64 {
    match window.filter(|&w| w < s_kv) {
        None => 0.5,
        Some(w) => {
            let r = w as f64 / s_kv as f64;
            r * (1.0 - r / 2.0)
        }
    }
}

/// Key blocks FlashAttention visits under a causal mask for `nq` query blocks over `nk` key
/// blocks of `bk` keys, each query attending to at most `window` keys: query block i, whose
/// first query sits at key ⌊i·nk/nq⌋·bk (context parallelism spreads the queries over the
/// keys), visits the blocks from the one holding that query's first key up to the diagonal
/// block, whole (FlashAttention's `window_size` skips the blocks before it; Dao 2023,
/// Algorithm 1). Without a window, every block up to the diagonal.
pub fn causal_blocks(nq: u64, nk: u64, bk: u64, window: Option<u64>) -> u64 {
    let reach = window.map_or(u64::MAX, |w| w.saturating_sub(1));
    (0..nq)
        .map(|i| {
            let last = nk.min(((i + 1) * nk).div_ceil(nq));
            let first = (i * nk / nq * bk).saturating_sub(reach) / bk;
            last - first.min(last)
        })
        .sum()
}

impl Kernel {
    /// Floating-point operations this kernel executes.
    ///
    /// GEMM: 2·batch·m·n·k. Attention forward: two GEMMs, QKᵀ of 2·s_q·s_kv·d and PV of
    /// 2·s_q·s_kv·d_v, halved when causal (FlashAttention skips fully masked blocks), less
    /// under a sliding window ([`causal_share`]); backward: five such GEMMs, recomputed QKᵀ,
    /// dQ and dK at d, dV and dP at d_v: 2·s_q·s_kv·(3d + 2d_v), 2.5× the forward where
    /// d_v = d (Dao 2023, §3.1.2).
    pub fn flops(&self) -> f64 {
        match *self {
            Kernel::Gemm { batch, m, n, k } => 2.0 * (batch * m) as f64 * n as f64 * k as f64,
            Kernel::Attention {
                batch_heads,
                s_q,
                s_kv,
                head_dim,
                v_dim,
                causal,
                backward,
                window,
                ..
            } => {
                let (d, v) = (head_dim as f64, v_dim as f64);
                let dims = if backward { 3.0 * d + 2.0 * v } else { d + v };
                let all = 2.0 * batch_heads as f64 * s_q as f64 * s_kv as f64 * dims;
                if causal {
                    all * causal_share(s_kv, window)
                } else {
                    all
                }
            }
            Kernel::Memory { .. } | Kernel::Comm { .. } => 0.0,
        }
    }

    /// Whether this kernel is communication.
    #[cfg(test)]
    pub fn is_comm(&self) -> bool {
        matches!(self, Kernel::Comm { .. })
    }

    /// Bytes the memory-bound kernels among `ks` move.
    #[cfg(test)]
    pub fn memory_bytes(ks: &[Kernel]) -> f64 {
        ks.iter()
            .map(|k| match k {
                Kernel::Memory { bytes, .. } => *bytes,
                _ => 0.0,
            })
            .sum()
    }
}

/// One operator of the graph, sized for one rank and one micro-batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Op {
    /// Operator name (`qkv`, `softmax`, `fc1`, …).
    pub name: &'static str,
    /// Kernels of the forward pass, in order.
    pub fwd: Vec<Kernel>,
    /// Kernels of the backward pass, in order.
    pub bwd: Vec<Kernel>,
    /// Parameters held by this rank.
    pub params: f64,
    /// Activation bytes saved for the backward pass without recomputation.
    pub saved_bytes: f64,
    /// Of those, bytes still saved under selective recomputation (the framework's policy).
    pub saved_selective_bytes: f64,
    /// Kernels re-run in backward under selective recomputation: all forward kernels of the
    /// Megatron-Core modules the plan recomputes (the attention core by default;
    /// `layer::modules`), or what torchtitan's op-level policy does not save
    /// (`selective::op_level_selective`); empty for an operator it keeps.
    pub selective_fwd: Vec<Kernel>,
    /// Its GEMMs run in FP8 when the plan trains in FP8: Transformer Engine's linear modules
    /// (QKV, projection, fc1/fc2, grouped experts) under `fp8_autocast`. The LM head
    /// (Megatron-Core `GPTModel.output_layer` is `tensor_parallel.ColumnParallelLinear`, not a
    /// TE module), the MoE router and batched attention GEMMs stay 16-bit.
    pub fp8: bool,
}

impl Op {
    /// An elementwise operator with only forward/backward memory traffic (a pass moving no
    /// bytes launches no kernel).
    pub fn memory(name: &'static str, fwd_bytes: f64, bwd_bytes: f64, saved: f64) -> Op {
        Op::bandwidth(
            name,
            fwd_bytes,
            bwd_bytes,
            saved,
            [MemClass::Elementwise; 2],
        )
    }

    /// A row-reduction operator (norm, softmax): reduction forward, reduction backward.
    pub fn reduction(name: &'static str, fwd_bytes: f64, bwd_bytes: f64, saved: f64) -> Op {
        Op::bandwidth(
            name,
            fwd_bytes,
            bwd_bytes,
            saved,
            [MemClass::Reduction, MemClass::ReductionBwd],
        )
    }

    fn bandwidth(
        name: &'static str,
        fwd_bytes: f64,
        bwd_bytes: f64,
        saved: f64,
        class: [MemClass; 2],
    ) -> Op {
        let k = |bytes: f64, class| (bytes > 0.0).then_some(Kernel::Memory { bytes, class });
        Op {
            name,
            fwd: k(fwd_bytes, class[0]).into_iter().collect(),
            bwd: k(bwd_bytes, class[1]).into_iter().collect(),
            params: 0.0,
            saved_bytes: saved,
            saved_selective_bytes: saved,
            selective_fwd: Vec::new(),
            fp8: false,
        }
    }

    /// A weight GEMM Y[m,n] = X[m,k]·W[k,n]: backward is dX = dY·Wᵀ (m×k×n) and
    /// dW = Xᵀ·dY (k×n×m); it saves its input X (`saved` bytes).
    pub fn linear(name: &'static str, m: u64, n: u64, k: u64, params: f64, saved: f64) -> Op {
        Op {
            name,
            fwd: vec![Kernel::Gemm { batch: 1, m, n, k }],
            bwd: vec![
                Kernel::Gemm {
                    batch: 1,
                    m,
                    n: k,
                    k: n,
                },
                Kernel::Gemm {
                    batch: 1,
                    m: k,
                    n,
                    k: m,
                },
            ],
            params,
            saved_bytes: saved,
            saved_selective_bytes: saved,
            selective_fwd: Vec::new(),
            fp8: true,
        }
    }

    /// A communication-only operator (Megatron's f/g conjugates and their SP variants).
    pub fn comm(name: &'static str, fwd: Option<Kernel>, bwd: Option<Kernel>) -> Op {
        Op {
            name,
            fwd: fwd.into_iter().collect(),
            bwd: bwd.into_iter().collect(),
            params: 0.0,
            saved_bytes: 0.0,
            saved_selective_bytes: 0.0,
            selective_fwd: Vec::new(),
            fp8: false,
        }
    }

    /// The data type kernel `k` of this operator runs in when the plan trains in `plan`.
    /// FP8 training (Transformer Engine, Micikevicius et al. 2022 "FP8 Formats for Deep
    /// Learning" §4) runs only the TE linear layers' GEMMs in FP8; everything else stays
    /// 16-bit: the LM head and router (see [`Op::fp8`]) and the fused attention core, whose
    /// FP8 path (`--fp8-dot-product-attention`, TE `fp8_dpa`) is off by default.
    pub fn kernel_dtype(&self, plan: Dtype, k: &Kernel) -> Dtype {
        match (plan, k) {
            (Dtype::Fp8, Kernel::Gemm { .. }) if self.fp8 => Dtype::Fp8,
            (Dtype::Fp8, _) => Dtype::Bf16,
            _ => plan,
        }
    }

    /// FLOPs of the forward kernels.
    pub fn fwd_flops(&self) -> f64 {
        self.fwd.iter().map(Kernel::flops).sum()
    }

    /// FLOPs of the backward kernels.
    #[cfg(test)]
    pub fn bwd_flops(&self) -> f64 {
        self.bwd.iter().map(Kernel::flops).sum()
    }
}

/// What one rank computes of one layer for one micro-batch: the sharding of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    /// Micro-batch size b.
    pub b: u64,
    /// Full sequence length s.
    pub s: u64,
    /// Tensor parallelism t.
    pub tp: u64,
    /// Sequence parallelism in effect.
    pub sp: bool,
    /// Context parallelism.
    pub cp: u64,
    /// Expert parallelism.
    pub ep: u64,
    /// Expert tensor parallelism (1 or tp, [`Plan::etp`]).
    pub etp: u64,
    /// Attention kernel.
    pub attention: AttentionImpl,
    /// Activation/GEMM data type.
    pub dtype: Dtype,
    /// How an FP8 plan scales its tensors (`Plan::fp8_recipe`): what its casts cost.
    pub fp8_recipe: Fp8Recipe,
    /// Transformer Engine's fused cross-entropy (`Plan::loss_fusion`).
    pub loss_fusion: bool,
    /// TP communication hidden behind GEMMs.
    pub tp_overlap: TpOverlap,
    /// Training framework (kernel fusion, loss kernel).
    pub framework: Framework,
    /// What Megatron-Core's selective recomputation re-runs (`Plan::recompute_modules`).
    pub modules: RecomputeModules,
    /// Megatron-LM's `--make-vocab-size-divisible-by` (`Plan::vocab_divisor`).
    pub vocab_divisor: u64,
}

impl Shard {
    /// The shard a plan gives every rank.
    pub fn of(plan: &Plan) -> Shard {
        Shard {
            b: plan.mbs,
            s: plan.seq_len,
            tp: plan.tp,
            sp: plan.sp(),
            cp: plan.cp,
            ep: plan.ep,
            etp: plan.etp(),
            attention: plan.attention,
            dtype: plan.dtype,
            fp8_recipe: plan.fp8_recipe,
            loss_fusion: plan.loss_fusion,
            tp_overlap: plan.tp_overlap,
            framework: plan.framework,
            modules: plan.recompute_modules,
            vocab_divisor: plan.vocab_divisor,
        }
    }

    /// Vocabulary rows of the embedding and the output layer on this rank
    /// ([`Framework::vocab_rows`]).
    pub fn vocab_rows(&self, vocab: u64) -> u64 {
        self.framework
            .vocab_rows(vocab, self.tp, self.vocab_divisor)
    }

    /// Tokens this rank's GEMMs see: b·s/cp.
    pub fn tokens(&self) -> u64 {
        self.b * self.s / self.cp
    }

    /// Bytes per element of a GEMM input saved for the weight gradient: with FP8 training,
    /// Transformer Engine keeps the FP8 cast of the input (`Linear` saves `inputmat` as a
    /// Float8Tensor), otherwise the 16-bit activation.
    pub fn saved_gemm_input_bytes(&self) -> f64 {
        if self.dtype == Dtype::Fp8 {
            1.0
        } else {
            self.dtype.bytes()
        }
    }

    /// Tokens held in the regions outside the TP GEMMs: b·s/cp, further /tp with SP.
    pub fn tokens_sp(&self) -> u64 {
        if self.sp {
            self.tokens() / self.tp
        } else {
            self.tokens()
        }
    }
}

/// A DAG of operators (edges are data dependencies, in execution order).
#[derive(Clone, Debug)]
pub struct OpGraph {
    /// The graph.
    pub graph: DiGraph<Op, ()>,
}

impl OpGraph {
    /// Builds a graph from operators and edges given as (from, to) indices into `ops`.
    pub fn new(ops: Vec<Op>, edges: &[(usize, usize)]) -> OpGraph {
        let mut graph = DiGraph::new();
        let ids: Vec<NodeIndex> = ops.into_iter().map(|o| graph.add_node(o)).collect();
        for &(a, b) in edges {
            graph.add_edge(ids[a], ids[b], ());
        }
        OpGraph { graph }
    }

    /// A chain: each operator feeds the next.
    pub fn chain(ops: Vec<Op>) -> OpGraph {
        let edges: Vec<(usize, usize)> = (1..ops.len()).map(|i| (i - 1, i)).collect();
        OpGraph::new(ops, &edges)
    }

    /// Operators in a topological (execution) order.
    pub fn ops(&self) -> Vec<&Op> {
        petgraph::algo::toposort(&self.graph, None)
            .expect("operator graphs are built acyclic")
            .into_iter()
            .map(|i| &self.graph[i])
            .collect()
    }

    /// The operator called `name`, if present.
    #[cfg(test)]
    pub fn op(&self, name: &str) -> Option<&Op> {
        self.graph.node_weights().find(|o| o.name == name)
    }

    /// Sum of `f` over all operators.
    pub fn sum(&self, f: impl Fn(&Op) -> f64) -> f64 {
        self.graph.node_weights().map(f).sum()
    }

    /// Parameters held by this rank.
    pub fn params(&self) -> f64 {
        self.sum(|o| o.params)
    }

    /// Parameters of the Transformer Engine linears (`Op::fp8`) this rank holds: (dense,
    /// routed experts).
    pub fn te_params(&self) -> (f64, f64) {
        let of = |experts: bool| {
            self.sum(|o| {
                if o.fp8 && o.name.starts_with("expert_") == experts {
                    o.params
                } else {
                    0.0
                }
            })
        };
        (of(false), of(true))
    }

    /// Forward FLOPs.
    pub fn fwd_flops(&self) -> f64 {
        self.sum(Op::fwd_flops)
    }

    /// Backward FLOPs.
    #[cfg(test)]
    pub fn bwd_flops(&self) -> f64 {
        self.sum(Op::bwd_flops)
    }

    /// FLOPs selective recomputation re-runs (`Op::selective_fwd`).
    #[cfg(test)]
    pub fn selective_flops(&self) -> f64 {
        self.sum(|o| o.selective_fwd.iter().map(Kernel::flops).sum())
    }

    /// Activation bytes saved without recomputation.
    pub fn saved_bytes(&self) -> f64 {
        self.sum(|o| o.saved_bytes)
    }

    /// Activation bytes saved under selective recomputation.
    pub fn saved_selective_bytes(&self) -> f64 {
        self.sum(|o| o.saved_selective_bytes)
    }
}

/// The operator graphs of one model under one plan's sharding.
#[derive(Clone, Debug)]
pub struct ModelGraph {
    /// Input embedding (first stage).
    pub embedding: OpGraph,
    /// A dense transformer layer.
    pub dense: OpGraph,
    /// An MoE transformer layer, when the model has experts.
    pub moe: Option<OpGraph>,
    /// The dense and MoE layers again, attending through the sliding window, where the
    /// model's window is shorter than the sequence.
    pub sliding: Option<(OpGraph, Option<OpGraph>)>,
    /// Final norm, LM head and loss (last stage), with each multi-token prediction depth's.
    pub head: OpGraph,
    /// One multi-token prediction depth's body (last stage, `mtp_layers` times), where the
    /// model has depths.
    pub mtp: Option<OpGraph>,
}

impl ModelGraph {
    /// Builds every graph of `model` for `shard`.
    pub fn build(model: &ModelSpec, shard: &Shard) -> ModelGraph {
        let layers = |sliding| {
            (
                layer_graph(model, shard, false, sliding),
                model
                    .moe
                    .as_ref()
                    .map(|_| layer_graph(model, shard, true, sliding)),
            )
        };
        let (dense, moe) = layers(false);
        ModelGraph {
            embedding: embedding(model, shard),
            dense,
            moe,
            sliding: model.window_at(shard.s).map(|_| layers(true)),
            head: head(model, shard),
            mtp: mtp(model, shard),
        }
    }

    /// The graph of layer `i`: dense or MoE, full or sliding attention, as the model lays
    /// its layers out.
    pub fn layer(&self, model: &ModelSpec, i: u64) -> &OpGraph {
        let (dense, moe) = match &self.sliding {
            Some((d, m)) if model.slides(i) => (d, m),
            _ => (&self.dense, &self.moe),
        };
        match moe {
            Some(g) if model.is_moe_layer(i) => g,
            _ => dense,
        }
    }
}
