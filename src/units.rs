//! Units and number formatting shared by every module: byte and FLOP scales, data types.
//!
//! Raw `f64` quantities elsewhere carry their unit in their name (`_s`, `_bytes`, `_flops`,
//! `_gbytes_s`); this module holds the scale factors so no other file writes `1e9` or `1 << 30`.
//! It also holds [`write_atomic`], the one way the tool writes a file.

use serde::{Deserialize, Serialize};

/// Bytes in one GiB (2^30), the unit GPU memory is sold and reported in.
pub const GIB: f64 = 1_073_741_824.0;
/// Bytes in one MiB (2^20).
pub const MIB: f64 = 1_048_576.0;
/// Bytes in one decimal GB (10^9), the unit link and HBM bandwidths are quoted in.
pub const GB: f64 = 1e9;
/// FLOPs in one TFLOP (10^12).
pub const TFLOP: f64 = 1e12;
/// Seconds in one microsecond.
pub const US: f64 = 1e-6;

/// Numeric format of weights and activations in the training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// bfloat16 (mixed precision with fp32 master weights).
    Bf16,
    /// IEEE half (mixed precision with fp32 master weights and loss scaling).
    Fp16,
    /// 8-bit float GEMMs (Transformer Engine style); activations kept in bf16.
    Fp8,
    /// TensorFloat-32 GEMMs on fp32 data.
    Tf32,
    /// Plain fp32.
    Fp32,
}

impl Dtype {
    /// Bytes per element of activations and the working copy of weights.
    ///
    /// FP8 training keeps activations and weights' working copy in bf16 outside the GEMMs
    /// (Transformer Engine), so it counts 2 bytes here.
    pub fn bytes(self) -> f64 {
        match self {
            Dtype::Bf16 | Dtype::Fp16 | Dtype::Fp8 => 2.0,
            Dtype::Tf32 | Dtype::Fp32 => 4.0,
        }
    }

    /// Name as written in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::Fp16 => "fp16",
            Dtype::Fp8 => "fp8",
            Dtype::Tf32 => "tf32",
            Dtype::Fp32 => "fp32",
        }
    }

    /// Every data type, in the order they are listed to users.
    pub const ALL: [Dtype; 5] = [
        Dtype::Bf16,
        Dtype::Fp16,
        Dtype::Fp8,
        Dtype::Tf32,
        Dtype::Fp32,
    ];
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fraction as a percentage with one decimal: 0.123 → `12.3%`.
pub fn fmt_pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// A relative error as a signed percentage, `-` when there is none: 0.05 → `+5.0%`.
pub fn fmt_signed_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |e| signed_pct(e, 1))
}

/// A fraction as a signed percentage with `decimals` decimals: 0.05 → `+5.0%`. A value that
/// rounds to zero reads `+0.0%`, never `-0.0%` (a tiny negative difference had printed as a
/// negative zero).
pub fn signed_pct(x: f64, decimals: usize) -> String {
    let p = 100.0 * x;
    let p = if (p * 10f64.powi(decimals as i32)).round() == 0.0 {
        0.0
    } else {
        p
    };
    format!("{p:+.decimals$}%")
}

/// Formats a duration given in seconds with a unit that keeps 3–4 significant digits.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "inf".to_string();
    }
    if s >= 86_400.0 {
        format!("{:.1} d", s / 86_400.0)
    } else if s >= 3_600.0 {
        format!("{:.1} h", s / 3_600.0)
    } else if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

/// Formats a size given in bytes with the binary unit (B, KiB, MiB, GiB) that keeps it at
/// least 1, one decimal: a small limit reads `104.9 KiB`, not `0.0 GiB`.
pub fn fmt_bytes(b: f64) -> String {
    let a = b.abs();
    if a >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else if a >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if a >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A value to one decimal, without a trailing `.0`: a device's 80 GiB reads `80`, the H100's
/// 79.647 GiB `79.6` (rounded to a whole number it had read `80`, beside a 79.8 GiB plan out
/// of memory).
pub fn fmt_tenths(x: f64) -> String {
    format!("{}", (x * 10.0).round() / 10.0)
}

/// A number as a message echoes it: as written below a billion, in exponent form above
/// (`memory_gib: 1e300` had been echoed as a 301-digit integer).
pub fn fmt_given(x: f64) -> String {
    if x.abs() < 1e9 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Formats a large count with an SI suffix (K, M, B, T), e.g. parameters or tokens.
pub fn fmt_count(x: f64) -> String {
    let a = x.abs();
    if a >= 1e12 {
        format!("{:.2}T", x / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// "1 GPU", "8 GPUs": a count of GPUs as a sentence writes it (reports had said "1 GPUs").
pub fn fmt_gpus(n: u64) -> String {
    if n == 1 {
        "1 GPU".into()
    } else {
        format!("{n} GPUs")
    }
}

/// Greatest common divisor (Euclid).
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename,
/// so a reader never sees half a file and a failed write leaves the old one. A symbolic link
/// is written through (its target replaced, the link kept); a path that exists and is no
/// regular file (`/dev/stdout`, a pipe) is written in place, never replaced by a file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let resolved;
    let mut path = path;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = std::fs::canonicalize(path)?;
        path = &resolved;
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::write(path, bytes);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {

    /// Echoed numbers stay short: as written below 1e9, exponent form above.
    #[test]
    fn given_numbers_echo_short() {
        assert_eq!(fmt_given(80.0), "80");
        assert_eq!(fmt_given(2.5), "2.5");
        assert_eq!(fmt_given(1e300), "1e300");
        assert_eq!(fmt_given(-3e12), "-3e12");
    }

    use super::*;

    /// A link is written through and stays a link; a file is replaced whole.
    #[cfg(unix)]
    #[test]
    fn atomic_writes_keep_links() {
        let dir = std::env::temp_dir().join(format!("planner-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (target, link) = (dir.join("target.json"), dir.join("link.json"));
        std::fs::write(&target, "old").unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        write_atomic(&target, b"newer").unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "newer");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn formats_pick_readable_units() {
        assert_eq!(fmt_secs(2.5), "2.500 s");
        assert_eq!(fmt_secs(0.0125), "12.50 ms");
        assert_eq!(fmt_secs(7200.0), "2.0 h");
        assert_eq!(fmt_count(174.6e9), "174.60B");
        assert_eq!(fmt_count(1.5e6), "1.5M");
        // 0.0001 GiB = 107,374.18 B = 104.86 KiB.
        assert_eq!(fmt_bytes(0.0001 * GIB), "104.9 KiB");
        assert_eq!(fmt_bytes(1.5 * GIB), "1.5 GiB");
        assert_eq!(fmt_bytes(3.0 * MIB), "3.0 MiB");
        assert_eq!(fmt_bytes(12.0), "12 B");
        assert_eq!(
            (fmt_tenths(80.0), fmt_tenths(79.647)),
            ("80".into(), "79.6".into())
        );
        assert_eq!(
            (fmt_gpus(1), fmt_gpus(8)),
            ("1 GPU".into(), "8 GPUs".into())
        );
    }

    #[test]
    fn fp8_keeps_bf16_activations() {
        assert_eq!(Dtype::Fp8.bytes(), 2.0);
        assert_eq!(Dtype::Fp32.bytes(), 4.0);
    }
}
