//! nccl-tests import: parsing tables and CSV, row checks, device labels, fits.

use super::*;

const TABLE: &str = "\
# nThread 1 nGpus 2 minBytes 8 maxBytes 1048576 step: 2(factor) warmup iters: 5 iters: 20
#
# Using devices
#  Rank  0 Group  0 Pid   4242 on    node7 device  0 [0x07] NVIDIA H100 80GB HBM3
#  Rank  1 Group  0 Pid   4242 on    node7 device  1 [0x0f] NVIDIA H100 80GB HBM3
node7:4242:4242 [0] NCCL INFO NCCL version 2.21.5+cuda12.4
#
#                                                              out-of-place                       in-place
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
  262144         65536     float     sum      -1    10.00   26.21   26.21      0     9.90   26.48   26.48      0
 1048576        262144     float     sum      -1    20.00   52.43   52.43    N/A    19.00   55.19   55.19    N/A
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 39.3
";

#[test]
fn table_form_gives_points_ranks_device_and_version() {
    let r = parse("all_reduce_perf.txt", TABLE).unwrap();
    assert_eq!(r.coll, Some(Coll::AllReduce));
    assert_eq!(r.ranks, Some(2));
    assert_eq!(r.device.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(r.nccl.as_deref(), Some("2.21.5+cuda12.4"));
    assert_eq!(r.points.len(), 2);
    // Out-of-place columns: 20.00 µs and 52.43 GB/s at 1 MiB.
    assert_eq!(r.points[1].bytes, 1048576.0);
    assert!((r.points[1].seconds - 20e-6).abs() < 1e-15);
    assert_eq!(r.points[1].busbw_gbytes_s, Some(52.43));
}

#[test]
fn csv_form_reads_nanoseconds() {
    let csv = "size(B),count,type,time(ns),busbw(GB/s),time(ns),busbw(GB/s)\n\
               1048576,262144,float,92790,19.78,92150,19.91\n";
    let r = parse("a100-node-allreduce-8gpu.csv", csv).unwrap();
    assert_eq!((r.coll, r.ranks), (Some(Coll::AllReduce), Some(8)));
    // The file's name decides, not its folder's (which had made this 2 ranks and an
    // all-gather).
    let r = parse("runs/h100-2gpu-allgather/a100-node-allreduce-8gpu.csv", csv).unwrap();
    assert_eq!((r.coll, r.ranks), (Some(Coll::AllReduce), Some(8)));
    assert!((r.points[0].seconds - 92.79e-6).abs() < 1e-15);
}

/// A row whose time disagrees with its own busbw (cut short, or in another unit than the
/// header's) or moves more than any interconnect is refused, naming the line, as are size
/// and time units the importer does not read; a byte-order mark is skipped. 1 MiB at
/// 92.79 µs is 11.30 GB/s, busbw 19.78 (an 8-rank all-reduce's bus factor 1.75).
#[test]
fn rows_must_agree_with_themselves() {
    let head = "size(B),count,type,time(ns),busbw(GB/s)\n";
    let ok = format!("{head}1048576,262144,float,92790,19.78\n");
    assert_eq!(parse("ar-8gpu.csv", &ok).unwrap().points.len(), 1);
    assert_eq!(
        parse("ar-8gpu.csv", &format!("\u{feff}{ok}"))
            .unwrap()
            .points
            .len(),
        1
    );
    // Ten times too slow for its busbw (a time in 10 ns ticks, say).
    let e = parse(
        "ar-8gpu.csv",
        &format!("{head}1048576,262144,float,927900,19.78\n"),
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("line 2: busbw 19.78 GB/s")
    );
    // The same time in µs under a `time(ns)` header: 1000 times too fast.
    let e = parse(
        "ar-8gpu.csv",
        &format!("{head}1048576,262144,float,92.79,19.78\n"),
    );
    assert!(e.unwrap_err().to_string().contains("line 2: 1048576 bytes"));
    // Cut inside the time field, no busbw left: 700 MB in 56 ns.
    let e = parse(
        "ar-8gpu.csv",
        &format!("{ok}734003200,183500800,float,56\n"),
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("line 3: 734003200 bytes")
    );
    // A negative time (QA: it had been dropped silently, leaving a one-point fit).
    let e = parse(
        "ar-8gpu.csv",
        &format!(
            "{head}1048576,262144,float,-92790,19.78\n{}",
            &ok[head.len()..]
        ),
    );
    assert!(
        e.unwrap_err().to_string().contains("line 2: size 1048576"),
        "negative time"
    );
    // A time in the wrong unit the other way: 1 MiB in 1e15 ns is 1 B/s (it had priced a
    // step at 6.3e9 s).
    let e = parse(
        "ar-8gpu.csv",
        "size(B),count,type,time(ns),busbw(GB/s)\n1048576,262144,float,1e15,\n",
    );
    assert!(
        e.unwrap_err().to_string().contains("slower than any link"),
        "slow row"
    );
    let e = parse(
        "ar-8gpu.csv",
        "size(KB),count,type,time(ns)\n1024,1,float,92790\n",
    );
    assert!(e.unwrap_err().to_string().contains("`size` in `kb`"));
    let e = parse(
        "ar-8gpu.csv",
        "size(B),count,type,time(min)\n1024,1,float,9\n",
    );
    assert!(e.unwrap_err().to_string().contains("`time` in `min`"));
}

/// A CSV export names no GPU: the profile says so, pricing with it asks for `--device`,
/// and `--device` makes it usable on that GPU's clusters.
#[test]
fn csv_profiles_take_their_device_from_the_flag() {
    let csv = "size(B),count,type,time(ns),busbw(GB/s)\n\
               1048576,262144,float,92790,19.78\n2097152,524288,float,93250,39.36\n";
    let files = [("a100-allreduce-8gpu.csv".to_string(), csv.to_string())];
    let p = import("x", &files, &ImportOptions::default()).unwrap();
    assert_eq!(p.meta.device, UNKNOWN_DEVICE);
    let why = crate::calib::device_mismatch(&p, "a100-sxm4-80gb").unwrap();
    assert!(why.contains("--device"), "{why}");
    let opt = ImportOptions {
        device: Some("NVIDIA A100-SXM4-80GB".into()),
        ..Default::default()
    };
    let p = import("x", &files, &opt).unwrap();
    assert_eq!(crate::calib::device_mismatch(&p, "a100-sxm4-80gb"), None);
}

/// One profile prices one GPU: a file naming another GPU than `--device`, or than an
/// earlier file, is refused, and so is a file naming none beside one that names its GPU
/// (the last file's GPU had labelled them all: an A100's points priced as an H100's).
#[test]
fn files_of_different_gpus_are_not_merged() {
    let table = ("h100-allreduce-2gpu.txt".to_string(), TABLE.to_string());
    let csv = (
        "a100-allreduce-8gpu.csv".to_string(),
        "size(B),count,type,time(ns),busbw(GB/s)\n1048576,262144,float,92790,19.78\n".to_string(),
    );
    let a100 = ImportOptions {
        device: Some("NVIDIA A100-SXM4-80GB".into()),
        ..Default::default()
    };
    let none = ImportOptions::default();
    let err = |files: &[(String, String)], opt: &ImportOptions| {
        import("x", files, opt).unwrap_err().to_string()
    };
    let e = err(std::slice::from_ref(&table), &a100);
    assert!(
        e.contains("ran on NVIDIA H100 80GB HBM3, but --device says"),
        "{e}"
    );
    let e = err(&[csv.clone(), table.clone()], &none);
    assert!(
        e.contains("a100-allreduce-8gpu.csv") && e.contains("names no GPU"),
        "{e}"
    );
    let mut a100_table = table.clone();
    a100_table.1 = TABLE.replace("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB");
    let e = err(&[a100_table, table.clone()], &none);
    assert!(
        e.contains("an earlier file ran on NVIDIA A100-SXM4-80GB"),
        "{e}"
    );
    // Files of one GPU, or an unnamed file labelled by --device, still import.
    assert!(import("x", &[table.clone(), table], &none).is_ok());
    assert_eq!(
        import("x", &[csv], &a100).unwrap().meta.device,
        "NVIDIA A100-SXM4-80GB"
    );
}

#[test]
fn names_give_ranks() {
    assert_eq!(ranks_from_name("a100-node-allreduce-8gpu.csv"), Some(8));
    assert_eq!(ranks_from_name("ar_16_gpus.txt"), Some(16));
    assert_eq!(ranks_from_name("all_gather_perf-g4.log"), Some(4));
    assert_eq!(ranks_from_name("all_gather_perf_n8.log"), Some(8));
    assert_eq!(ranks_from_name("all_gather_perf.log"), None);
}

#[test]
fn unknowable_collective_names_the_flag() {
    let e = import(
        "x",
        &[("run.txt".into(), TABLE.into())],
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("run.txt") && e.contains("--coll"), "{e}");
    let e = parse("x.txt", "hello\n").unwrap_err().to_string();
    assert!(e.contains("no measurements"), "{e}");
}

/// The A100 fixture: 2..8 GPUs, 1 MiB–1 GiB (calibrate/fixtures/a100-nccl-tests).
fn fixture() -> Profile {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibrate/fixtures/a100-nccl-tests");
    let files: Vec<(String, String)> = (2..=8)
        .map(|n| {
            let p = dir.join(format!("a100-node-allreduce-{n}gpu.csv"));
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    import("a100", &files, &ImportOptions::default()).unwrap()
}

#[test]
fn a100_fixture_fits_within_10_percent_above_1_mib() {
    let p = fixture();
    assert_eq!(p.collectives.len(), 7);
    for f in &p.collectives {
        assert_eq!((f.coll, f.span), (Coll::AllReduce, Span::Intra));
        assert_eq!(f.points.len(), 1024, "1 MiB to 1 GiB in 1 MiB steps");
        let worst = f.max_residual_from(1048576.0);
        assert!(worst < 0.10, "{} ranks: worst residual {worst}", f.ranks);
        // Few lines, not one per pair of points (2 to 15 on this file at 5% tolerance).
        assert!(
            f.segments.len() <= 16,
            "{} ranks: {} segments",
            f.ranks,
            f.segments.len()
        );
    }
    // One straight line cannot follow NCCL's ramp: it misses some point by more than 10%.
    let f8 = p.fit_of(Coll::AllReduce, 8, Span::Intra).unwrap();
    let (a, b) = crate::calib::alpha_beta(&f8.points);
    let worst = f8
        .points
        .iter()
        .map(|q| ((a + b * q.bytes) / q.seconds - 1.0).abs())
        .fold(0.0, f64::max);
    assert!(worst > 0.10, "{worst}");
}

#[test]
fn a100_fixture_bus_bandwidth_at_1_gib_matches_the_file() {
    // 8 GPUs: the file says 8.193 ms and 229.35 GB/s at 1 GiB
    // (2·7/8 · 1073741824 B / 8.193e-3 s = 229.3 GB/s).
    let p = fixture();
    for f in &p.collectives {
        let last = f.points.last().unwrap();
        assert_eq!(last.bytes, 1073741824.0);
        let file = last.busbw_gbytes_s.unwrap();
        let fit = f.busbw_gbytes_s(last.bytes);
        assert!(
            (fit / file - 1.0).abs() < 0.05,
            "{} ranks: fit {fit} vs file {file}",
            f.ranks
        );
    }
    let f8 = p.fit_of(Coll::AllReduce, 8, Span::Intra).unwrap();
    assert!((f8.busbw_gbytes_s(1073741824.0) - 229.3).abs() < 229.3 * 0.05);
}

/// A row whose results failed nccl-tests' own check (`#wrong` above 0, in either the
/// out-of-place or the in-place column) is refused with its line; `N/A` (no check) and 0
/// pass.
#[test]
fn rows_that_failed_the_check_are_refused() {
    assert!(parse("all_reduce_perf.txt", TABLE).is_ok());
    for (from, to) in [
        ("26.21      0     9.90", "26.21      3     9.90"),
        ("26.48   26.48      0", "26.48   26.48      1"),
    ] {
        let bad = TABLE.replacen(from, to, 1);
        assert_ne!(bad, TABLE);
        let e = parse("all_reduce_perf.txt", &bad).unwrap_err().to_string();
        assert!(
            e.contains("line 11: size 262144: nccl-tests counted") && e.contains("wrong results"),
            "{e}"
        );
    }
}

/// `--ranks` is for outputs without `# Rank` lines: against an output that lists 2 it is
/// refused unless it says 2; and no output claims more than 2^20 ranks.
#[test]
fn ranks_flag_agrees_with_the_rank_lines() {
    let files = [("all_reduce_perf.txt".to_string(), TABLE.to_string())];
    let with = |ranks| ImportOptions {
        ranks: Some(ranks),
        ..Default::default()
    };
    assert!(import("x", &files, &with(2)).is_ok());
    let e = import("x", &files, &with(3)).unwrap_err().to_string();
    assert!(
        e.contains("--ranks 3, but the output's `# Rank` lines list 2 ranks"),
        "{e}"
    );
    let csv = [(
        "allreduce.csv".to_string(),
        "size(B),count,type,time(ns)\n1048576,262144,float,92790\n".to_string(),
    )];
    assert!(import("x", &csv, &with(8)).is_ok());
    let e = import("x", &csv, &with(99_999_999))
        .unwrap_err()
        .to_string();
    assert!(e.contains("99999999 ranks: beyond any cluster"), "{e}");
}
