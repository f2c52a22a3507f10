//! The profile format: device matching, checks and saving.

use super::*;

/// A profile names its device; a cluster of another GPU family is told, a cpu stand-in
/// too, the same family is not, and an unknown family says nothing.
#[test]
fn profiles_of_another_device_are_named() {
    let h100 = load_profile("h100-published").unwrap();
    assert_eq!(device_mismatch(&h100, "h100-sxm5-80gb"), None);
    let w = device_mismatch(&h100, "a100-sxm4-80gb").unwrap();
    assert!(w.contains("H100") && w.contains("a100-sxm4-80gb"), "{w}");
    let mut cpu = h100.clone();
    cpu.meta.backend = "cpu".into();
    cpu.meta.device = "cpu: AMD EPYC".into();
    assert!(
        device_mismatch(&cpu, "a100-sxm4-80gb")
            .unwrap()
            .contains("cpu backend")
    );
    assert_eq!(device_mismatch(&cpu, "cpu-thread"), None);
    // A superchip's name contains its GPU's: a GB200 profile is not a B200's, nor a GH200's
    // an H200's (QA), while the GPU's own name in another spelling is.
    let mut other = h100.clone();
    for (measured, device, same) in [
        ("NVIDIA GB200", "b200-sxm-180gb", false),
        ("NVIDIA GH200 480GB", "h200-sxm-141gb", false),
        ("NVIDIA B200", "b200-sxm-180gb", true),
        ("NVIDIA H200", "h200-sxm-141gb", true),
    ] {
        other.meta.device = measured.into();
        assert_eq!(
            device_mismatch(&other, device).is_none(),
            same,
            "{measured}"
        );
    }
}

/// The committed A100 profile (whose fitted lines include a negative α and β) passes;
/// each corruption is refused naming its place: a negative GEMM time, a zero bandwidth, a
/// line that predicts a negative time at its smallest size.
#[test]
fn loading_refuses_values_that_price_nothing() {
    let p = load_profile("a100-published").unwrap();
    assert!(p.check("p.json").is_ok());
    let msg = |q: &Profile| q.check("p.json").unwrap_err().to_string();
    let mut q = p.clone();
    q.gemm[0].seconds = -1.0;
    assert!(msg(&q).contains("`gemm[0].seconds` = -1"), "{}", msg(&q));
    let mut q = p.clone();
    q.hbm_gbytes_s = Some(0.0);
    assert!(msg(&q).contains("`hbm_gbytes_s` = 0"), "{}", msg(&q));
    let mut q = p.clone();
    q.collectives[0].segments[0].alpha_s = -1.0;
    let m = msg(&q);
    assert!(
        m.contains("`collectives[0].segments[0].lo_bytes`") && m.contains("calibrate again"),
        "{m}"
    );
    // A fit with no segment prices nothing (it had loaded, shown NaN bandwidths, and left
    // every size to the preset).
    let mut q = p.clone();
    q.collectives[0].segments.clear();
    assert!(
        msg(&q).contains("`collectives[0].segments` = 0: a fit needs at least one"),
        "{}",
        msg(&q)
    );
    // Implausible values too: an hour of latency, a line 1000 times faster than NVLink
    // at its largest size, a memory of 1 PB/s.
    let mut q = p.clone();
    q.collectives[0].segments[0].alpha_s = 3600.0;
    assert!(msg(&q).contains("alpha_s` = 3600"), "{}", msg(&q));
    let mut q = p.clone();
    let seg = &mut q.collectives[0].segments[0];
    (seg.alpha_s, seg.beta_s_per_byte) = (1e-6, 1e-15);
    assert!(msg(&q).contains("beyond any interconnect"), "{}", msg(&q));
    let mut q = p.clone();
    q.hbm_gbytes_s = Some(1e6);
    assert!(msg(&q).contains("to 100 TB/s"), "{}", msg(&q));
    // … and the slow end (QA: 0.001 GB/s had priced a step at 59 days; a GEMM of its first
    // shape taking 1e4 s is below a gigaflop per second).
    let mut q = p.clone();
    q.hbm_gbytes_s = Some(0.001);
    assert!(msg(&q).contains("from 1 GB/s"), "{}", msg(&q));
    let mut q = p.clone();
    assert!(
        q.gemm[0].flops_s() * q.gemm[0].seconds >= 1e9,
        "{:?}",
        q.gemm[0]
    );
    q.gemm[0].seconds = 1e4;
    assert!(
        msg(&q).contains("slower than one scalar CPU core"),
        "{}",
        msg(&q)
    );
    // QA: a GEMM of no rows, a GEMM at 1e-300 s (252% MFU), a one-rank collective
    // (infinite times), a segment running backwards.
    let mut q = p.clone();
    q.gemm[0].m = 0;
    assert!(msg(&q).contains("`gemm[0].m`"), "{}", msg(&q));
    let mut q = p.clone();
    q.gemm[0].seconds = 1e-300;
    assert!(msg(&q).contains("beyond any accelerator"), "{}", msg(&q));
    let mut q = p.clone();
    q.collectives[0].ranks = 1;
    assert!(
        msg(&q).contains("`collectives[0].ranks` = 1"),
        "{}",
        msg(&q)
    );
    let mut q = p.clone();
    let seg = &mut q.collectives[0].segments[0];
    seg.lo_bytes = seg.hi_bytes * 2.0;
    assert!(
        msg(&q).contains("above the segment's hi_bytes"),
        "{}",
        msg(&q)
    );
    // Segments ascend: the lookup walks them in order.
    let mut q = p.clone();
    q.collectives[0].segments.swap(0, 1);
    assert!(msg(&q).contains("segments ascend"), "{}", msg(&q));
    // A line slower than any link over a megabyte: 1 s per byte.
    let mut q = p.clone();
    let last = q.collectives[0].segments.len() - 1;
    q.collectives[0].segments[last].beta_s_per_byte = 1.0;
    assert!(msg(&q).contains("slower than any link"), "{}", msg(&q));
    // What reading refuses, writing refuses.
    let dir = std::env::temp_dir().join(format!("planner-profile-{}", std::process::id()));
    assert!(q.save(&dir).is_err());
    assert!(!dir.join("profile.json").exists());
    // A key the format does not have is refused, not ignored.
    let text = serde_json::to_string(&p)
        .unwrap()
        .replacen('{', "{\"colectives\": [],", 1);
    assert!(serde_json::from_str::<Profile>(&text).is_err());
}

/// A GEMM faster than the device's dense peak is no measurement of that device: the
/// published H100 profile's best bf16 point (794.5 TFLOP/s) is below the H100's 989 and
/// above the A100's 312.
#[test]
fn gemms_beyond_the_devices_peak_are_named() {
    let p = load_profile("h100-published").unwrap();
    let h100 = crate::spec::load_device("h100-sxm5-80gb").unwrap();
    let a100 = crate::spec::load_device("a100-sxm4-80gb").unwrap();
    assert_eq!(beyond_device(&p, &h100), None);
    let w = beyond_device(&p, &a100).unwrap();
    assert!(w.contains("above a100-sxm4-80gb's 312 TFLOP/s peak"), "{w}");
    // A device file without an fp8 peak cannot judge the fp8 points (its bf16 peak had
    // refused the profile's 1403 TFLOP/s fp8 GEMM, and so every estimate with it).
    let mut no_fp8 = h100.clone();
    no_fp8.peak_tflops.fp8 = None;
    assert_eq!(beyond_device(&p, &no_fp8), None);
}
