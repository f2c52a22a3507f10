//! Per-stage counts as labels and tables print them, repeats folded (`9×2,10,11×3`), and read
//! back.

/// A list of counts with repeats folded, joined by `sep`: `9,9,10,11,11,11` → `9×2,10,11×3`.
pub fn fold_counts(v: &[u64], sep: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let j = (i..v.len()).find(|&j| v[j] != v[i]).unwrap_or(v.len());
        out.push(if j - i > 1 {
            format!("{}×{}", v[i], j - i)
        } else {
            v[i].to_string()
        });
        i = j;
    }
    out.join(sep)
}

/// Reads counts as [`fold_counts`] writes them, separated by commas or spaces (as labels and
/// tables print them), with runs as `N×k` (`x` or `*` for `×`): `5,3×6,1` is 5, 3, 3, 3, 3, 3,
/// 3, 1. The error says which part is wrong; an empty entry between commas (`5,,3`) is one,
/// not a count to skip.
pub fn unfold_counts(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for entry in text.split(',') {
        if entry.trim().is_empty() {
            return Err(format!(
                "`{text}` has an empty entry: give counts or runs N×k between the commas (e.g. 5,3×6,1)"
            ));
        }
        parts.extend(entry.split_whitespace());
    }
    for part in parts {
        let (n, k) = match part.split_once(['×', 'x', '*']) {
            Some((n, k)) => (n.trim(), k.trim()),
            None => (part, "1"),
        };
        let (Ok(n), Ok(k)) = (n.parse::<u64>(), k.parse::<u64>()) else {
            return Err(format!(
                "`{part}` is not a count or a run N×k (e.g. 5,3×6,1)"
            ));
        };
        if k == 0 || k > 1 << 16 {
            return Err(format!("`{part}`: a run repeats 1 to 65536 times"));
        }
        out.extend(std::iter::repeat_n(n, k as usize));
    }
    Ok(out)
}
