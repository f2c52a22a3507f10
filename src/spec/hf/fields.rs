//! Typed access to a `config.json`'s fields for the import, every problem collected.

use crate::spec::error::Problem;
use serde_json::{Map, Value};

/// Typed access to a config's fields, collecting problems.
pub(super) struct Fields<'a> {
    pub(super) file: &'a str,
    pub(super) map: &'a Map<String, Value>,
    pub(super) problems: Vec<Problem>,
}

impl Fields<'_> {
    pub(super) fn bad(&mut self, field: &str, message: &str, fix: &str) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            field: field.to_string(),
            message: message.to_string(),
            fix: fix.to_string(),
        });
    }

    /// The first of `names` that is present and not null.
    pub(super) fn get(&self, names: &[&'static str]) -> Option<(&'static str, &Value)> {
        names
            .iter()
            .find_map(|n| self.map.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    /// An optional positive whole number under any of `names`.
    pub(super) fn count(&mut self, names: &[&'static str], max: u64) -> Option<u64> {
        let (key, v) = self.get(names)?;
        match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                let msg = format!("expected a whole number from 1 to {max}, found {v}");
                self.bad(key, &msg, "fix the value");
                None
            }
        }
    }

    /// A required positive whole number under any of `names`.
    pub(super) fn need(&mut self, names: &[&'static str], max: u64) -> Option<u64> {
        if self.get(names).is_none() {
            let also = if names.len() > 1 {
                format!(" (or `{}`)", names[1..].join("`, `"))
            } else {
                String::new()
            };
            self.bad(
                names[0],
                &format!("missing required field{also}"),
                &format!("add `\"{}\": N`", names[0]),
            );
            return None;
        }
        self.count(names, max)
    }

    pub(super) fn flag(&mut self, key: &'static str) -> Option<bool> {
        let (_, v) = self.get(&[key])?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                let msg = format!("expected true or false, found {v}");
                self.bad(key, &msg, "write true or false");
                None
            }
        }
    }

    pub(super) fn prob(&mut self, key: &'static str) -> Option<f64> {
        let (_, v) = self.get(&[key])?;
        match v.as_f64() {
            Some(p) if (0.0..1.0).contains(&p) => Some(p),
            _ => {
                let msg = format!("expected a probability in [0, 1), found {v}");
                self.bad(key, &msg, "fix the value");
                None
            }
        }
    }
}
