//! What a profile may hold: the physical bounds of its rates (links, GEMMs, the device's
//! peak and HBM) and the checks a profile passes before it prices anything.

use super::{CalibError, Profile};

/// The fastest any collective can move bytes, per rank: 10 TB/s, over five times NVLink 5's
/// 1.8 TB/s per GPU (NVIDIA GB200 NVL72 datasheet). A measurement or fitted line beyond it
/// is a cut or mis-scaled row, not a link.
pub const MAX_LINK_BYTES_S: f64 = 1e13;

/// The slowest a collective of at least [`MIN_LINK_CHECK_BYTES`] may move them: 1 MB/s, under
/// 10 Mb/s Ethernet's 1.25 MB/s. Slower is a row timed in another unit or a hung run (a time
/// of 1e15 ns had priced a step at 6.3e9 s).
pub const MIN_LINK_BYTES_S: f64 = 1e6;

/// Messages from which [`MIN_LINK_BYTES_S`] applies: 1 MiB (below it a latency of up to the
/// allowed second may dominate).
pub const MIN_LINK_CHECK_BYTES: f64 = 1_048_576.0;

/// The fastest any GEMM can run: 20 PFLOP/s, twice the dense FP4 peak of a Blackwell GPU
/// (NVIDIA B200 datasheet: 9 PFLOP/s dense FP4). A measured point beyond it is a mis-timed
/// or mis-sized row (a time of 1e-300 s had priced a step at 252% MFU).
pub const MAX_GEMM_FLOPS_S: f64 = 2e16;

/// The slowest a GEMM of at least [`MIN_GEMM_CHECK_FLOPS`] may run: 1 GFLOP/s, what one CPU
/// core does without vector units (two scalar FMA pipes at 2–4 GHz give 4–16 GFLOP/s). Slower
/// is a row timed in another unit or a stalled run.
pub const MIN_GEMM_FLOPS_S: f64 = 1e9;

/// GEMMs from which [`MIN_GEMM_FLOPS_S`] applies: 1 GFLOP (below it a launch of up to a
/// millisecond may dominate).
pub const MIN_GEMM_CHECK_FLOPS: f64 = 1e9;

/// The slowest memory a profile may report: 1 GB/s, below any DRAM channel since DDR (a
/// 0.001 GB/s figure had priced a step at 59 days).
pub const MIN_HBM_GBYTES_S: f64 = 1.0;

/// How far a measurement may pass the datasheet: 5%, for clocks above the datasheet's.
pub const PEAK_ALLOWANCE: f64 = 1.05;

/// A measurement in `profile` no such `device` can make, which would price steps above 100%
/// MFU: a copy bandwidth above the device's HBM bandwidth (a copy at 44× an A100's 2,039 GB/s
/// had been priced), or the first GEMM faster than the device's dense peak for its type
/// ([`PEAK_ALLOWANCE`] allowed on both).
pub fn beyond_device(profile: &Profile, device: &crate::spec::DeviceSpec) -> Option<String> {
    if let Some(hbm) = profile.hbm_gbytes_s
        && hbm > PEAK_ALLOWANCE * device.hbm_gbytes_s
    {
        return Some(format!(
            "hbm_gbytes_s {hbm} is above {}'s {} GB/s of HBM bandwidth",
            device.name, device.hbm_gbytes_s
        ));
    }
    profile.gemm.iter().enumerate().find_map(|(i, g)| {
        // A type the device file gives no peak for (fp8 without `fp8:`) cannot be judged:
        // `peak_flops` would answer the bf16 peak.
        if g.dtype == crate::units::Dtype::Fp8 && device.peak_tflops.fp8.is_none() {
            return None;
        }
        let peak = device.peak_flops(g.dtype);
        (g.flops_s() > PEAK_ALLOWANCE * peak).then(|| {
            format!(
                "gemm[{i}] ({} {}×{}×{}) ran at {:.0} TFLOP/s, above {}'s {:.0} TFLOP/s peak",
                g.dtype.name(),
                g.m,
                g.n,
                g.k,
                g.flops_s() / 1e12,
                device.name,
                peak / 1e12
            )
        })
    })
}

/// Why `profile` may price another device than `device`, when it can tell: the device's GPU
/// family (a100, h100, …, read from its name) absent from the profile's device, or a cpu
/// profile (a stand-in that prices threads). Nothing when the family is unknown.
pub fn device_mismatch(profile: &Profile, device: &str) -> Option<String> {
    const FAMILIES: [&str; 8] = [
        "gh200", "gb200", "a100", "h100", "h200", "b200", "l40", "mi300",
    ];
    // Whether `name` names `family`: a superchip's name holds its GPU's ("NVIDIA GB200"
    // contains "b200"; a GB200 profile had priced a B200 cluster), so a GPU family is looked
    // for with the superchips' names taken out. A profile may name several devices (GEMMs on
    // one, collectives on another).
    let names = |name: &str, family: &str| {
        let name = name.to_ascii_lowercase();
        if family.starts_with('g') {
            name.contains(family)
        } else {
            name.replace("gh200", "")
                .replace("gb200", "")
                .contains(family)
        }
    };
    let family = FAMILIES.into_iter().find(|f| names(device, f))?;
    let measured = &profile.meta.device;
    if names(measured, family) {
        return None;
    }
    if measured == crate::calib::nccl_tests::UNKNOWN_DEVICE {
        return Some(format!(
            "the profile does not say which GPU measured it (its nccl-tests output had no `# Rank` lines): re-import it with `planner calibrate import-nccl-tests --device \"<GPU name>\" …` naming the {device}s it ran on"
        ));
    }
    Some(if profile.meta.backend == "cpu" {
        format!(
            "measured by the cpu backend ({measured}), a stand-in that prices threads, not {device} GPUs"
        )
    } else {
        format!(
            "measured on {measured}, but the cluster's GPUs are {device}: its measured GEMMs and collectives price another device; calibrate on the cluster's GPUs, or drop the profile"
        )
    })
}

impl Profile {
    /// The first value that cannot price anything, named by its place in the file: a GEMM or
    /// copy time that is not a positive number, a bandwidth that is not positive, a collective
    /// line that predicts no positive time over its own sizes (fitted lines may have a
    /// negative α or β; they must still predict positive times where they apply).
    pub fn check(&self, path: &str) -> Result<(), CalibError> {
        let bad = |field: String, value: f64, what: &str| CalibError::Input {
            path: path.to_string(),
            message: format!("`{field}` = {value}: {what}"),
            fix: "calibrate again, or correct the file".to_string(),
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        for (i, g) in self.gemm.iter().enumerate() {
            for (name, d) in [("m", g.m), ("n", g.n), ("k", g.k)] {
                if d == 0 {
                    return Err(bad(
                        format!("gemm[{i}].{name}"),
                        0.0,
                        "a GEMM's dimensions are at least 1",
                    ));
                }
            }
            if !positive(g.seconds) {
                return Err(bad(
                    format!("gemm[{i}].seconds"),
                    g.seconds,
                    "a GEMM's time must be positive",
                ));
            }
            if g.flops_s() * g.seconds >= MIN_GEMM_CHECK_FLOPS && g.flops_s() < MIN_GEMM_FLOPS_S {
                return Err(bad(
                    format!("gemm[{i}].seconds"),
                    g.seconds,
                    &format!(
                        "{:.3} GFLOP/s, slower than one scalar CPU core",
                        g.flops_s() / 1e9
                    ),
                ));
            }
            if g.flops_s() > MAX_GEMM_FLOPS_S {
                return Err(bad(
                    format!("gemm[{i}].seconds"),
                    g.seconds,
                    &format!(
                        "{:.0} TFLOP/s, beyond any accelerator's dense peak",
                        g.flops_s() / 1e12
                    ),
                ));
            }
        }
        for (i, c) in self.copies.iter().enumerate() {
            for (name, v) in [("bytes", c.bytes), ("seconds", c.seconds)] {
                if !positive(v) {
                    return Err(bad(
                        format!("copies[{i}].{name}"),
                        v,
                        "a copy probe's size and time must be positive",
                    ));
                }
            }
        }
        if let Some(h) = self
            .hbm_gbytes_s
            .filter(|&h| !positive(h) || !(MIN_HBM_GBYTES_S..=1e5).contains(&h))
        {
            return Err(bad(
                "hbm_gbytes_s".into(),
                h,
                "a memory bandwidth must be from 1 GB/s to 100 TB/s",
            ));
        }
        for (i, f) in self.collectives.iter().enumerate() {
            if f.ranks < 2 {
                return Err(bad(
                    format!("collectives[{i}].ranks"),
                    f.ranks as f64,
                    "a collective has at least 2 ranks",
                ));
            }
            if f.segments.is_empty() {
                return Err(bad(
                    format!("collectives[{i}].segments"),
                    0.0,
                    "a fit needs at least one α-β segment over its sizes; re-import the measurements (`planner calibrate import-nccl-tests`) or drop the fit",
                ));
            }
            for (j, s) in f.segments.iter().enumerate() {
                // Ascending: the lookup walks the segments in order.
                if j > 0 && s.lo_bytes < f.segments[j - 1].hi_bytes {
                    return Err(bad(
                        format!("collectives[{i}].segments[{j}].lo_bytes"),
                        s.lo_bytes,
                        &format!(
                            "below the previous segment's hi_bytes {}: segments ascend",
                            f.segments[j - 1].hi_bytes
                        ),
                    ));
                }
                if s.lo_bytes > s.hi_bytes {
                    return Err(bad(
                        format!("collectives[{i}].segments[{j}].lo_bytes"),
                        s.lo_bytes,
                        &format!("above the segment's hi_bytes {}", s.hi_bytes),
                    ));
                }
                let field = |k: &str| format!("collectives[{i}].segments[{j}].{k}");
                for (k, v) in [
                    ("alpha_s", s.alpha_s),
                    ("beta_s_per_byte", s.beta_s_per_byte),
                ] {
                    if !v.is_finite() {
                        return Err(bad(field(k), v, "not a number"));
                    }
                }
                // Plausible, too: no interconnect moves 10 TB/s, and no collective waits a
                // second before moving a byte (latencies are micro- to milliseconds).
                if s.alpha_s > 1.0 {
                    return Err(bad(
                        field("alpha_s"),
                        s.alpha_s,
                        "a collective's fixed cost of over a second is no measurement",
                    ));
                }
                for (k, bytes) in [("lo_bytes", s.lo_bytes), ("hi_bytes", s.hi_bytes)] {
                    let t = s.alpha_s + s.beta_s_per_byte * bytes;
                    if !positive(bytes) || !positive(t) {
                        return Err(bad(
                            field(k),
                            bytes,
                            &format!(
                                "the line α + β·bytes gives {t:e} s there; a collective's time must be positive over its sizes"
                            ),
                        ));
                    }
                    if bytes >= MIN_LINK_CHECK_BYTES && bytes / t < MIN_LINK_BYTES_S {
                        return Err(bad(
                            field(k),
                            bytes,
                            &format!(
                                "the line gives {t:e} s there, {:.3e} B/s, slower than any link",
                                bytes / t
                            ),
                        ));
                    }
                    if bytes / t > MAX_LINK_BYTES_S {
                        return Err(bad(
                            field(k),
                            bytes,
                            &format!(
                                "the line gives {t:e} s there, {:.0} GB/s, beyond any interconnect",
                                bytes / t / 1e9
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
