//! Errors of the spec layer: every problem names the file, the field and the fix.

use std::fmt;

/// One thing wrong with an input file or a plan, with enough context to fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The file (or preset, or "plan") the problem is in.
    pub file: String,
    /// Dotted path of the offending field, e.g. `inter_node.nic_gbits_s`.
    pub field: String,
    /// What is wrong, with the offending value.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.file, self.field, self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// Errors returned while reading and validating models, devices, clusters and plans.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path that was opened.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The text is not YAML (or JSON) at all.
    #[error("{file}: not valid YAML: {message}")]
    Syntax {
        /// File name.
        file: String,
        /// Parser message, with its line and column.
        message: String,
    },
    /// The text is not JSON (a Hugging Face config, a plan file).
    #[error("{file}: not valid JSON: {message}")]
    Json {
        /// File name.
        file: String,
        /// Parser message, with its line and column.
        message: String,
    },
    /// The document parsed but has one or more problems; all of them are listed.
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
    /// A name that is neither a preset nor an existing file.
    #[error(
        "unknown {kind} `{name}`: not a preset and no such file{hint} (see `planner {list_cmd}`)"
    )]
    UnknownPreset {
        /// "model", "cluster" or "device".
        kind: &'static str,
        /// What the user wrote.
        name: String,
        /// ", did you mean `x`?" or empty.
        hint: String,
        /// The command that lists the presets.
        list_cmd: &'static str,
    },
}

fn list(problems: &[Problem]) -> String {
    let n = problems.len();
    let mut s = format!("{n} problem{} found:", if n == 1 { "" } else { "s" });
    for p in problems {
        s.push_str("\n  - ");
        s.push_str(&p.to_string());
    }
    s
}

impl SpecError {
    /// The problems carried by an [`SpecError::Invalid`], empty otherwise.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Invalid(p) => p,
            _ => &[],
        }
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let score = strsim::normalized_damerau_levenshtein(&word.to_lowercase(), c);
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.filter(|(_, s)| *s >= 0.5).map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_suggests_typo_fix_and_not_noise() {
        let keys = ["layers", "hidden", "heads", "kv_heads", "vocab"];
        assert_eq!(closest("hiden", keys), Some("hidden"));
        assert_eq!(closest("kv_head", keys), Some("kv_heads"));
        assert_eq!(closest("zzzzzzzz", keys), None);
    }
}
