//! Prices single kernels on the target hardware: GEMMs from efficiency (measured, or the
//! preset's peak fraction with wave quantisation and a roofline), memory-bound kernels from
//! HBM bandwidth, flash attention from its own efficiency, collectives from α-β with
//! hierarchical groups (DESIGN.md §3).

use super::{GroupShape, Placement};
use crate::calib::{Profile, Source, Span, bus_factor};
use crate::graph::{Coll, Kernel, MemClass, causal_blocks, causal_share};
use crate::spec::{AttentionImpl, ClusterSpec, DeviceSpec};
use crate::units::{Dtype, GB, US};

/// Prices kernels on one cluster, optionally with a measured profile.
#[derive(Clone, Copy, Debug)]
pub struct Machine<'a> {
    /// The cluster.
    pub cluster: &'a ClusterSpec,
    /// Measured profile, if any.
    pub profile: Option<&'a Profile>,
}

/// Query/key block size of FlashAttention-2 for head dimensions up to 128 (Dao 2023 §3.3:
/// blocks of {64, 128} × {64, 128}).
const ATTENTION_BLOCK: u64 = 128;

/// Head dimension at which the presets' fused-attention efficiencies were measured (FA2
/// paper §4.1 and FA3 paper Figs. 5-6, head dim 128).
const ATTENTION_REFERENCE_HEAD_DIM: f64 = 128.0;

/// Achieved fraction of the peak by a fused-attention kernel at head dimension `d`, given its
/// fraction `eff_ref` at [`ATTENTION_REFERENCE_HEAD_DIM`].
///
/// Each score element costs `f·d` tensor FLOPs (f = 4 forward: QKᵀ and PV; 10 backward:
/// 2.5× as much) and one exponential on the special-function units (the softmax forward,
/// P = exp(S − L) recomputed backward), which runs beside the MMAs rather than inside them
/// (Shah et al. 2024, FlashAttention-3 §3.1: 3.9 TFLOPS of exponentials against 989 of
/// matmul on H100). In time per element at peak, `f·d / eff(d) = f·d / eff_mma + R` with `R`
/// = [`DeviceSpec::tensor_flops_per_exp`], so `1/eff(d) = 1/eff_ref + (R/f)·(1/d − 1/128)`:
/// the exponentials weigh twice as much at head dim 64 as at 128. On H100, forward, this
/// gives head dim 64 at 0.84 (FlashAttention-2) and 0.75 (FlashAttention-3) of the head-dim
/// 128 rate; the FA3 paper's Fig. 5 measures 324/370 = 0.88 and 497/648 = 0.77 at 16k.
pub fn attention_efficiency(eff_ref: f64, d: u64, backward: bool, flops_per_exp: f64) -> f64 {
    let f = if backward { 10.0 } else { 4.0 };
    let extra = flops_per_exp / f * (1.0 / d.max(1) as f64 - 1.0 / ATTENTION_REFERENCE_HEAD_DIM);
    if extra == 0.0 {
        return eff_ref;
    }
    1.0 / (1.0 / eff_ref + extra).max(1.0)
}

/// Fixed work per query block in units of one key block: loading the Q block, the final
/// rescaling by the softmax normaliser and writing O (Dao 2023, Algorithm 1 lines 4, 12-14).
const QUERY_BLOCK_FIXED_COST: f64 = 1.0;

/// Output tile shapes cuBLAS uses for large GEMMs on Ampere/Hopper (CUTLASS default
/// threadblock tiles 256×128, 128×256 and 128×128).
const TILES: [(u64, u64); 3] = [(256, 128), (128, 256), (128, 128)];

/// Fraction of the GPU's SMs kept busy by `tiles` independent tiles, over all waves
/// (wave quantisation: NVIDIA, "Matrix Multiplication Background User's Guide", §"Wave
/// Quantization").
pub fn wave_efficiency(tiles: u64, sms: u64) -> f64 {
    let waves = tiles.div_ceil(sms.max(1));
    tiles as f64 / (waves * sms) as f64
}

impl<'a> Machine<'a> {
    /// The device.
    pub fn device(&self) -> &'a DeviceSpec {
        &self.cluster.gpu
    }

    fn launch_s(&self) -> f64 {
        self.device().efficiency.kernel_launch_us * US
    }

    /// Achieved HBM bandwidth (bytes/s) and its source.
    pub fn hbm_bytes_s(&self) -> (f64, Source) {
        match self.profile.and_then(|p| p.hbm_gbytes_s) {
            Some(g) => (g * GB, Source::Measured),
            None => (
                self.device().hbm_bytes_s() * self.device().efficiency.hbm,
                Source::Preset,
            ),
        }
    }

    /// Time of a memory-bound kernel moving `bytes` with access pattern `class`: streaming
    /// kernels at the (measured or preset) achieved HBM bandwidth, row reductions at the
    /// device's lower reduction efficiencies relative to it.
    pub fn memory_s(&self, bytes: f64, class: MemClass) -> (f64, Source) {
        let (bw, src) = self.hbm_bytes_s();
        let dev = self.device();
        let eff = &dev.efficiency;
        let rel = match class {
            MemClass::Fp8Transpose | MemClass::Fp8TransposeKernel if dev.fp8_any_layout => {
                return (0.0, src);
            }
            MemClass::Fp8Transpose => return (bytes / bw, src),
            MemClass::Elementwise | MemClass::Fp8TransposeKernel => 1.0,
            MemClass::Reduction => eff.reduction / eff.hbm,
            MemClass::ReductionBwd => eff.reduction_bwd / eff.hbm,
        };
        (bytes / (bw * rel) + self.launch_s(), src)
    }

    /// Time of `batch` GEMMs m×n×k in `dtype`, plus a launch: the preset model
    /// [`Machine::gemm_preset_s`], or with a profile the preset throughput of the shape scaled
    /// by the measured/preset ratio of the nearest measured shapes (`Profile::gemm_flops_s`),
    /// at most the device's peak (with `calib::PEAK_ALLOWANCE`): the ratio of a small shape
    /// measured well above the preset's small-shape rate had carried large shapes to 146% MFU.
    pub fn gemm_s(&self, dtype: Dtype, batch: u64, m: u64, n: u64, k: u64) -> (f64, Source) {
        let flops = 2.0 * batch as f64 * m as f64 * n as f64 * k as f64;
        let preset = |b: u64, m: u64, n: u64, k: u64| {
            2.0 * b as f64 * m as f64 * n as f64 * k as f64 / self.gemm_preset_s(dtype, b, m, n, k)
        };
        if let Some((fs, src)) = self
            .profile
            .and_then(|p| p.gemm_flops_s(dtype, batch, m, n, k, &preset))
        {
            let ceiling = crate::calib::PEAK_ALLOWANCE * self.device().peak_flops(dtype);
            return (flops / fs.min(ceiling) + self.launch_s(), src);
        }
        (
            self.gemm_preset_s(dtype, batch, m, n, k) + self.launch_s(),
            Source::Preset,
        )
    }

    /// The preset GEMM model, launch excluded: 2·m'·n'·k / (peak · eff_gemm · wave efficiency),
    /// for the best of cuBLAS's tile shapes and split-K factors, bounded below by the bytes of
    /// A, B and C at HBM speed (roofline, Williams et al. 2009). m' and n' are m and n rounded
    /// up to whole tiles: a partial tile costs a whole one (tile quantisation, NVIDIA "Matrix
    /// Multiplication Background User's Guide" §"Tile Quantization"): an expert's
    /// GEMM over 274 routed tokens runs as one over 384.
    ///
    /// Split-K (CUTLASS `GemmSplitKParallel`; cuBLAS picks it for small m×n with long k, such
    /// as weight gradients) cuts k into s slices so m·n tiles become s times as many, then
    /// reduces s fp32 partial results (written and read: 2·s·m·n·4 bytes). Each slice keeps at
    /// least 256 of k so the main loop stays pipelined.
    pub fn gemm_preset_s(&self, dtype: Dtype, batch: u64, m: u64, n: u64, k: u64) -> f64 {
        let dev = self.device();
        let rate = dev.peak_flops(dtype) * dev.gemm_efficiency(dtype);
        let hbm = self.hbm_bytes_s().0;
        let max_split = (k / 256).clamp(1, dev.sms);
        let mut best = f64::INFINITY;
        for &(tm, tn) in &TILES {
            let tiles = batch * m.div_ceil(tm) * n.div_ceil(tn);
            // The work the tiles do, padding included.
            let flops = if dev.gemm_tiles {
                2.0 * (tiles * tm * tn) as f64 * k as f64
            } else {
                2.0 * (batch * m * n * k) as f64
            };
            let mut split = 1;
            while split <= max_split {
                let reduce = if split > 1 {
                    2.0 * (split * batch * m * n) as f64 * 4.0 / hbm
                } else {
                    0.0
                };
                best = best.min(flops / (rate * wave_efficiency(tiles * split, dev.sms)) + reduce);
                if tiles * split >= dev.sms {
                    break;
                }
                split *= 2;
            }
        }
        let bytes = batch as f64 * (m * k + k * n + m * n) as f64 * dtype.bytes();
        best.max(bytes / hbm)
    }

    /// Time of a fused attention kernel.
    ///
    /// FlashAttention tiles queries and keys into 128-row blocks (Dao 2023, Algorithm 1): each
    /// query block streams over the key blocks it needs. A causal mask halves the useful work
    /// (what [`Kernel::flops`] counts) but the diagonal blocks are computed whole, so n query
    /// blocks visit n(n+1)/2 blocks for n²/2 useful; each query block also pays a fixed cost
    /// (loading Q, rescaling and writing O) of about one key block. The device's efficiency is
    /// the kernel's long-sequence asymptote (where both overheads vanish), and thread blocks
    /// are quantised into waves over the SMs. FlashAttention in Triton runs the forward 1.4×
    /// and the backward 2× slower than FlashAttention-2 (Dao 2023 §4.1: "1.3-1.5× faster …
    /// in the forward pass and around 2× faster in the backward pass"), so it is priced from
    /// the device's FlashAttention-2 efficiency, not from its best vendor kernel's. The
    /// efficiencies are quoted at head dimension 128 and rescaled to the kernel's own by
    /// [`attention_efficiency`].
    pub fn attention_s(&self, dtype: Dtype, k: &Kernel) -> (f64, Source) {
        let Kernel::Attention {
            batch_heads,
            s_q,
            s_kv,
            head_dim,
            v_dim,
            causal,
            backward,
            kernel,
            window,
        } = *k
        else {
            unreachable!("attention_s on a non-attention kernel")
        };
        let dev = self.device();
        let (eff, slowdown) = match (backward, kernel) {
            (false, AttentionImpl::FlashTriton) => (dev.efficiency.attention_fa2_fwd, 1.4),
            (true, AttentionImpl::FlashTriton) => (dev.efficiency.attention_fa2_bwd, 2.0),
            (false, _) => (dev.efficiency.attention_fwd, 1.0),
            (true, _) => (dev.efficiency.attention_bwd, 1.0),
        };
        // The exponentials weigh against the MMA FLOPs per score: at the mean of the GEMMs'
        // head sizes, (d + d_v)/2 forward and (3d + 2d_v)/5 backward (`Kernel::flops`).
        let mean_dim = if backward {
            (3 * head_dim + 2 * v_dim) / 5
        } else {
            (head_dim + v_dim) / 2
        };
        let eff = attention_efficiency(eff, mean_dim, backward, dev.tensor_flops_per_exp);
        // Blocks computed, whole (a last, partial block is computed whole too), against the
        // useful work in block units, which `flops` counts exactly: a sequence one token past
        // a block costs a block more, never less.
        let (nq, nk) = (
            s_q.div_ceil(ATTENTION_BLOCK) as f64,
            s_kv.div_ceil(ATTENTION_BLOCK) as f64,
        );
        let b = ATTENTION_BLOCK as f64;
        let exact = s_q as f64 / b * (s_kv as f64 / b);
        let (useful, visited) = if causal {
            // Blocks the mask cuts are computed whole: half a block per query block on the
            // diagonal; under a sliding window, the blocks each query block's band touches,
            // counted as they run ([`causal_blocks`]), never more than full causal attention.
            let share = causal_share(s_kv, window);
            let full = nq * nk / 2.0 + nq / 2.0;
            let visited = match window.filter(|&w| w < s_kv) {
                None => full,
                Some(w) => {
                    let (q, k) = (
                        s_q.div_ceil(ATTENTION_BLOCK),
                        s_kv.div_ceil(ATTENTION_BLOCK),
                    );
                    (causal_blocks(q, k, ATTENTION_BLOCK, Some(w)) as f64).min(full)
                }
            };
            (exact * share, visited)
        } else {
            (exact, nq * nk)
        };
        let overhead = (visited + nq * QUERY_BLOCK_FIXED_COST) / useful;
        let wave = wave_efficiency(batch_heads * s_q.div_ceil(ATTENTION_BLOCK), dev.sms);
        (
            k.flops() * overhead * slowdown / (dev.peak_flops(dtype) * eff * wave)
                + self.launch_s(),
            Source::Preset,
        )
    }

    /// Time of collective `coll` with message size `bytes` on a group of shape `g`.
    ///
    /// α-β (Hockney): t = α + f·S / busbw with NCCL's bus factor f. Inside a node busbw is the
    /// NVLink rate at its achieved efficiency. Across nodes a ring crosses each node boundary
    /// once per channel; with `per_node` ranks per node, NCCL spreads channels over as many
    /// NICs, each shared by gpus_per_node/nics GPUs, so busbw = min(NVLink, per_node ·
    /// NIC bandwidth per GPU) — 8 × 24 = 192 GB/s for DGX A100 (NVIDIA GTC24 S62129).
    /// All-to-all across nodes sends (n − per_node)/n of its data over the NICs.
    /// α: one link latency per ring step inside a node, 2·log2(nodes) NIC latencies across
    /// (NCCL's tree for small messages).
    pub fn collective_s(&self, coll: Coll, g: GroupShape, bytes: f64) -> (f64, Source) {
        if g.n <= 1 || bytes <= 0.0 {
            return (0.0, Source::Preset);
        }
        let span = if g.nodes() > 1 {
            Span::Inter
        } else {
            Span::Intra
        };
        if let Some(r) = self
            .profile
            .and_then(|p| p.collective_s(coll, g.n, span, g.per_node, bytes))
        {
            return r;
        }
        let c = self.cluster;
        let intra_bw = c.intra_node.bw_gbytes_s * GB * c.intra_node.efficiency;
        let intra_lat = c.intra_node.latency_us * US;
        let f = bus_factor(coll, g.n);
        let steps = match coll {
            Coll::AllReduce => 2 * (g.n - 1),
            Coll::SendRecv => 1,
            _ => g.n - 1,
        } as f64;
        let t = match (&c.inter_node, g.nodes() > 1) {
            (Some(net), true) => {
                let nic = net.per_gpu_bytes_s(c.gpus_per_node);
                let alpha = 2.0 * (g.nodes() as f64).log2().ceil() * net.latency_us * US
                    + (g.per_node - 1) as f64 * intra_lat;
                match coll {
                    Coll::AllToAll => {
                        let remote = (g.n - g.per_node) as f64 / g.n as f64 * bytes;
                        let local = (g.per_node - 1) as f64 / g.n as f64 * bytes;
                        alpha + (remote / nic).max(local / intra_bw)
                    }
                    Coll::SendRecv => net.latency_us * US + bytes / nic,
                    _ => alpha + f * bytes / intra_bw.min(g.per_node as f64 * nic),
                }
            }
            _ => steps * intra_lat + f * bytes / intra_bw,
        };
        (t, Source::Preset)
    }

    /// Time and source of any kernel, for a plan's placement.
    pub fn kernel_s(&self, dtype: Dtype, k: &Kernel, place: &Placement) -> (f64, Source) {
        match *k {
            Kernel::Gemm { batch, m, n, k } => self.gemm_s(dtype, batch, m, n, k),
            Kernel::Attention { .. } => self.attention_s(dtype, k),
            Kernel::Memory { bytes, class } => self.memory_s(bytes, class),
            Kernel::Comm {
                coll, group, bytes, ..
            } => self.collective_s(coll, place.group(group), bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load_cluster;

    #[test]
    fn ring_bandwidth_inside_and_across_nodes() {
        let c = load_cluster("a100-80g-x1024").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let s = 1e9;
        // 8 GPUs of one node: 2·7/8·1 GB at 300·0.77 = 231 GB/s, plus 14 hops of 3 µs.
        let (t, _) = m.collective_s(Coll::AllReduce, GroupShape { n: 8, per_node: 8 }, s);
        assert!((t - (1.75e9 / 231e9 + 14.0 * 3e-6)).abs() < 1e-9, "{t}");
        // 64 GPUs, 8 per node: busbw = min(231, 8 · 8·25·0.96/8 = 192) GB/s.
        let (t, _) = m.collective_s(Coll::AllReduce, GroupShape { n: 64, per_node: 8 }, s);
        let alpha = 2.0 * 3.0 * 5e-6 + 7.0 * 3e-6;
        assert!(
            (t - (alpha + 2.0 * 63.0 / 64.0 * s / 192e9)).abs() < 1e-9,
            "{t}"
        );
        // One GPU per node: a single NIC share, 24 GB/s.
        let (t, _) = m.collective_s(Coll::AllGather, GroupShape { n: 4, per_node: 1 }, s);
        assert!(
            (t - (2.0 * 2.0 * 5e-6 + 0.75 * s / 24e9)).abs() < 1e-9,
            "{t}"
        );
    }

    /// Head dimension 64 pays the softmax's exponentials over half the tensor work. A100
    /// (128 tensor FLOPs per exponential), FlashAttention-2 at 0.73 / 0.63 at head dim 128:
    /// forward 1/0.73 + 128/4 · (1/64 − 1/128) = 1.369863 + 0.25 → 0.617336; backward
    /// 1/0.63 + 128/10 · (1/64 − 1/128) = 1.587302 + 0.1 → 0.592662; head dim 128 unchanged.
    /// Against the FlashAttention-3 paper's H100 forward rates at 16k (Fig. 5, no mask): from
    /// 648 TFLOP/s at head dim 128 FA3 is predicted at 488 for head dim 64 (measured 497), and
    /// FA2 from 370 at 312 (measured 324) — within 2% and 4%.
    #[test]
    fn small_heads_pay_more_for_the_softmax() {
        let close = |a: f64, b: f64, tol: f64| assert!((a - b).abs() <= tol * b, "{a} vs {b}");
        close(attention_efficiency(0.73, 64, false, 128.0), 0.617336, 1e-6);
        close(attention_efficiency(0.63, 64, true, 128.0), 0.592662, 1e-6);
        assert_eq!(attention_efficiency(0.73, 128, false, 128.0), 0.73);
        assert_eq!(attention_efficiency(0.73, 64, false, 0.0), 0.73);
        let h100_hd64 =
            |tflops_128: f64| 989.0 * attention_efficiency(tflops_128 / 989.0, 64, false, 256.0);
        close(h100_hd64(648.0), 497.0, 0.02);
        close(h100_hd64(370.0), 324.0, 0.04);
        // Large heads approach the tensor-core bound, never past the peak.
        assert!(attention_efficiency(0.99, 100_000, false, 256.0) <= 1.0);
    }

    /// FlashAttention in Triton is priced from the device's FlashAttention-2 efficiency: on
    /// H100 that is 0.32 forward / 0.30 backward (the FA2 bars of the FlashAttention-3 paper at
    /// the sustained clock), not the 0.51 / 0.47 of the cuDNN kernel Transformer Engine runs.
    /// 132 · 16 query blocks of 128 (batch·heads 132, s = 2048) fill 16 whole waves; causal,
    /// n = 16 blocks visit n²/2 + n/2 = 136 and pay 16 fixed: overhead 152/128.
    #[test]
    fn triton_attention_is_priced_from_the_fa2_efficiency() {
        let c = load_cluster("h100x8").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let kernel = |backward, kernel| Kernel::Attention {
            batch_heads: 132,
            s_q: 2048,
            s_kv: 2048,
            head_dim: 128,
            v_dim: 128,
            causal: true,
            backward,
            kernel,
            window: None,
        };
        // Forward FLOPs 4·132·2048²·128 / 2; the backward 2.5 times that.
        let fwd = 4.0 * 132.0 * 2048.0 * 2048.0 * 128.0 / 2.0;
        let overhead = 152.0 / 128.0;
        let launch = 4e-6;
        let cases = [
            (false, AttentionImpl::FlashTriton, fwd * 1.4 / 0.32),
            (true, AttentionImpl::FlashTriton, 2.5 * fwd * 2.0 / 0.30),
            (false, AttentionImpl::Flash, fwd / 0.51),
            (true, AttentionImpl::Flash, 2.5 * fwd / 0.47),
        ];
        for (backward, imp, work) in cases {
            let (t, _) = m.attention_s(Dtype::Bf16, &kernel(backward, imp));
            let want = work * overhead / 989e12 + launch;
            assert!(
                (t / want - 1.0).abs() < 1e-12,
                "{imp:?} {backward}: {t} vs {want}"
            );
        }
    }

    /// Values narrower than the keys (MLA: 192 and 128): forward 2·s²·(192 + 128) a head,
    /// backward 2·s²·(3·192 + 2·128), each at the efficiency of its mean head size (160 and
    /// 166); equal sizes give the 2.5 ratio.
    #[test]
    fn unequal_value_heads_count_each_gemm_at_its_size() {
        let c = load_cluster("h100x8").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let kernel = |backward, v_dim| Kernel::Attention {
            batch_heads: 132,
            s_q: 4096,
            s_kv: 4096,
            head_dim: 192,
            v_dim,
            causal: false,
            backward,
            kernel: AttentionImpl::Flash,
            window: None,
        };
        let pairs = 132.0 * 4096.0 * 4096.0;
        assert_eq!(kernel(false, 128).flops(), 2.0 * pairs * 320.0);
        assert_eq!(kernel(true, 128).flops(), 2.0 * pairs * (576.0 + 256.0));
        assert_eq!(kernel(true, 192).flops(), 2.5 * kernel(false, 192).flops());
        let dev = &c.gpu;
        let r = dev.tensor_flops_per_exp;
        for (backward, mean, eff) in [
            (false, 160, dev.efficiency.attention_fwd),
            (true, 166, dev.efficiency.attention_bwd),
        ] {
            let k = kernel(backward, 128);
            let want = k.flops() * (1024.0 + 32.0)
                / 1024.0
                / (989e12 * attention_efficiency(eff, mean, backward, r))
                + 4e-6;
            let t = m.attention_s(Dtype::Bf16, &k).0;
            assert!((t / want - 1.0).abs() < 1e-12, "{backward}: {t} vs {want}");
        }
    }

    /// A 1024-key window over s = 4096 (32 × 32 blocks of 128, 132 heads: 32 whole waves):
    /// useful blocks 1024 · 0.21875 = 224 (`causal_share`), visited 224 + 32/2 · (1 + 0.75)
    /// = 252 (half a block on the diagonal per query block, and half at the window's edge for
    /// the 3/4 of them whose window starts past the first key) and 32 fixed: overhead
    /// 284/224; full causal attention visits 512 + 16 and pays 32 over 512. A window one key
    /// short of the sequence is priced as full attention, never above it.
    #[test]
    fn a_window_prices_its_band_and_both_edges() {
        let c = load_cluster("h100x8").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let kernel = |window| Kernel::Attention {
            batch_heads: 132,
            s_q: 4096,
            s_kv: 4096,
            head_dim: 128,
            v_dim: 128,
            causal: true,
            backward: false,
            kernel: AttentionImpl::Flash,
            window,
        };
        let scores = 4.0 * 132.0 * 4096.0 * 4096.0 * 128.0;
        let launch = 4e-6;
        for (window, useful, overhead) in [
            (None, 0.5, 560.0 / 512.0),
            (Some(1024), 0.21875, 284.0 / 224.0),
        ] {
            let (t, _) = m.attention_s(Dtype::Bf16, &kernel(window));
            let want = scores * useful * overhead / (989e12 * 0.51) + launch;
            assert!((t / want - 1.0).abs() < 1e-12, "{window:?}: {t} vs {want}");
        }
        let full = m.attention_s(Dtype::Bf16, &kernel(None)).0;
        assert!(m.attention_s(Dtype::Bf16, &kernel(Some(4095))).0 <= full * (1.0 + 1e-12));
        // One token past the last block costs a block more (33 query blocks), not less: the
        // useful work is the exact score count, the blocks are whole.
        let longer = Kernel::Attention {
            batch_heads: 132,
            s_q: 4097,
            s_kv: 4097,
            head_dim: 128,
            v_dim: 128,
            causal: true,
            backward: false,
            kernel: AttentionImpl::Flash,
            window: None,
        };
        assert!(m.attention_s(Dtype::Bf16, &longer).0 > full);
    }

    #[test]
    fn wave_quantisation_penalises_partial_waves() {
        assert_eq!(wave_efficiency(108, 108), 1.0);
        assert_eq!(wave_efficiency(109, 108), 109.0 / 216.0);
    }

    /// Tile quantisation: one row more than 1024 (n = k = 8192, bf16 on an H100's 132 SMs)
    /// adds a row of 64 tiles of 128×128: 576 tiles in 5 waves where 512 took 4 (the 256-row
    /// and 256-column tiles need 3 double-size waves, 6), so the GEMM takes 5/4 the time for
    /// 0.1% more useful work; within a wave, padding to the tile costs nothing more.
    #[test]
    fn a_partial_tile_costs_a_whole_one() {
        let c = load_cluster("h100x8").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let t = |rows| m.gemm_preset_s(Dtype::Bf16, 1, rows, 8192, 8192);
        assert!(
            (t(1025) / t(1024) - 1.25).abs() < 1e-12,
            "{}",
            t(1025) / t(1024)
        );
        assert_eq!(t(1025), t(1152));
    }

    /// The transposed FP8 copy costs its bytes at the HBM rate without a launch inside a
    /// cast on the H100 (2 GB / (3350 GB/s · hbm efficiency)), a launch more as a kernel of
    /// its own, and nothing on the B200, whose FP8 GEMMs take every layout.
    #[test]
    fn fp8_transposes_cost_nothing_where_gemms_take_every_layout() {
        let time = |cluster: &str, class| {
            let c = load_cluster(cluster).unwrap();
            let m = Machine {
                cluster: &c,
                profile: None,
            };
            (m.memory_s(2e9, class).0, m.hbm_bytes_s().0, m.launch_s())
        };
        let (t, bw, launch) = time("h100x8", MemClass::Fp8Transpose);
        assert_eq!(t, 2e9 / bw);
        let (t, _, _) = time("h100x8", MemClass::Fp8TransposeKernel);
        assert_eq!(t, 2e9 / bw + launch);
        for class in [MemClass::Fp8Transpose, MemClass::Fp8TransposeKernel] {
            assert_eq!(time("b200x8", class).0, 0.0);
        }
    }

    #[test]
    fn gemm_roofline_limits_thin_gemms() {
        let c = load_cluster("a100x8").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        // A big square GEMM runs at the preset peak fraction: 2·8192³ / (312e12 · 0.76)
        // (64·32 = 2048 tiles of 128×256 fill 108 SMs at 2048/(19·108) = 0.998).
        let (t, _) = m.gemm_s(Dtype::Bf16, 1, 8192, 8192, 8192);
        let ideal = 2.0 * 8192f64.powi(3) / (312e12 * 0.76);
        assert!(t > ideal && t < ideal * 1.01, "{t} vs {ideal}");
        // Attention scores with head size 64 are bandwidth bound: bytes / (2039 GB/s · 0.88).
        let (t, _) = m.gemm_s(Dtype::Bf16, 1, 2048, 2048, 64);
        let bytes = (2048.0 * 64.0 * 2.0 + 2048.0 * 2048.0) * 2.0;
        assert!((t - (bytes / (2039e9 * 0.88) + 4e-6)).abs() < 1e-12, "{t}");
    }
}
