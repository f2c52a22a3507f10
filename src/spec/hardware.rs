//! Devices (one GPU type) and clusters (nodes of GPUs joined by NVLink and NICs), DESIGN.md §2.

use super::error::{Problem, SpecError};
use super::yaml::{Reader, parse};
use crate::units::{Dtype, GB};
use serde::Serialize;

/// Peak dense tensor-core throughput per data type, in TFLOP/s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeakTflops {
    /// bfloat16.
    pub bf16: f64,
    /// fp16.
    pub fp16: f64,
    /// fp8, where the GPU has it.
    pub fp8: Option<f64>,
    /// tf32.
    pub tf32: f64,
    /// fp32 (non tensor core).
    pub fp32: f64,
}

/// Achieved fractions of the peaks, per device (not per run). Presets cite their source;
/// a calibration profile replaces them with measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceEfficiency {
    /// Achieved fraction of the dense 16-bit peak by training-shaped GEMMs.
    pub gemm: f64,
    /// Achieved fraction of the fp8 peak by fp8 GEMMs (default: `gemm`).
    pub gemm_fp8: f64,
    /// Achieved fraction of HBM bandwidth by streaming elementwise kernels.
    pub hbm: f64,
    /// Achieved fraction of HBM bandwidth by row reductions (norms, softmax), forward.
    pub reduction: f64,
    /// Same for their backward kernels.
    pub reduction_bwd: f64,
    /// Achieved fraction of the 16-bit peak by fused (flash) attention, forward pass.
    pub attention_fwd: f64,
    /// Same for the backward pass.
    pub attention_bwd: f64,
    /// Achieved fraction of the 16-bit peak by FlashAttention-2's kernels (and kernels written
    /// like them, such as FlashAttention in Triton), forward pass: architecture-generic code
    /// that on Hopper uses none of its warpgroup MMA or TMA, so it stays well below the vendor
    /// kernel that `attention_fwd` describes (default: `attention_fwd`, where FA2 is the best
    /// kernel, as on Ampere).
    pub attention_fa2_fwd: f64,
    /// Same for the backward pass (default: `attention_bwd`).
    pub attention_fa2_bwd: f64,
    /// Fraction of its throughput the compute stream loses while a collective runs beside it
    /// (NCCL's kernels occupy SMs and share HBM bandwidth with the GEMMs they overlap): an
    /// overlapped collective of `c` seconds costs at least `overlap_interference · c` of compute
    /// time (`cost::step::overlap_exposed_s`).
    pub overlap_interference: f64,
    /// Fixed cost of launching one kernel, in microseconds.
    pub kernel_launch_us: f64,
}

/// One GPU type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceSpec {
    /// Preset name.
    pub name: String,
    /// Usable device memory in GiB (as `nvidia-smi` reports the total).
    pub memory_gib: f64,
    /// HBM bandwidth in GB/s.
    pub hbm_gbytes_s: f64,
    /// Streaming multiprocessors (for wave quantisation of GEMM tiles).
    pub sms: u64,
    /// Dense 16-bit tensor-core FLOPs per exponential the special-function units return in
    /// the same time (tensor FLOPs per clock per SM over 16 `exp2` per clock per SM, CUDA C++
    /// Programming Guide, "Arithmetic Instructions" throughput table, compute capability 8.0
    /// and 9.0): the softmax's cost inside fused attention (`cost::price::attention_s`).
    pub tensor_flops_per_exp: f64,
    /// Dense peaks.
    pub peak_tflops: PeakTflops,
    /// Achieved fractions.
    pub efficiency: DeviceEfficiency,
    /// FP8 GEMMs take operands in every layout (Blackwell; Transformer Engine's
    /// `is_non_tn_fp8_gemm_supported`, compute capability 10.x and 13+), so FP8 weights need no
    /// transposed copy (`cost::memory::fp8_weight_cache_bytes`); Hopper's take only TN.
    #[serde(
        rename = "fp8_gemm_any_layout",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub fp8_any_layout: bool,
    /// GEMMs run in cuBLAS/CUTLASS output tiles of 128 and 256 rows and columns, a partial
    /// tile costing a whole one (`cost::price::gemm_preset_s`); false for a device without
    /// such tiles (exec's cpu backend, whose threads stand for GPUs). YAML `gemm_tiles`.
    #[serde(skip_serializing_if = "is_true")]
    pub gemm_tiles: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl DeviceSpec {
    /// Achieved fraction of `dtype`'s peak by training-shaped GEMMs.
    pub fn gemm_efficiency(&self, dtype: Dtype) -> f64 {
        match dtype {
            Dtype::Fp8 if self.peak_tflops.fp8.is_some() => self.efficiency.gemm_fp8,
            _ => self.efficiency.gemm,
        }
    }

    /// Peak dense FLOP/s for GEMMs in `dtype`; fp8 falls back to the 16-bit peak on GPUs without it.
    pub fn peak_flops(&self, dtype: Dtype) -> f64 {
        let t = &self.peak_tflops;
        1e12 * match dtype {
            Dtype::Bf16 => t.bf16,
            Dtype::Fp16 => t.fp16,
            Dtype::Fp8 => t.fp8.unwrap_or(t.bf16),
            Dtype::Tf32 => t.tf32,
            Dtype::Fp32 => t.fp32,
        }
    }

    /// HBM bandwidth in bytes/s.
    pub fn hbm_bytes_s(&self) -> f64 {
        self.hbm_gbytes_s * GB
    }

    /// Parses a device YAML document.
    pub fn from_yaml(file: &str, text: &str) -> Result<DeviceSpec, SpecError> {
        let doc = parse(file, text)?;
        let mut problems = Vec::new();
        let d = {
            let mut r = Reader::new(file, "", &doc, &mut problems);
            let d = read_device(&mut r);
            r.finish();
            d
        };
        match d {
            Some(d) if problems.is_empty() => Ok(d),
            _ => Err(SpecError::Invalid(problems)),
        }
    }
}

/// Default achieved fraction of a link's line rate by NCCL ring collectives, used when a
/// cluster file gives none. Measured: A100 NVLink3 230/300 = 0.77, H100 NVLink4 370/450 =
/// 0.82, HDR 24/25 = 0.96, NDR 48/50 = 0.96 (../shared/validation/microbench.yaml,
/// nccl-tests issues #149, #212, #290); 0.8 is the NVLink figure, the conservative side.
pub const DEFAULT_LINK_EFFICIENCY: f64 = 0.8;

/// The NVLink/NVSwitch (or PCIe) fabric inside a node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntraNode {
    /// Fabric name, e.g. `nvswitch`: a label that reports print. Prices come from the
    /// bandwidth, latency and efficiency alone (a PCIe node is described by its numbers).
    pub fabric: String,
    /// Per-GPU one-direction bandwidth in GB/s.
    pub bw_gbytes_s: f64,
    /// One hop's latency in microseconds.
    pub latency_us: f64,
    /// Achieved fraction of `bw_gbytes_s` by NCCL ring collectives (bus bandwidth / line rate).
    pub efficiency: f64,
}

/// The network between nodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InterNode {
    /// Fabric name, e.g. `infiniband`: a label that reports print, as `IntraNode::fabric`.
    pub fabric: String,
    /// Compute NICs per node.
    pub nics_per_node: u64,
    /// Line rate of one NIC in Gb/s.
    pub nic_gbits_s: f64,
    /// One hop's latency in microseconds.
    pub latency_us: f64,
    /// Achieved fraction of the NIC line rate by NCCL.
    pub efficiency: f64,
}

impl InterNode {
    /// Bytes/s of NIC bandwidth available to one GPU when every GPU of the node communicates
    /// at once (NICs shared evenly), at the achieved efficiency.
    pub fn per_gpu_bytes_s(&self, gpus_per_node: u64) -> f64 {
        self.nics_per_node as f64 * self.nic_gbits_s / 8.0 * GB * self.efficiency
            / gpus_per_node as f64
    }
}

/// A cluster: identical nodes of identical GPUs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterSpec {
    /// Preset name.
    pub name: String,
    /// The GPU type.
    pub gpu: DeviceSpec,
    /// Number of nodes.
    pub nodes: u64,
    /// GPUs per node.
    pub gpus_per_node: u64,
    /// Fabric inside a node.
    pub intra_node: IntraNode,
    /// Network between nodes (required when `nodes > 1`).
    pub inter_node: Option<InterNode>,
    /// Name or path of a calibration profile under calibrate/.
    pub calibration: Option<String>,
    /// Memory the CUDA context, kernels' code and library handles take per GPU, GiB.
    pub cuda_context_gib: f64,
}

/// CUDA context per GPU with lazy module loading (CUDA ≥ 11.7, PyTorch's default): "around
/// 400MB" (PyTorch maintainers, pytorch/pytorch #109888), plus cuBLAS/cuDNN workspaces. Older
/// stacks load every kernel eagerly: 1573 MiB measured on A100 with CUDA 11.x
/// (bigscience-workshop/bigscience train/tr11-176B-ml/chronicles-prequel.md).
pub const DEFAULT_CUDA_CONTEXT_GIB: f64 = 0.5;

impl ClusterSpec {
    /// Total GPUs.
    pub fn n_gpus(&self) -> u64 {
        self.nodes * self.gpus_per_node
    }

    /// The first `n` GPUs of this cluster: part of one node, or whole nodes. `None` when `n` is
    /// larger than the cluster or spans a partial node.
    pub fn with_gpus(&self, n: u64) -> Option<ClusterSpec> {
        let mut c = self.clone();
        if n == 0 || n > self.n_gpus() {
            return None;
        }
        if n <= self.gpus_per_node {
            c.nodes = 1;
            c.gpus_per_node = n;
        } else if n % self.gpus_per_node == 0 {
            c.nodes = n / self.gpus_per_node;
        } else {
            return None;
        }
        Some(c)
    }

    /// The cluster as a document that [`ClusterSpec::from_yaml`] reads back to an equal
    /// cluster, its device written inline, each `comments` line a `#` comment on top. The body
    /// is JSON, which is YAML; absent optional keys are left out.
    pub fn to_yaml(&self, comments: &[String]) -> String {
        fn drop_nulls(v: &mut serde_json::Value) {
            if let serde_json::Value::Object(m) = v {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(drop_nulls);
            }
        }
        let mut v = serde_json::to_value(self).expect("a cluster serialises");
        drop_nulls(&mut v);
        let body = serde_json::to_string_pretty(&v).expect("a value serialises");
        let mut out: String = comments.iter().map(|c| format!("# {c}\n")).collect();
        out += &body;
        out.push('\n');
        out
    }

    /// Parses a cluster YAML document; `resolve_gpu` turns a device name into a device.
    pub fn from_yaml(
        file: &str,
        text: &str,
        resolve_gpu: &dyn Fn(&str) -> Result<DeviceSpec, SpecError>,
    ) -> Result<ClusterSpec, SpecError> {
        let doc = parse(file, text)?;
        if let Some(p) = device_given_as_cluster(file, &doc) {
            return Err(SpecError::Invalid(vec![p]));
        }
        let mut problems = Vec::new();
        let c = {
            let mut r = Reader::new(file, "", &doc, &mut problems);
            let c = read_cluster(&mut r, resolve_gpu);
            r.finish();
            c
        };
        match c {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(SpecError::Invalid(problems)),
        }
    }
}

/// The one problem of a device (GPU) file given where a cluster is read: a document with a
/// device's keys and none of a cluster's, which would otherwise list every cluster field as
/// missing and every device field as unknown. It says how a cluster names the device: by
/// preset name where the file is that preset, else by the file's path.
fn device_given_as_cluster(file: &str, doc: &serde_json::Value) -> Option<Problem> {
    use super::presets::{CLUSTERS, DEVICES, find};
    const CLUSTER_KEYS: [&str; 5] = ["gpu", "nodes", "gpus_per_node", "intra_node", "inter_node"];
    const DEVICE_KEYS: [&str; 3] = ["memory_gib", "hbm_gbytes_s", "peak_tflops"];
    let map = doc.as_object()?;
    if CLUSTER_KEYS.iter().any(|k| map.contains_key(*k)) {
        return None;
    }
    let has: Vec<&str> = DEVICE_KEYS
        .into_iter()
        .filter(|k| map.contains_key(*k))
        .collect();
    if has.is_empty() {
        return None;
    }
    let name = map.get("name").and_then(|v| v.as_str());
    let preset = name
        .filter(|n| find(DEVICES, n).is_some_and(|t| parse(file, t).ok().as_ref() == Some(doc)));
    let gpu = preset.unwrap_or(file);
    let with_it: Vec<&str> = preset.map_or_else(Vec::new, |n| {
        CLUSTERS
            .iter()
            .filter(|(_, t)| t.contains(&format!("\ngpu: {n}\n")))
            .map(|(c, _)| *c)
            .collect()
    });
    Some(Problem {
        file: file.into(),
        field: "(document)".into(),
        message: format!(
            "this is a GPU device file ({}), not a cluster: a cluster file names it as \
             `gpu: {gpu}` beside `name`, `nodes`, `gpus_per_node` and `intra_node`",
            has.join(", ")
        ),
        fix: if with_it.is_empty() {
            "pass a cluster preset (`planner clusters` lists them), or a cluster file that \
             names this device"
                .into()
        } else {
            format!(
                "pass a cluster preset with this GPU ({}; `planner clusters` lists them all), \
                 or a cluster file that names it",
                with_it.join(", ")
            )
        },
    })
}

fn read_peaks(r: &mut Reader<'_>) -> Option<PeakTflops> {
    let bf16 = r.req_pos("bf16", 1e5, "add `bf16: <dense TFLOP/s>`");
    let fp16 = r.opt_pos("fp16", 1e5);
    let fp8 = r.opt_pos("fp8", 1e5);
    let tf32 = r.opt_pos("tf32", 1e5);
    let fp32 = r.opt_pos("fp32", 1e5);
    let bf16 = bf16?;
    Some(PeakTflops {
        bf16,
        fp16: fp16.unwrap_or(bf16),
        fp8,
        tf32: tf32.unwrap_or(bf16 / 2.0),
        fp32: fp32.unwrap_or(bf16 / 16.0),
    })
}

/// A100: 312 TFLOP/s over 108 SMs at 1.41 GHz is 2,048 dense 16-bit FLOPs per clock per SM,
/// against 16 exponentials: 128 (the default for a device file that gives none).
const A100_TENSOR_FLOPS_PER_EXP: f64 = 128.0;

/// Efficiency defaults for a device file that gives none: the A100 figures, each with its
/// source in hardware/gpus/a100-sxm4-80gb.yaml (a test holds them equal to that preset;
/// FlashAttention-2 forward 73%, backward 63% of peak, Dao 2023 §4.1).
fn default_efficiency() -> DeviceEfficiency {
    DeviceEfficiency {
        gemm: 0.76,
        gemm_fp8: 0.76,
        hbm: 0.88,
        reduction: 0.46,
        reduction_bwd: 0.24,
        attention_fwd: 0.73,
        attention_bwd: 0.63,
        attention_fa2_fwd: 0.73,
        attention_fa2_bwd: 0.63,
        overlap_interference: 0.16,
        kernel_launch_us: 4.0,
    }
}

fn read_device(r: &mut Reader<'_>) -> Option<DeviceSpec> {
    let name = r.req_str("name", "add `name: my-gpu`");
    let memory = r.req_pos("memory_gib", 4096.0, "add `memory_gib: 80`");
    let hbm = r.req_pos("hbm_gbytes_s", 1e5, "add `hbm_gbytes_s: 2039`");
    let sms = r.opt_count("sms", 10_000);
    let flops_per_exp = r.opt_pos("tensor_flops_per_exp", 1e5);
    let fp8_any_layout = r.opt_bool("fp8_gemm_any_layout").unwrap_or(false);
    let gemm_tiles = r.opt_bool("gemm_tiles").unwrap_or(true);
    let peaks = r.nested("peak_tflops", read_peaks);
    if peaks.is_none() {
        r.problem(
            "peak_tflops",
            "missing required field",
            "add `peak_tflops: {bf16: 312}`",
        );
    }
    let d = default_efficiency();
    let eff = r
        .nested("efficiency", |e| {
            let gemm = e.opt_efficiency("gemm").unwrap_or(d.gemm);
            let attention_fwd = e.opt_efficiency("attention_fwd").unwrap_or(d.attention_fwd);
            let attention_bwd = e.opt_efficiency("attention_bwd").unwrap_or(d.attention_bwd);
            DeviceEfficiency {
                gemm,
                gemm_fp8: e.opt_efficiency("gemm_fp8").unwrap_or(gemm),
                hbm: e.opt_efficiency("hbm").unwrap_or(d.hbm),
                reduction: e.opt_efficiency("reduction").unwrap_or(d.reduction),
                reduction_bwd: e.opt_efficiency("reduction_bwd").unwrap_or(d.reduction_bwd),
                attention_fwd,
                attention_bwd,
                attention_fa2_fwd: e
                    .opt_efficiency("attention_fa2_fwd")
                    .unwrap_or(attention_fwd),
                attention_fa2_bwd: e
                    .opt_efficiency("attention_fa2_bwd")
                    .unwrap_or(attention_bwd),
                overlap_interference: e
                    .opt_share("overlap_interference")
                    .unwrap_or(d.overlap_interference),
                kernel_launch_us: e
                    .opt_pos("kernel_launch_us", 1e4)
                    .unwrap_or(d.kernel_launch_us),
            }
        })
        .unwrap_or(d);
    Some(DeviceSpec {
        name: name?,
        memory_gib: memory?,
        hbm_gbytes_s: hbm?,
        sms: sms.unwrap_or(108),
        tensor_flops_per_exp: flops_per_exp.unwrap_or(A100_TENSOR_FLOPS_PER_EXP),
        peak_tflops: peaks??,
        efficiency: eff,
        fp8_any_layout,
        gemm_tiles,
    })
}

fn read_cluster(
    r: &mut Reader<'_>,
    resolve_gpu: &dyn Fn(&str) -> Result<DeviceSpec, SpecError>,
) -> Option<ClusterSpec> {
    let name = r.req_str("name", "add `name: my-cluster`");
    let gpu = match r.raw("gpu") {
        Some(serde_json::Value::String(s)) => match resolve_gpu(&s) {
            Ok(d) => Some(d),
            // The device file was found; its own fields are what to fix.
            Err(SpecError::Invalid(problems)) => {
                r.problems_of_named_file(problems);
                None
            }
            Err(e) => {
                r.problem(
                    "gpu",
                    e.to_string(),
                    "name a device preset (see `planner clusters`) or a device file",
                );
                None
            }
        },
        Some(v @ serde_json::Value::Object(_)) => {
            let file = r.file();
            let text = v.to_string();
            match DeviceSpec::from_yaml(&format!("{file} (gpu)"), &text) {
                Ok(d) => Some(d),
                Err(e) => {
                    r.problem("gpu", e.to_string(), "fix the inline device table");
                    None
                }
            }
        }
        Some(_) => {
            r.problem(
                "gpu",
                "expected a device name or table",
                "write `gpu: a100-sxm4-80gb`",
            );
            None
        }
        None => {
            r.problem("gpu", "missing required field", "add `gpu: a100-sxm4-80gb`");
            None
        }
    };
    let nodes = r.req_count("nodes", 1 << 20, "add `nodes: N`");
    let gpn = r.req_count("gpus_per_node", 1024, "add `gpus_per_node: 8`");
    let intra = r.nested("intra_node", |l| {
        let fabric = l.opt_str("fabric").unwrap_or_else(|| "nvswitch".into());
        let bw = l.req_pos(
            "bw_gbytes_s",
            1e5,
            "add `bw_gbytes_s: 300` (per GPU, one direction)",
        );
        let lat = l.opt_pos("latency_us", 1e6).unwrap_or(3.0);
        let eff = l
            .opt_efficiency("efficiency")
            .unwrap_or(DEFAULT_LINK_EFFICIENCY);
        bw.map(|bw| IntraNode {
            fabric,
            bw_gbytes_s: bw,
            latency_us: lat,
            efficiency: eff,
        })
    });
    if intra.is_none() {
        r.problem(
            "intra_node",
            "missing required field",
            "add `intra_node: {bw_gbytes_s: 300}`",
        );
    }
    let inter = r.nested("inter_node", |l| {
        let fabric = l.opt_str("fabric").unwrap_or_else(|| "infiniband".into());
        let nics = l.req_count("nics_per_node", 1024, "add `nics_per_node: 8`");
        let rate = l.req_pos("nic_gbits_s", 1e5, "add `nic_gbits_s: 200`");
        let lat = l.opt_pos("latency_us", 1e6).unwrap_or(5.0);
        let eff = l
            .opt_efficiency("efficiency")
            .unwrap_or(DEFAULT_LINK_EFFICIENCY);
        Some(InterNode {
            fabric,
            nics_per_node: nics?,
            nic_gbits_s: rate?,
            latency_us: lat,
            efficiency: eff,
        })
    });
    let calibration = r.opt_str("calibration");
    let context = r
        .opt_pos("cuda_context_gib", 64.0)
        .unwrap_or(DEFAULT_CUDA_CONTEXT_GIB);
    if nodes.is_some_and(|n| n > 1) && inter.as_ref().is_none_or(|i| i.is_none()) {
        r.problem(
            "inter_node",
            "a cluster of several nodes needs its network",
            "add `inter_node: {nics_per_node: 8, nic_gbits_s: 200}`",
        );
    }
    Some(ClusterSpec {
        name: name?,
        gpu: gpu?,
        nodes: nodes?,
        gpus_per_node: gpn?,
        intra_node: intra??,
        inter_node: inter.flatten(),
        calibration,
        cuda_context_gib: context,
    })
}

/// Problems of a cluster that parsed but is unusable; empty when sound.
pub fn check_cluster(c: &ClusterSpec, file: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    if c.n_gpus() > 1 << 22 {
        out.push(Problem {
            file: file.into(),
            field: "nodes".into(),
            message: format!("{} GPUs is beyond any cluster", c.n_gpus()),
            fix: "check nodes and gpus_per_node".into(),
        });
    }
    // Every plan would be out of memory before its first byte of model state, which `suggest`
    // had reported as "no plan fits" among thousands of rejections.
    if c.gpu.memory_gib <= c.cuda_context_gib {
        out.push(Problem {
            file: file.into(),
            field: "cuda_context_gib".into(),
            message: format!(
                "the CUDA context ({} GiB per GPU) takes all of the device's {} GiB ({}): \
                 nothing is left for a model",
                c.cuda_context_gib, c.gpu.memory_gib, c.gpu.name
            ),
            fix: "check the device's memory_gib, or lower cuda_context_gib (0.5 with lazy \
                  loading)"
                .into(),
        });
    }
    out
}

#[cfg(test)]
mod tests;
