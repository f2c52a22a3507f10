//! The two ends of the model: the input embedding (first pipeline stage) and the final norm,
//! LM head and cross-entropy loss (last stage), vocabulary-parallel as in Megatron-LM
//! (`VocabParallelEmbedding`, `vocab_parallel_cross_entropy`; Shoeybi et al. 2019 §3).

use super::layer::{layer_graph, norm};
use super::linear::{column_linear, fp8_casts, tp_comm};
use super::{Coll, Group, Kernel, Op, OpGraph, Shard};
use crate::spec::{Arch, ModelSpec};

/// Input embedding: each TP rank looks up its vocabulary slice, then the partial rows are
/// all-reduced (reduce-scattered with sequence parallelism); learned positions are added and
/// dropout applied where the model has them.
pub fn embedding(model: &ModelSpec, sh: &Shard) -> OpGraph {
    let e = sh.dtype.bytes();
    let h = model.hidden as f64;
    let x = sh.tokens() as f64 * h * e;
    let x_sp = sh.tokens_sp() as f64 * h * e;
    let vocab_rows = sh.vocab_rows(model.vocab) as f64 * h;
    let extra = model.embedding_params() - model.vocab as f64 * h;
    // Gather rows (read + write) and add positions (read both, write); backward scatter-adds
    // the gradient rows (read gradient, read-modify-write rows).
    let mut lookup = Op::memory(
        "embedding",
        2.0 * x + if extra > 0.0 { 3.0 * x } else { 0.0 },
        3.0 * x,
        0.0,
    );
    lookup.params = vocab_rows + extra;
    let mut ops = vec![lookup];
    if sh.tp > 1 {
        let k = |coll| Kernel::Comm {
            coll,
            group: Group::Tp,
            bytes: x,
            overlapped: false,
        };
        ops.push(if sh.sp {
            Op::comm(
                "tp_exit_embedding",
                Some(k(Coll::ReduceScatter)),
                Some(k(Coll::AllGather)),
            )
        } else {
            Op::comm("tp_exit_embedding", Some(k(Coll::AllReduce)), None)
        });
    }
    if model.dropout > 0.0 {
        let n = x_sp / e;
        ops.push(Op::memory(
            "embedding_dropout",
            (2.0 * e + 1.0) * n,
            (2.0 * e + 1.0) * n,
            n,
        ));
    }
    OpGraph::chain(ops)
}

/// Final norm, LM head GEMM (vocabulary split over TP) and cross-entropy on fp32 logits,
/// then each multi-token prediction depth's own final norm and the shared head and loss
/// again ([`ModelSpec::mtp_layers`]; the depths' bodies are [`mtp`]).
///
/// The LM head carries parameters only when untied; a tied head reuses the embedding matrix
/// (the cost model adds the copy Megatron keeps on the last stage when pp > 1).
/// BERT's head (Megatron-LM `BertLMHead`, `Pooler`; Devlin et al. 2019 §3): the pooler, a
/// dense h×h + bias and tanh on each sequence's first token, replicated over TP; the MLM
/// transform (dense h×h + bias, GeLU, LayerNorm); the tied decoder with its own output bias,
/// one per vocabulary row, split over TP with the rows and added in the GEMM
/// (`parallel_lm_logits`) — the h² + h and V of `ModelSpec::head_params`.
/// Cross-entropy, Megatron-Core `tensor_parallel/cross_entropy.py` (`VocabParallelCrossEntropy`,
/// unfused, one eager kernel per line), per logit: `.float()` reads the 16-bit logits and
/// writes an fp32 copy (e + 4), `max` reads it (4), the in-place subtraction of the max reads
/// and writes it (8), `exp` in place (8), `sum` reads (4), `div_` normalises in place (8):
/// (e + 36)·s·b·V/t bytes, plus three all-reduces of s·b fp32 values (max, sum, target logit)
/// over TP; it saves the fp32 softmax (4·s·b·V/t, DESIGN.md §3 "logits"). Backward scatters −1
/// at the targets, `grad_input.mul_(grad_output)` reads and writes the fp32 softmax (8), and
/// the `.float()` cast's backward reads it and writes the 16-bit gradient (4 + e): (e + 12).
/// torchtitan's `cross_entropy(pred.float())` moves about as much in total (cast e + 4,
/// log-softmax three reads and a write 16; backward dense nll gradient 4, log-softmax backward
/// 12, cast 4 + e: e + 20 forward, e + 20 backward against Megatron's e + 36 and e + 12).
pub fn head(model: &ModelSpec, sh: &Shard) -> OpGraph {
    let e = sh.dtype.bytes();
    let h = model.hidden;
    let v = sh.vocab_rows(model.vocab);
    let tokens = sh.tokens() as f64;
    let x = tokens * h as f64 * e;
    let mut ops = Vec::new();
    let bert = model.arch == Arch::Bert;
    if bert {
        if model.pooler {
            // Pooler: one token per sequence, so b rows; tanh reads and writes them, saving
            // its output.
            let pooled = (sh.b * h) as f64 * e;
            // Megatron's BERT pooler and MLM dense layers are torch Linear modules (16-bit
            // even under FP8 training, `Op::fp8`).
            let mut pooler = Op::linear("pooler", sh.b, h, h, (h * h + h) as f64, pooled);
            pooler.fp8 = false;
            ops.push(pooler);
            ops.push(Op::memory(
                "pooler_tanh",
                2.0 * pooled,
                3.0 * pooled,
                pooled,
            ));
        }
        // BERT's MLM transform: dense h×h + GeLU + LayerNorm before the tied decoder.
        let mut transform = Op::linear("mlm_transform", sh.tokens(), h, h, (h * h + h) as f64, x);
        transform.fp8 = false;
        ops.push(transform);
        ops.push(Op::memory("mlm_gelu", 2.0 * x, 3.0 * x, x));
        ops.push(norm("mlm_norm", model, sh, sh.tokens()));
    } else {
        ops.push(norm("final_norm", model, sh, sh.tokens_sp()));
    }
    let weights = if model.tied_embeddings { 0 } else { v * h };
    let head_params = (weights + if bert { v } else { 0 }) as f64;
    // The LM head is not a Transformer Engine module: 16-bit even under FP8 training.
    ops.push(column_linear("lm_head", sh, (v, h), head_params, false));
    let logits = tokens * v as f64;
    // Rows of V/t logits are long enough to stream at elementwise speed (the per-row reduction
    // overhead that slows 4096-wide norms is amortised over tens of thousands of elements).
    let mut ce = if sh.framework.fused_loss() {
        // flash-attn's fused cross-entropy (flash_attn.losses.cross_entropy): forward reads the
        // 16-bit logits once and keeps them with one fp32 log-sum-exp per row; backward reads
        // them again and writes the gradient.
        Op::memory(
            "cross_entropy",
            e * logits,
            2.0 * e * logits,
            e * logits + 4.0 * tokens,
        )
    } else if sh.loss_fusion {
        // Transformer Engine's fused cross-entropy (`pytorch/triton/cross_entropy.py`, as
        // Megatron-Core's `--cross-entropy-fusion-impl te` calls it): forward, an online-softmax
        // pass reads the 16-bit logits for each row's maximum and sum, and a second reads them
        // again and writes the gradient in their place (3e); the backward scales that
        // gradient in place (2e). The logits tensor, now the gradient, is what it keeps.
        Op::memory(
            "cross_entropy",
            3.0 * e * logits,
            2.0 * e * logits,
            e * logits,
        )
    } else {
        Op::memory(
            "cross_entropy",
            (e + 36.0) * logits,
            (e + 12.0) * logits,
            4.0 * logits,
        )
    };
    if sh.tp > 1 {
        ce.fwd.push(Kernel::Comm {
            coll: Coll::AllReduce,
            group: Group::Tp,
            bytes: 3.0 * 4.0 * tokens,
            overlapped: false,
        });
    }
    ops.push(ce);
    let passes = sh.framework.train_metric_passes();
    if passes > 0 {
        // Training metrics after the backward, without gradients: each pass is
        // `torch.nn.CrossEntropyLoss` under bf16 autocast, which runs cross-entropy in fp32
        // (PyTorch AMP op reference: `cross_entropy` autocasts to float32): the cast reads the
        // 16-bit logits and writes an fp32 copy (e + 4), log-softmax reads it for the maximum
        // and for the sum of exponentials and reads it again to write its fp32 output (16) —
        // (e + 20) bytes per logit and pass, nothing saved.
        ops.push(Op::memory(
            "train_metrics",
            passes as f64 * (e + 20.0) * logits,
            0.0,
            0.0,
        ));
    }
    if model.mtp_layers > 0 && !bert {
        // Each depth ends as the main model does: its own final norm, then the shared output
        // head (no weights of its own) and loss.
        let tail: Vec<Op> = ops
            .iter()
            .filter(|o| o.name != "train_metrics")
            .map(|o| Op {
                params: if o.name == "lm_head" { 0.0 } else { o.params },
                ..o.clone()
            })
            .collect();
        for _ in 0..model.mtp_layers {
            ops.extend(tail.iter().cloned());
        }
    }
    OpGraph::chain(ops)
}

/// The body of one multi-token prediction depth up to its final norm, on the last stage
/// after the layers, where the model has depths ([`ModelSpec::mtp_layers`]; DeepSeek-V3
/// §2.2; Megatron-Core `MultiTokenPredictionLayer.forward`,
/// megatron/core/transformer/multi_token_prediction.py): the lookup of the tokens one further
/// ahead in the shared embedding (the first stage's table, or the copy the last stage keeps:
/// no weights here), `enorm` and `hnorm` over the embedded and the hidden state, their
/// concatenation (2h wide; its backward slices), the column-parallel `eh_proj` (2h → h/t,
/// gathering its input under SP), the all-gather of its output along the hidden dimension
/// (`gather_from_tensor_model_parallel_region`, whose backward splits without
/// communicating) and, under SP, the scatter back to the sequence shards (backward an
/// all-gather), then one transformer layer of the last layer's kind. The plan's recomputation applies to it as to
/// the layers (Megatron-Core builds it from the same config; `cost::stages::mtp_recompute`).
pub fn mtp(model: &ModelSpec, sh: &Shard) -> Option<OpGraph> {
    (model.mtp_layers > 0 && model.arch != Arch::Bert).then(|| OpGraph::chain(mtp_depth(model, sh)))
}

fn mtp_depth(model: &ModelSpec, sh: &Shard) -> Vec<Op> {
    let e = sh.dtype.bytes();
    let h = model.hidden;
    let x = (sh.tokens() * h) as f64 * e;
    let x_sp = (sh.tokens_sp() * h) as f64 * e;
    let mut ops: Vec<Op> = embedding(model, sh)
        .ops()
        .into_iter()
        .map(|o| Op {
            params: 0.0,
            ..o.clone()
        })
        .collect();
    ops.push(norm("mtp_enorm", model, sh, sh.tokens_sp()));
    ops.push(norm("mtp_hnorm", model, sh, sh.tokens_sp()));
    ops.push(Op::memory("mtp_concat", 4.0 * x_sp, 0.0, 0.0));
    let w = (2 * h * h.div_ceil(sh.tp)) as f64;
    let proj = column_linear("mtp_eh_proj", sh, (h.div_ceil(sh.tp), 2 * h), w, true);
    let tokens = sh.tokens() as f64;
    ops.push(fp8_casts(
        proj,
        sh,
        tokens * 2.0 * h as f64,
        tokens * h.div_ceil(sh.tp) as f64,
        false,
    ));
    if sh.tp > 1 {
        let k = |coll| tp_comm(coll, x, false);
        let bwd = sh.sp.then(|| k(Coll::AllGather));
        ops.push(Op::comm("mtp_gather", Some(k(Coll::AllGather)), bwd));
    }
    let last = model.mtp_layer_kind();
    let layer = layer_graph(model, sh, model.is_moe_layer(last), model.slides(last));
    ops.extend(layer.ops().into_iter().cloned());
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AttentionImpl;
    use crate::units::Dtype;

    fn shard(tp: u64) -> Shard {
        Shard {
            b: 2,
            s: 2048,
            tp,
            sp: false,
            cp: 1,
            ep: 1,
            etp: tp,
            attention: AttentionImpl::Flash,
            dtype: Dtype::Bf16,
            fp8_recipe: Default::default(),
            loss_fusion: false,
            tp_overlap: crate::spec::TpOverlap::Backward,
            framework: crate::spec::Framework::Megatron,
            modules: Default::default(),
            vocab_divisor: 128,
        }
    }

    /// On one rank the two ends hold exactly the parameters `ModelSpec` counts outside the
    /// layers, for every preset, where the framework builds the vocabulary as given
    /// (torchtitan): bert-large's head is the pooler (h² + h), the MLM transform (h² + h,
    /// LayerNorm 2h) and the decoder bias (V): 2·1024² + 4·1024 + 30522 = 2,097,152 + 4,096 +
    /// 30,522 = 2,131,770.
    #[test]
    fn ends_hold_the_remaining_parameters() {
        let given = Shard {
            framework: crate::spec::Framework::Torchtitan,
            ..shard(1)
        };
        for (name, _) in crate::spec::presets::MODELS {
            let m = crate::spec::load_model(name).unwrap();
            let (emb, hd) = (embedding(&m, &given), head(&m, &given));
            assert_eq!(
                (emb.params(), hd.params()),
                (m.embedding_params(), m.head_params()),
                "{name}"
            );
        }
        let bert = crate::spec::load_model("bert-large").unwrap();
        assert_eq!((bert.hidden, bert.vocab), (1024, 30522));
        assert_eq!(head(&bert, &given).params(), 2_131_770.0);
        let m = crate::spec::load_model("llama3-8b").unwrap();
        let hd = head(&m, &shard(1));
        // LM head forward FLOPs 2·b·s·h·V (DESIGN.md §3).
        assert_eq!(hd.fwd_flops(), 2.0 * 2.0 * 2048.0 * 4096.0 * 128256.0);
        // Logits saved in fp32: 4·s·b·V/t.
        assert_eq!(
            head(&m, &shard(2)).op("cross_entropy").unwrap().saved_bytes,
            4.0 * 2.0 * 2048.0 * 64128.0
        );
    }

    /// Megatron-LM pads the vocabulary to a multiple of 128·tp before splitting it
    /// (`_vocab_size_with_padding`); torchtitan splits the given one. GPT-2's 50,257 tokens:
    /// 50,304 rows at tp 1 (393 · 128) and 51,200 at tp 8 (50 · 1,024), 6,400 a rank; torchtitan
    /// ⌈50,257 / 8⌉ = 6,283. Llama 3's 128,256 (1,002 · 128) stay at tp 1 and become 129,024
    /// (126 · 1,024) at tp 8. The embedding holds the padded rows (h = 1,600) and the head
    /// computes their logits; model FLOPs (`cost::flops`) count the real vocabulary. Another
    /// `--make-vocab-size-divisible-by` pads to its multiple: 1 at tp 8 gives ⌈50,257 / 8⌉ =
    /// 6,283 (Megatron pads to a multiple of tp alone), 64 gives ⌈50,257 / 512⌉ = 99 → 50,688,
    /// 6,336 a rank.
    #[test]
    fn megatron_pads_the_vocabulary_to_128_per_rank() {
        use crate::spec::Framework::{DeepSpeed, Megatron, Torchtitan};
        assert_eq!(Megatron.vocab_rows(50_257, 1, 128), 50_304);
        assert_eq!(Megatron.vocab_rows(50_257, 8, 128), 6_400);
        assert_eq!(DeepSpeed.vocab_rows(50_257, 8, 128), 6_400);
        assert_eq!(Torchtitan.vocab_rows(50_257, 8, 128), 6_283);
        assert_eq!(Megatron.vocab_rows(128_256, 1, 128), 128_256);
        assert_eq!(Megatron.vocab_rows(128_256, 8, 128), 16_128);
        assert_eq!(Megatron.vocab_rows(50_257, 8, 1), 6_283);
        assert_eq!(Megatron.vocab_rows(50_257, 8, 64), 6_336);
        assert_eq!(Torchtitan.vocab_rows(50_257, 8, 64), 6_283);
        let gpt = crate::spec::load_model("gpt2-xl").unwrap();
        let sh = shard(8);
        assert_eq!(
            embedding(&gpt, &sh).params(),
            6_400.0 * 1_600.0 + 1_024.0 * 1_600.0
        );
        let ce = head(&gpt, &sh);
        // Megatron's loss reads and writes (e + 36) bytes per logit of its 6,400 columns.
        let logits = 2.0 * 2048.0 * 6_400.0;
        let loss = ce.op("cross_entropy").unwrap();
        assert_eq!(loss.saved_bytes, 4.0 * logits);
        // The plan's divisor reaches the shard: 64 holds 6,336 rows a rank.
        let plan = crate::spec::Plan {
            vocab_divisor: 64,
            ..crate::spec::Plan::new(1, 8, 1, 2, 2, 2048)
        };
        let sh64 = Shard::of(&plan);
        assert_eq!(
            embedding(&gpt, &sh64).params(),
            6_336.0 * 1_600.0 + 1_024.0 * 1_600.0
        );
        assert_eq!(
            head(&gpt, &sh64).op("cross_entropy").unwrap().saved_bytes,
            4.0 * 2.0 * 2048.0 * 6_336.0
        );
    }

    /// DeepSeek-V3's multi-token prediction depth on one rank (tp 1, ep 1, b·s = 4096):
    /// the head holds its own weights beside the final norm and untied head, 3·7168 for the
    /// enorm, hnorm and its final norm, 2·7168² = 102,760,448 for eh_proj and an MoE layer's
    /// 11,507,286,016 (MLA linears 187,105,280, latent norms 1536 + 512, two norms 2·7168,
    /// router 256·7168, 256 routed experts 3·7168·2048 each and the shared one): 11,610,067,968,
    /// `ModelSpec::mtp_params`; with the embedding and head DeepSeek's checkpoint copies
    /// (2·129,280·7168) that is 13.46 B, its "14B of the MTP module". Forward it runs the
    /// LM head twice; eh_proj reads 2h and writes h per token.
    #[test]
    fn multi_token_prediction_runs_a_layer_and_the_head_again() {
        let m = crate::spec::load_model(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hf/deepseek-v3.json"
        ))
        .unwrap();
        assert_eq!(m.mtp_layers, 1);
        assert_eq!(m.layer_params(60), 11_507_286_016.0);
        assert_eq!(m.mtp_params(), 11_610_067_968.0);
        let sh = Shard {
            b: 1,
            s: 4096,
            ..shard(1)
        };
        // The depth's body is a graph of its own; its final norm, head and loss the head's.
        let (hd, body) = (head(&m, &sh), mtp(&m, &sh).unwrap());
        assert_eq!(
            hd.params() + body.params(),
            m.head_params() + m.mtp_params()
        );
        let lm: Vec<&Op> = hd
            .ops()
            .into_iter()
            .filter(|o| o.name == "lm_head")
            .collect();
        assert_eq!(lm.len(), 2);
        assert_eq!(lm[0].params + lm[1].params, 129_280.0 * 7168.0);
        let proj = body.op("mtp_eh_proj").unwrap();
        assert_eq!(proj.fwd_flops(), 2.0 * 4096.0 * 2.0 * 7168.0 * 7168.0);
        let mut none = m.clone();
        none.mtp_layers = 0;
        assert!(mtp(&none, &sh).is_none());
        let extra = hd.fwd_flops() + body.fwd_flops() - head(&none, &sh).fwd_flops();
        let per_token = extra / 4096.0;
        let layer = crate::graph::transformer_layer(&m, &sh, true).fwd_flops() / 4096.0;
        assert_eq!(
            per_token,
            2.0 * 2.0 * 7168.0 * 7168.0 + layer + 2.0 * 7168.0 * 129_280.0
        );
    }

    /// llm-foundry's Composer runs two training-metric cross-entropies per micro-batch in
    /// fp32 (`Framework::train_metric_passes`): 2 × (2 + 20) = 44 bytes per bf16 logit, no
    /// backward, nothing saved; the other frameworks run none. GPT-3's vocabulary on b·s =
    /// 2·2048 tokens, tp = 1: 4096 × 51,200 = 209,715,200 logits, 9,227,468,800 bytes.
    #[test]
    fn llm_foundry_reads_the_logits_twice_more_for_its_training_metrics() {
        let m = crate::spec::load_model("gpt3-175b").unwrap();
        let mut sh = shard(1);
        sh.framework = crate::spec::Framework::LlmFoundry;
        let hd = head(&m, &sh);
        let op = hd.op("train_metrics").unwrap();
        assert_eq!(Kernel::memory_bytes(&op.fwd), 9_227_468_800.0);
        assert_eq!((op.bwd.len(), op.saved_bytes), (0, 0.0));
        assert!(head(&m, &shard(1)).op("train_metrics").is_none());
    }

    /// Megatron's unfused cross-entropy moves (e + 36) bytes per logit forward and (e + 12)
    /// backward (cast, max, subtract, exp, sum, divide; scatter, multiply, cast back). GPT-3
    /// vocabulary 51,200 over tp = 2 on b·s = 2·2048 tokens: 4096 × 25,600 = 104,857,600 logits,
    /// so 38 × 104,857,600 = 3,984,588,800 bytes forward and 14 × = 1,468,006,400 backward.
    #[test]
    fn megatron_cross_entropy_moves_every_eager_pass() {
        let m = crate::spec::load_model("gpt3-175b").unwrap();
        assert_eq!(m.vocab, 51200);
        let ce = head(&m, &shard(2)).op("cross_entropy").unwrap().clone();
        assert_eq!(Kernel::memory_bytes(&ce.fwd), 3_984_588_800.0);
        assert_eq!(Kernel::memory_bytes(&ce.bwd), 1_468_006_400.0);
    }

    /// Transformer Engine's fused cross-entropy (`Shard::loss_fusion`): forward reads the bf16
    /// logits twice and writes the gradient in place, 3 × 2 bytes per logit, the backward
    /// scales it in place, 2 × 2, and it keeps the 2-byte logits. Llama 3 8B, b·s = 2 × 2048
    /// tokens, 128,256-word vocabulary at tp 1: 525,336,576 logits.
    #[test]
    fn te_fused_loss_passes_over_the_bf16_logits() {
        let m = crate::spec::load_model("llama3-8b").unwrap();
        let sh = Shard {
            loss_fusion: true,
            ..shard(1)
        };
        let g = head(&m, &sh);
        let ce = g.op("cross_entropy").unwrap();
        let logits = 525_336_576.0;
        assert_eq!(Kernel::memory_bytes(&ce.fwd), 6.0 * logits);
        assert_eq!(Kernel::memory_bytes(&ce.bwd), 4.0 * logits);
        assert_eq!(ce.saved_bytes, 2.0 * logits);
    }

    /// Under FP8 training the LM head is a 16-bit GEMM (Megatron-Core's output layer is not a
    /// Transformer Engine module) that saves its 16-bit input: 2 bytes × b·s·h = 2 × 4096 ×
    /// 4096 = 33,554,432 for Llama 3 8B, where an FP8 linear saves one byte per element.
    #[test]
    fn fp8_training_keeps_the_lm_head_16_bit() {
        let m = crate::spec::load_model("llama3-8b").unwrap();
        let sh = Shard {
            dtype: Dtype::Fp8,
            ..shard(1)
        };
        let g = head(&m, &sh);
        let lm = g.op("lm_head").unwrap();
        assert_eq!(lm.kernel_dtype(Dtype::Fp8, &lm.fwd[0]), Dtype::Bf16);
        assert_eq!(lm.saved_bytes, 33_554_432.0);
        let layer = crate::graph::transformer_layer(&m, &sh, false);
        let qkv = layer.op("qkv").unwrap();
        let gemm = qkv
            .fwd
            .iter()
            .find(|k| matches!(k, Kernel::Gemm { .. }))
            .unwrap();
        assert_eq!(qkv.kernel_dtype(Dtype::Fp8, gemm), Dtype::Fp8);
        assert_eq!(qkv.kernel_dtype(Dtype::Bf16, gemm), Dtype::Bf16);
        assert_eq!(qkv.saved_bytes, 4096.0 * 4096.0);
        let attn = layer.op("attention").unwrap();
        assert!(
            attn.fwd
                .iter()
                .chain(&attn.bwd)
                .all(|k| attn.kernel_dtype(Dtype::Fp8, k) == Dtype::Bf16)
        );
    }
}
