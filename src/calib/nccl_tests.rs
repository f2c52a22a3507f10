//! Import of nccl-tests output (NVIDIA/nccl-tests: all_reduce_perf, all_gather_perf, …): the
//! table it prints and the CSV form of the same columns, into collective fits.

use super::profile::{CalibError, CollectiveFit, CollectivePoint, Meta, Profile, Span};
use crate::graph::Coll;
use crate::units::US;
use std::collections::{BTreeMap, BTreeSet};

/// Most ranks an output may claim: 2^20 GPUs, beyond any cluster (a typo had written a fit
/// for 99,999,999 ranks).
const MAX_RANKS: u64 = 1 << 20;

/// What one nccl-tests output says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NcclTestsRun {
    /// Collective, from the output or the file name.
    pub coll: Option<Coll>,
    /// Ranks, from the `# Rank N ...` lines or the file name (`8gpu`, `-g8`, `_n8`).
    pub ranks: Option<u64>,
    /// How many `# Rank` lines the output lists (0: none, as in CSV exports).
    pub rank_lines: u64,
    /// Hosts named in the `# Rank` lines.
    pub hosts: BTreeSet<String>,
    /// GPU named in the `# Rank` lines.
    pub device: Option<String>,
    /// NCCL version, when NCCL_DEBUG=INFO printed it.
    pub nccl: Option<String>,
    /// Out-of-place measurements.
    pub points: Vec<CollectivePoint>,
}

/// Options of `calibrate import-nccl-tests`.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Ranks of every file (overrides what the files say).
    pub ranks: Option<u64>,
    /// Span of every file (default: inter when the ranks name several hosts, else intra).
    pub span: Option<Span>,
    /// Collective of every file (overrides what the files say).
    pub coll: Option<Coll>,
    /// The GPU that ran them, where the files do not say (CSV exports carry no `# Rank`
    /// lines): a profile must name its device to price a cluster.
    pub device: Option<String>,
}

/// The collective a name mentions (`allreduce`, `all_reduce_perf`, `alltoall`, `sendrecv`).
pub fn coll_from_name(s: &str) -> Option<Coll> {
    let s: String = s
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    [
        ("allreduce", Coll::AllReduce),
        ("allgather", Coll::AllGather),
        ("reducescatter", Coll::ReduceScatter),
        ("alltoall", Coll::AllToAll),
        ("sendrecv", Coll::SendRecv),
    ]
    .into_iter()
    .find(|(n, _)| s.contains(n))
    .map(|x| x.1)
}

/// Ranks a file name states: a number before `gpu`/`gpus`/`rank(s)` (`8gpu`, `16_gpus`), or
/// after `-g`/`_n` (`-g4`, `_n8`).
pub fn ranks_from_name(name: &str) -> Option<u64> {
    let s = name.to_ascii_lowercase();
    // Runs of digits and of letters, each with the character before it.
    let mut runs: Vec<(String, char)> = Vec::new();
    let mut prev = ' ';
    for c in s.chars() {
        let same = runs.last().is_some_and(|(r, _)| {
            let last = r.chars().last().unwrap_or(' ');
            last.is_ascii_digit() == c.is_ascii_digit()
                && last.is_ascii_alphabetic() == c.is_ascii_alphabetic()
        });
        if c.is_ascii_alphanumeric() {
            if same && prev.is_ascii_alphanumeric() {
                runs.last_mut().expect("a run").0.push(c);
            } else {
                runs.push((c.to_string(), prev));
            }
        }
        prev = c;
    }
    let number = |r: &str| r.parse::<u64>().ok();
    for w in runs.windows(2) {
        let ((a, _), (b, _)) = (&w[0], &w[1]);
        if let Some(n) = number(a)
            && (b.starts_with("gpu") || b.starts_with("rank"))
        {
            return Some(n);
        }
    }
    for w in runs.windows(2) {
        let ((a, before_a), (b, _)) = (&w[0], &w[1]);
        if (a == "g" || a == "n")
            && matches!(before_a, '-' | '_')
            && let Some(n) = number(b)
        {
            return Some(n);
        }
    }
    None
}

fn input_err(path: &str, message: String, fix: &str) -> CalibError {
    CalibError::Input {
        path: path.to_string(),
        message,
        fix: fix.to_string(),
    }
}

/// Column positions of size, time and bus bandwidth, and the time unit in seconds.
struct Columns {
    size: usize,
    time: usize,
    busbw: Option<usize>,
    /// nccl-tests' `#wrong` columns (out-of-place, in-place): results that failed its check.
    wrong: Vec<usize>,
    unit_s: f64,
}

fn columns(names: &[String], path: &str, line: usize) -> Result<Columns, CalibError> {
    let find = |want: &str| names.iter().position(|n| n.starts_with(want));
    let (Some(size), Some(time)) = (find("size"), find("time")) else {
        return Err(input_err(
            path,
            format!("line {line}: a header without `size` and `time` columns"),
            "give nccl-tests output (the table it prints, or its CSV form)",
        ));
    };
    // The unit in the header's parentheses: nccl-tests prints `size` in bytes and `time` in
    // µs (its table) or `size(B)` and `time(ns)` (CSV exports); anything else is refused
    // rather than read as those.
    let unit = |name: &str| -> String {
        name.split_once('(')
            .map_or("", |(_, u)| u.trim_end_matches(')'))
            .to_ascii_lowercase()
    };
    let bad_unit = |what: &str, u: &str, known: &str| {
        input_err(
            path,
            format!("line {line}: `{what}` in `{u}`, which the importer does not read"),
            &format!("give {what} in {known}, as nccl-tests prints it"),
        )
    };
    let size_unit = unit(&names[size]);
    if !["", "b", "bytes"].contains(&size_unit.as_str()) {
        return Err(bad_unit("size", &size_unit, "bytes"));
    }
    let unit_s = match unit(&names[time]).as_str() {
        "ns" => 1e-9,
        "" | "us" | "µs" => US,
        "ms" => 1e-3,
        "s" => 1.0,
        u => return Err(bad_unit("time", u, "ns, us, ms or s")),
    };
    Ok(Columns {
        size,
        time,
        busbw: find("busbw"),
        wrong: (0..names.len())
            .filter(|&j| names[j].starts_with("#wrong"))
            .collect(),
        unit_s,
    })
}

fn parse_rank_line(run: &mut NcclTestsRun, line: &str) {
    // "#  Rank  0 Group  0 Pid  1234 on host1 device  0 [0x07] NVIDIA A100-SXM4-80GB"
    let t: Vec<&str> = line.trim_start_matches('#').split_whitespace().collect();
    if t.first() != Some(&"Rank") {
        return;
    }
    run.ranks = Some(run.ranks.unwrap_or(0) + 1);
    run.rank_lines += 1;
    if let Some(i) = t.iter().position(|w| *w == "on")
        && let Some(h) = t.get(i + 1)
    {
        run.hosts.insert(h.to_string());
    }
    if let Some(i) = t.iter().position(|w| w.starts_with('[')) {
        let name = t[i + 1..].join(" ");
        if !name.is_empty() {
            run.device = Some(name);
        }
    }
}

/// One row's time against what it says of itself: nccl-tests reports the bus bandwidth
/// `busbw = size/time · f`, the collective's bus factor f between 1/2 (all-gather and
/// reduce-scatter over two ranks) and 2 (all-reduce over many) (nccl-tests
/// `doc/PERFORMANCE.md`), so a time that disagrees with its own row's busbw beyond that range
/// was cut short or written in another unit; and no interconnect moves 10 TB/s. Either would
/// give the fit a segment of its own, and the profile an absurdly fast collective.
fn check_row(
    path: &str,
    line: usize,
    bytes: f64,
    seconds: f64,
    busbw: Option<f64>,
) -> Result<(), CalibError> {
    let alg = bytes / seconds / 1e9;
    let bad = |why: String| {
        input_err(
            path,
            format!("line {line}: {why}"),
            "give the output unchanged (a cut or edited row, or a time in another unit than its header's, is wrong)",
        )
    };
    if alg * 1e9 > super::profile::MAX_LINK_BYTES_S {
        return Err(bad(format!(
            "{bytes} bytes in {seconds:.3e} s is {alg:.0} GB/s, beyond any interconnect"
        )));
    }
    if bytes >= super::profile::MIN_LINK_CHECK_BYTES && alg * 1e9 < super::profile::MIN_LINK_BYTES_S
    {
        return Err(bad(format!(
            "{bytes} bytes in {seconds:.3e} s is {:.3e} B/s, slower than any link",
            alg * 1e9
        )));
    }
    // Two decimals: above 1 GB/s the rounding is under 0.5%.
    if let Some(bw) = busbw.filter(|b| *b >= 1.0) {
        let factor = bw / alg;
        if !(0.4..=2.1).contains(&factor) {
            return Err(bad(format!(
                "busbw {bw} GB/s but size/time is {alg:.2} GB/s (a bus factor of {factor:.3}, where \
                 collectives have 0.5 to 2)"
            )));
        }
    }
    Ok(())
}

/// A profile's device when neither the nccl-tests output nor `--device` named it.
pub const UNKNOWN_DEVICE: &str = "unknown (not in the nccl-tests output)";

/// Parses one nccl-tests output, table or CSV.
pub fn parse(path: &str, text: &str) -> Result<NcclTestsRun, CalibError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The file's own name, not its folders' (`h100-2gpu-runs/ag-8gpu.txt` is 8 ranks).
    let file_name = std::path::Path::new(path)
        .file_name()
        .map_or(path.to_string(), |n| n.to_string_lossy().to_string());
    let mut run = NcclTestsRun {
        coll: coll_from_name(&file_name),
        ..Default::default()
    };
    let mut cols: Option<Columns> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(v) = line.split("NCCL version ").nth(1) {
            run.nccl = v.split_whitespace().next().map(str::to_string);
        }
        if line.contains("Collective test starting:") {
            run.coll = coll_from_name(line).or(run.coll);
        }
        let csv = line.contains(',');
        let fields: Vec<String> = if csv {
            line.split(',').map(|f| f.trim().to_string()).collect()
        } else {
            line.trim_start_matches('#')
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let first = fields.first().map(String::as_str).unwrap_or("");
        if first.starts_with("size") {
            cols = Some(columns(&fields, path, i + 1)?);
            continue;
        }
        if line.starts_with('#') {
            parse_rank_line(&mut run, line);
            continue;
        }
        let Some(c) = &cols else { continue };
        if !first.chars().next().is_some_and(|ch| ch.is_ascii_digit()) {
            continue;
        }
        let num = |j: usize, what: &str| -> Result<f64, CalibError> {
            fields
                .get(j)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| {
                    input_err(
                        path,
                        format!("line {}: no number in the `{what}` column", i + 1),
                        "give the output unchanged (one row per size)",
                    )
                })
        };
        let bytes = num(c.size, "size")?;
        let seconds = num(c.time, "time")? * c.unit_s;
        // Zero-byte rows and times below the printed resolution carry nothing to fit; a
        // negative or non-finite size or time is no measurement (it had been dropped silently).
        if !(bytes.is_finite() && seconds.is_finite() && bytes >= 0.0 && seconds >= 0.0) {
            return Err(input_err(
                path,
                format!(
                    "line {}: size {bytes} and time {seconds:e} s: neither may be negative or not a number",
                    i + 1
                ),
                "give the output unchanged (one row per size)",
            ));
        }
        // A row whose results failed nccl-tests' own check (`#wrong` above 0; `N/A` without
        // -c) measured a broken run: refused rather than fitted.
        if let Some(w) = c
            .wrong
            .iter()
            .filter_map(|&j| fields.get(j)?.parse::<f64>().ok())
            .find(|&w| w > 0.0)
        {
            return Err(input_err(
                path,
                format!(
                    "line {}: size {bytes}: nccl-tests counted {w} wrong results (#wrong): the run's data failed its check",
                    i + 1
                ),
                "fix the run (drivers, NCCL, topology) and measure again; a failing run's times are no calibration",
            ));
        }
        if bytes > 0.0 && seconds > 0.0 {
            let busbw: Option<f64> = c.busbw.and_then(|j| fields.get(j)?.parse().ok());
            check_row(path, i + 1, bytes, seconds, busbw)?;
            run.points.push(CollectivePoint {
                bytes,
                seconds,
                busbw_gbytes_s: busbw,
                residual: 0.0,
            });
        }
    }
    if run.points.is_empty() {
        return Err(input_err(
            path,
            "no measurements found".into(),
            "give nccl-tests output: a header line with `size` and `time`, then one row per size",
        ));
    }
    if run.ranks.is_none() {
        run.ranks = ranks_from_name(&file_name);
    }
    Ok(run)
}

/// Points of one (collective, ranks, span) and the files they came from.
type Merged = (Vec<CollectivePoint>, Vec<String>);

/// Turns nccl-tests outputs (path, text) into a profile named `name`: one piecewise α-β fit
/// per (collective, ranks, span), files of the same key merged.
pub fn import(
    name: &str,
    files: &[(String, String)],
    opt: &ImportOptions,
) -> Result<Profile, CalibError> {
    let mut groups: BTreeMap<(Coll, u64, Span), Merged> = BTreeMap::new();
    let mut meta = Meta {
        backend: "nccl-tests".into(),
        tool_version: Some(env!("CARGO_PKG_VERSION").into()),
        ..Default::default()
    };
    // The first file that names no GPU (`meta.device` holds the GPU the others name).
    let mut unnamed: Option<String> = None;
    for (path, text) in files {
        let run = parse(path, text)?;
        let coll = opt.coll.or(run.coll).ok_or_else(|| {
            input_err(
                path,
                "cannot tell which collective this file measured".into(),
                "pass --coll all-reduce|all-gather|reduce-scatter|all-to-all|send-recv",
            )
        })?;
        let ranks = opt.ranks.or(run.ranks).ok_or_else(|| {
            input_err(
                path,
                "cannot tell how many ranks ran (no `# Rank` lines, no `8gpu` in the name)".into(),
                "pass --ranks N",
            )
        })?;
        if ranks < 2 {
            return Err(input_err(
                path,
                format!("{ranks} rank: a collective needs at least 2"),
                "pass --ranks N with N ≥ 2",
            ));
        }
        if ranks > MAX_RANKS {
            return Err(input_err(
                path,
                format!("{ranks} ranks: beyond any cluster (limit {MAX_RANKS})"),
                "pass the number of GPUs that ran the test",
            ));
        }
        // The output's own `# Rank` lines say how many ran: --ranks is for files without them.
        if let Some(r) = opt
            .ranks
            .filter(|&r| run.rank_lines > 0 && r != run.rank_lines)
        {
            return Err(input_err(
                path,
                format!(
                    "--ranks {r}, but the output's `# Rank` lines list {} ranks",
                    run.rank_lines
                ),
                "drop --ranks (it is for outputs without `# Rank` lines, such as CSV exports)",
            ));
        }
        let span = opt.span.unwrap_or(if run.hosts.len() > 1 {
            Span::Inter
        } else {
            Span::Intra
        });
        // One profile prices one device: a file naming another GPU than --device or than an
        // earlier file is refused (the last file's name had labelled every file's points).
        match (&run.device, &opt.device) {
            (Some(d), Some(given)) if d != given => {
                return Err(input_err(
                    path,
                    format!("ran on {d}, but --device says {given}"),
                    "drop --device (the file names its GPU), or import this file separately",
                ));
            }
            (Some(d), _) if !meta.device.is_empty() && *d != meta.device => {
                return Err(input_err(
                    path,
                    format!("ran on {d}, but an earlier file ran on {}", meta.device),
                    "import each GPU's files into its own profile",
                ));
            }
            _ => {}
        }
        if run.device.is_none() {
            unnamed.get_or_insert(path.clone());
        }
        if let Some(d) = run.device.or_else(|| opt.device.clone()) {
            meta.device = d;
        }
        meta.nccl = run.nccl.or(meta.nccl.take());
        let g = groups.entry((coll, ranks, span)).or_default();
        g.0.extend(run.points);
        g.1.push(path.clone());
    }
    if let (Some(path), None) = (&unnamed, &opt.device)
        && !meta.device.is_empty()
    {
        let d = &meta.device;
        return Err(input_err(
            path,
            format!("names no GPU, and another file ran on {d}: the profile would say {d} for it"),
            "pass --device to say what it ran on, or import it separately",
        ));
    }
    if meta.device.is_empty() {
        meta.device = UNKNOWN_DEVICE.into();
    }
    let mut p = Profile::new(name, meta);
    for ((coll, ranks, span), (points, paths)) in groups {
        let mut f = CollectiveFit::fit(coll, ranks, span, points);
        f.source = Some(format!("nccl-tests: {}", paths.join(", ")));
        p.collectives.push(f);
    }
    Ok(p)
}

#[cfg(test)]
mod tests;
