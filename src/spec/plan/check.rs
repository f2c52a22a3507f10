//! The structural checks of a plan against a model and a cluster: every reason it cannot run,
//! each an [`Infeasible`] value naming the field to change.

use super::{
    AttentionImpl, Framework, Infeasible, MAX_FUSED_HEAD_DIM, Plan, Recompute, RecomputeModules,
    Schedule,
};
use crate::spec::hardware::ClusterSpec;
use crate::spec::model::ModelSpec;
use crate::units::Dtype;

impl Plan {
    /// Why the plan's [`SplitAccounts`](super::SplitAccounts) cannot split its pipeline as
    /// Megatron-Core would: another framework, no pipeline, explicit stage layers beside them
    /// (Megatron-Core evens the ends one way or the other), slots that pp·vpp does not divide,
    /// or a chunk left with no layer.
    fn split_accounts_problem(&self, layers: u64) -> Option<String> {
        let acc = self.split_accounts;
        if !acc.any() {
            return None;
        }
        let (p, v) = (self.pp.max(1), self.vpp.max(1));
        let slots = acc.slots(layers);
        Some(if self.framework != Framework::Megatron {
            format!(
                "counting the {} as a layer of the pipeline split is Megatron-Core's, not {}'s; drop it",
                acc.words(),
                self.framework.name()
            )
        } else if self.pp < 2 {
            "with pp=1: there is no pipeline split to even; drop it".to_string()
        } else if self.stage_layers.is_some() {
            "beside stage_layers, which even the pipeline's ends their own way (Megatron-Core takes one of the two); drop one".to_string()
        } else if slots % (p * v) != 0 {
            // One end counted where counting both would divide (QA: 126 layers and the
            // embedding on pp 8 × vpp 8 had been told to divide 127, a prime).
            let other = match (acc.embedding, acc.loss) {
                (true, false) if (layers + 2) % (p * v) == 0 => {
                    ", or count the loss too (--account-for-loss-in-pipeline-split)"
                }
                (false, true) if (layers + 2) % (p * v) == 0 => {
                    ", or count the embedding too (--account-for-embedding-in-pipeline-split)"
                }
                _ => "",
            };
            format!(
                "{layers} layers and {} slot{} = {slots} do not split over pp·vpp = {}; pick pp and vpp dividing {slots}{other}",
                slots - layers,
                if slots - layers == 1 { "" } else { "s" },
                p * v
            )
        } else if self
            .chunk_layer_counts(layers)
            .iter()
            .flatten()
            .any(|&n| n == 0)
        {
            format!(
                "one slot per model chunk (pp·vpp = {}) leaves a chunk with the embedding or loss alone; pick fewer stages or virtual stages",
                p * v
            )
        } else {
            return None;
        })
    }

    /// Every structural reason this plan cannot run `model` on `cluster`; empty when it can.
    pub fn check(&self, model: &ModelSpec, cluster: &ClusterSpec) -> Vec<Infeasible> {
        use Infeasible as I;
        let mut out = Vec::new();
        if [
            self.dp,
            self.tp,
            self.pp,
            self.cp,
            self.ep,
            self.etp(),
            self.vpp,
            self.mbs,
            self.global_batch,
            self.seq_len,
        ]
        .contains(&0)
        {
            out.push(I::Zero);
            return out;
        }
        let tokens = self.mbs.saturating_mul(self.seq_len);
        if tokens > crate::spec::infeasible::MAX_MICRO_BATCH_TOKENS {
            out.push(I::MicroBatchTokens { tokens });
            return out;
        }
        if self.n_gpus() != cluster.n_gpus() {
            out.push(I::GpuCount {
                product: self.n_gpus(),
                gpus: cluster.n_gpus(),
                model_parallel: self.tp * self.pp * self.cp,
            });
        }
        if model.heads % self.tp != 0 || model.kv_heads % self.tp != 0 {
            out.push(I::HeadsNotDivisible {
                heads: model.heads,
                kv_heads: model.kv_heads,
                tp: self.tp,
            });
        }
        // Each TP rank holds ffn/tp columns of every dense MLP, and ffn/etp of every expert
        // (graph::layer).
        let mut widths = vec![("ffn_hidden", model.ffn_hidden, self.tp)];
        if let Some(m) = &model.moe {
            widths.push(("moe.expert_ffn_hidden", m.expert_ffn_hidden, self.etp()));
        }
        for (field, ffn, split) in widths {
            if ffn % split != 0 && (split == self.tp || split == 1) {
                out.push(I::FfnNotDivisible {
                    field,
                    ffn,
                    tp: split,
                });
            }
        }
        if self.tp > cluster.gpus_per_node {
            out.push(I::TpAcrossNodes {
                tp: self.tp,
                gpus_per_node: cluster.gpus_per_node,
            });
        }
        if let Some(v) = &self.stage_layers {
            // Checked: counts near u64::MAX must not wrap to the layer count.
            let sum = v.iter().try_fold(0u64, |a, &n| a.checked_add(n));
            if v.len() as u64 != self.pp
                || sum != Some(model.layers)
                || v.contains(&0)
                || v.iter().any(|&n| n % self.vpp.max(1) != 0)
            {
                out.push(I::StageLayers {
                    given: v.clone(),
                    layers: model.layers,
                    pp: self.pp,
                    vpp: self.vpp,
                });
            }
        } else if !self.split_accounts.any() && model.layers % (self.pp * self.vpp) != 0 {
            out.push(I::LayersNotDivisible {
                layers: model.layers,
                pp: self.pp,
                vpp: self.vpp,
                slots: self.framework == Framework::Megatron,
            });
        }
        if let Some(why) = self.split_accounts_problem(model.layers) {
            out.push(I::SplitAccounts {
                field: if self.split_accounts.embedding {
                    "account_for_embedding_in_pipeline_split"
                } else {
                    "account_for_loss_in_pipeline_split"
                },
                why,
            });
        }
        if self.n_micro() > crate::spec::infeasible::MAX_MICRO_BATCHES {
            out.push(I::TooManyMicroBatches {
                n_micro: self.n_micro(),
            });
        }
        if self.global_batch % (self.dp * self.mbs) != 0 {
            out.push(I::BatchNotDivisible {
                global_batch: self.global_batch,
                dp: self.dp,
                mbs: self.mbs,
            });
        }
        let seq_split =
            self.cp * if self.sp() { self.tp } else { 1 } * if self.cp > 1 { 2 } else { 1 };
        if self.seq_len % seq_split != 0 {
            out.push(I::SeqNotDivisible {
                seq_len: self.seq_len,
                by: seq_split,
            });
        }
        if let Some(positions) = model.max_seq_len().filter(|&n| self.seq_len > n) {
            out.push(I::SeqBeyondPositions {
                seq_len: self.seq_len,
                positions,
            });
        }
        if let Some(w) = model.window_at(self.seq_len) {
            let window = w.size;
            if !self.framework.runs_sliding_window() {
                out.push(I::FrameworkWindow {
                    framework: self.framework.name(),
                    window,
                });
            }
            if self.attention != AttentionImpl::Flash {
                out.push(I::WindowKernel {
                    kernel: self.attention.name(),
                    window,
                });
            }
            if self.cp > 1 {
                out.push(I::WindowWithCp {
                    cp: self.cp,
                    window,
                });
            }
        }
        if model.mla.is_some() {
            let unpriced = [
                (
                    "framework",
                    self.framework != Framework::Megatron,
                    self.framework.name().to_string(),
                ),
                (
                    "attention",
                    self.attention != AttentionImpl::Flash,
                    self.attention.name().to_string(),
                ),
                ("cp", self.cp > 1, self.cp.to_string()),
            ];
            for (field, bad, given) in unpriced {
                if bad {
                    out.push(I::MlaUnpriced { field, given });
                }
            }
        }
        if model.mtp_layers > 0 && self.framework != Framework::Megatron {
            out.push(I::MtpUnpriced {
                framework: self.framework.name(),
                layers: model.mtp_layers,
            });
        }
        let mods = self.recompute_modules;
        // A module the model has nothing for recomputes nothing: a plan labelled with it would
        // price as without it (Megatron-Core refuses mla_up_proj outright).
        let moe = model.moe.as_ref();
        let missing = [
            (
                RecomputeModules::MLA_UP_PROJ,
                model.mla.is_none(),
                "mla_up_proj",
                "multi-head latent attention's up-projections, and the model has none (Megatron-Core refuses it)",
            ),
            (
                RecomputeModules::MOE,
                moe.is_none(),
                "moe",
                "mixture-of-experts layers, and the model has none",
            ),
            (
                RecomputeModules::MOE_ACT,
                moe.is_none(),
                "moe_act",
                "the routed experts' activations, and the model has no mixture-of-experts layers",
            ),
            (
                RecomputeModules::SHARED_EXPERTS,
                moe.is_none_or(|m| m.shared_ffn_hidden == 0),
                "shared_experts",
                "a mixture-of-experts layer's shared experts, and the model has none",
            ),
            // Transformer Engine's layer spec fuses every norm into the linear after it
            // (`TELayerNormColumnParallelLinear`; the layer's norm is an `IdentityOp`, which
            // `transformer_layer.py` does not checkpoint): only MLA's input norm and an MoE
            // layer's pre-MLP norm are modules to re-run (`graph::layer::modules`).
            (
                RecomputeModules::LAYERNORM,
                model.mla.is_none() && moe.is_none(),
                "layernorm",
                "norms that are modules of their own, and the model's are all fused into the linear after them (only multi-head latent attention's input norm and a mixture-of-experts layer's pre-MLP norm are)",
            ),
            // Megatron-Core `transformer_layer.py` checkpoints the MLP module only where it
            // is no `MoELayer` (`if not isinstance(self.mlp, MoELayer): self.recompute_mlp`).
            (
                RecomputeModules::MLP,
                model.moe_layers() == model.layers,
                "mlp",
                "dense MLPs, and every layer of the model is a mixture of experts (moe or moe_act recompute those)",
            ),
        ]
        .into_iter()
        .find(|&(m, lacks, _, _)| mods.has(m) && lacks)
        .map(|(_, _, name, why)| (name, why));
        let other_framework = self.framework != Framework::Megatron && !mods.is_default();
        if self.recompute == Recompute::Selective && (missing.is_some() || other_framework) {
            out.push(I::RecomputeModules {
                framework: self.framework.name(),
                given: mods.to_string(),
                missing: missing.filter(|_| !other_framework),
            });
        }
        let (etp, stage_ranks) = (self.etp(), self.tp * self.cp * self.dp);
        // An etp that is neither 1 nor tp is refused alone: the expert checks below would
        // only repeat it in other words.
        let etp_ok = etp == self.tp || (etp == 1 && model.moe.is_some());
        if !etp_ok {
            out.push(I::ExpertTp {
                etp,
                tp: self.tp,
                moe: model.moe.is_some(),
            });
        }
        if etp == 1 && self.tp > 1 && self.framework != Framework::Megatron {
            out.push(I::FrameworkEtp {
                framework: self.framework.name(),
            });
        }
        match &model.moe {
            Some(m)
                if etp_ok && (m.experts % self.ep != 0 || stage_ranks % (etp * self.ep) != 0) =>
            {
                out.push(I::ExpertsNotDivisible {
                    experts: m.experts,
                    ep: self.ep,
                    etp,
                    stage_ranks,
                });
            }
            Some(_) => {}
            None if self.ep > 1 => out.push(I::EpWithoutExperts { ep: self.ep }),
            None => {}
        }
        if model.moe.is_some() && self.tp > 1 && !self.sp() && self.framework == Framework::Megatron
        {
            out.push(I::MoeTpNeedsSp { tp: self.tp });
        }
        if self.cp > 1 && self.attention == AttentionImpl::Unfused {
            out.push(I::CpNeedsFlash { cp: self.cp });
        }
        if self.attention != AttentionImpl::Unfused && model.head_dim() > MAX_FUSED_HEAD_DIM {
            out.push(I::FusedAttentionHeadDim {
                head_dim: model.head_dim(),
            });
        }
        if !self
            .framework
            .fused_attention_takes(self.attention, self.dtype)
        {
            out.push(I::FusedAttentionDtype {
                framework: self.framework.name(),
                kernel: self.attention.name(),
                dtype: self.dtype.name(),
            });
        }
        match self.schedule {
            Schedule::Interleaved => {
                if self.vpp < 2 || self.pp < 2 {
                    out.push(I::InterleavedNeedsChunks {
                        pp: self.pp,
                        vpp: self.vpp,
                    });
                } else if self.global_batch % (self.dp * self.mbs) == 0
                    && self.n_micro() % self.pp != 0
                {
                    out.push(I::InterleavedMicroBatches {
                        n_micro: self.n_micro(),
                        pp: self.pp,
                    });
                }
            }
            _ if self.vpp > 1 => out.push(I::InterleavedNeedsChunks {
                pp: self.pp,
                vpp: self.vpp,
            }),
            Schedule::Gpipe if self.pp < 2 => out.push(I::GpipeNeedsStages { pp: self.pp }),
            // torchtitan's `ScheduleGPipe`; Megatron-LM and DeepSpeed pipeline with 1F1B only
            // (Composer has no pipeline, refused by `Framework::lacks`).
            Schedule::Gpipe
                if matches!(self.framework, Framework::Megatron | Framework::DeepSpeed) =>
            {
                out.push(I::FrameworkGpipe {
                    framework: self.framework.name(),
                })
            }
            _ => {}
        }
        if let Some(r) = &self.recompute_layers {
            let counts = self.stage_layer_counts(model.layers);
            let per_stage = |i: usize| counts.get(i).copied().unwrap_or(0);
            let bad = r.len() as u64 != self.pp
                || self.recompute != Recompute::Full
                || r.iter().enumerate().any(|(i, &n)| n > per_stage(i));
            if bad {
                out.push(I::RecomputeLayers {
                    given: r.clone(),
                    pp: self.pp,
                    per_stage: (0..r.len()).map(per_stage).collect(),
                    full: self.recompute == Recompute::Full,
                });
            } else if self.vpp > 1 && r.iter().enumerate().any(|(i, &n)| n < per_stage(i)) {
                // Megatron's block method recomputes the first N layers of every model chunk
                // (`transformer_block.py` `_checkpointed_forward`), not the first of a stage;
                // no framework recomputes part of an interleaved stage the way it is priced.
                out.push(I::PartialRecomputeInterleaved { vpp: self.vpp });
            }
        }
        for &(field, size_of, what) in self.framework.lacks() {
            let size = size_of(self);
            if size > 1 {
                out.push(I::FrameworkLacks {
                    framework: self.framework.name(),
                    field,
                    size,
                    what,
                });
            }
        }
        // FP8 GEMMs need the device's FP8 tensor cores (Hopper on; the A100 has none: NVIDIA
        // A100 datasheet lists no FP8 rate), and no framework reduces gradients in FP8.
        if self.dtype == Dtype::Fp8 && cluster.gpu.peak_tflops.fp8.is_none() {
            out.push(I::DtypeUnsupported {
                dtype: self.dtype.name(),
                device: cluster.gpu.name.clone(),
            });
        }
        if self.dtype == Dtype::Fp8 && !self.framework.trains_fp8() {
            out.push(I::FrameworkDtype {
                framework: self.framework.name(),
                dtype: self.dtype.name(),
            });
        }
        // Gradients are reduced in fp32 or in the 16-bit type the plan computes in (bf16
        // under FP8 training, whose weights and gradients stay bf16 outside the GEMMs).
        if let Some(d) = self.grad_reduce_dtype {
            let (half, allowed) = match self.dtype {
                Dtype::Bf16 | Dtype::Fp8 => (Some(Dtype::Bf16), "fp32 or bf16"),
                Dtype::Fp16 => (Some(Dtype::Fp16), "fp32 or fp16"),
                Dtype::Fp32 | Dtype::Tf32 => (None, "fp32"),
            };
            if d != Dtype::Fp32 && Some(d) != half {
                out.push(I::GradReduceDtype {
                    dtype: d.name(),
                    training: self.dtype.name(),
                    allowed,
                });
            }
        }
        if let Some(why) = self
            .fp8_param_gather_refusal()
            .filter(|_| self.fp8_param_gather)
        {
            out.push(I::Fp8ParamGather { why });
        }
        if self.fp8_recipe != super::Fp8Recipe::Delayed && self.dtype != Dtype::Fp8 {
            out.push(I::Fp8Recipe {
                recipe: self.fp8_recipe.name(),
                dtype: self.dtype.name(),
            });
        }
        if self.loss_fusion && self.framework != Framework::Megatron {
            out.push(I::LossFusion {
                framework: self.framework.name(),
            });
        }
        if self.p2p_scatter_gather && self.framework != Framework::Megatron {
            out.push(I::P2pScatterGather {
                framework: self.framework.name(),
            });
        }
        if let Some(divisor) = self
            .custom_vocab_divisor()
            .filter(|_| !self.framework.pads_vocab())
        {
            out.push(I::VocabPadding {
                framework: self.framework.name(),
                divisor,
            });
        }
        if model.tied_embeddings && self.pp > 1 && !self.framework.ties_across_stages() {
            out.push(I::TiedWithPipeline {
                framework: self.framework.name(),
                pp: self.pp,
            });
        }
        if self.ddp_beside_model_parallel() && !self.framework.runs_ddp_beside_model_parallel() {
            out.push(I::DdpBesideModelParallel {
                framework: self.framework.name(),
                dp: self.dp,
            });
        }
        if self.zero > 3 {
            out.push(I::ZeroStage { zero: self.zero });
        } else if !self.framework.zero_stages().contains(&self.zero) {
            out.push(I::FrameworkZero {
                framework: self.framework.name(),
                zero: self.zero,
                stages: self.framework.zero_stages(),
                why: self.framework.zero_gap(),
            });
        } else if self.zero >= 2 && self.pp > 1 && !self.framework.pipelines_sharded_data() {
            out.push(I::ZeroWithPipeline {
                zero: self.zero,
                pp: self.pp,
            });
        }
        out
    }
}
