//! Reading YAML documents field by field, collecting every problem instead of stopping at the
//! first: missing and mistyped fields, out-of-range numbers, and unknown keys (with the closest
//! valid key suggested).

use super::error::{Problem, SpecError, closest};
use serde_json::{Map, Value};

/// Parses YAML (JSON is YAML too) into a generic tree. Booleans follow YAML 1.2 (`true`/`false`
/// only), so `yes`/`no`/`on` stay strings and are reported instead of silently converted.
pub fn parse(file: &str, text: &str) -> Result<Value, SpecError> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| SpecError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// Reads typed fields out of one YAML mapping, recording problems as it goes.
pub struct Reader<'a> {
    file: &'a str,
    prefix: String,
    map: Map<String, Value>,
    seen: Vec<&'static str>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Reader<'a> {
    /// A reader over `value`, which must be a mapping (else one problem is recorded).
    pub fn new(file: &'a str, prefix: &str, value: &Value, problems: &'a mut Vec<Problem>) -> Self {
        let map = match value {
            Value::Object(m) => m.clone(),
            other => {
                problems.push(Problem {
                    file: file.to_string(),
                    field: if prefix.is_empty() {
                        "(document)".into()
                    } else {
                        prefix.into()
                    },
                    message: format!(
                        "expected a mapping of keys to values, found {}",
                        kind(other)
                    ),
                    fix: "write `key: value` lines".into(),
                });
                Map::new()
            }
        };
        Reader {
            file,
            prefix: prefix.to_string(),
            map,
            seen: Vec::new(),
            problems,
        }
    }

    /// Full dotted name of a field.
    pub fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// Records problems found in another file this one names (a cluster's device file), as
    /// they are: they name that file and its field.
    pub fn problems_of_named_file(&mut self, problems: Vec<Problem>) {
        self.problems.extend(problems);
    }

    /// Records a problem on `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        let field = self.path(key);
        self.problems.push(Problem {
            file: self.file.to_string(),
            field,
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// The file this reader reports problems against.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// The raw value of `key`, `None` when absent or null.
    pub fn raw(&mut self, key: &'static str) -> Option<Value> {
        // A key read twice (checked, then read) is listed once in "valid keys here".
        if !self.seen.contains(&key) {
            self.seen.push(key);
        }
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        }
    }

    /// Records a problem when the required `key` is absent or null (`key:` with no value);
    /// a value of the wrong kind was already reported by the reader that rejected it.
    fn require(&mut self, key: &str, fix: &str) {
        match self.map.get(key) {
            None => self.problem(key, "missing required field", fix),
            Some(Value::Null) => self.problem(key, "required field has no value", fix),
            Some(_) => {}
        }
    }

    /// A required string.
    pub fn req_str(&mut self, key: &'static str, fix: &str) -> Option<String> {
        let v = self.opt_str(key);
        if v.is_none() {
            self.require(key, fix);
        }
        v
    }

    /// An optional string.
    pub fn opt_str(&mut self, key: &'static str) -> Option<String> {
        match self.raw(key)? {
            Value::String(s) => Some(s),
            other => {
                self.problem(
                    key,
                    format!("expected text, found {}", kind(&other)),
                    "quote the value",
                );
                None
            }
        }
    }

    /// A required positive integer no larger than `max`.
    pub fn req_count(&mut self, key: &'static str, max: u64, fix: &str) -> Option<u64> {
        let v = self.opt_count(key, max);
        if v.is_none() {
            self.require(key, fix);
        }
        v
    }

    /// An optional positive integer no larger than `max`.
    pub fn opt_count(&mut self, key: &'static str, max: u64) -> Option<u64> {
        let v = self.raw(key)?;
        let n = match &v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 9e15)
                    .map(|x| x as u64)
            }),
            _ => None,
        };
        match n {
            Some(0) => {
                self.problem(
                    key,
                    "must be at least 1, found 0",
                    "give a positive whole number",
                );
                None
            }
            Some(n) if n > max => {
                self.problem(
                    key,
                    format!("{n} is implausibly large (limit {max})"),
                    "check the units and the number of digits",
                );
                None
            }
            Some(n) => Some(n),
            None => {
                self.problem(
                    key,
                    format!(
                        "expected a positive whole number, found {}",
                        show_for_number(&v)
                    ),
                    "give a positive whole number",
                );
                None
            }
        }
    }

    /// An optional list of positive whole numbers, each at most `max` (zero is allowed, for
    /// counts such as recomputed layers).
    pub fn opt_counts(&mut self, key: &'static str, max: u64) -> Option<Vec<u64>> {
        let v = self.raw(key)?;
        let list = v.as_array().and_then(|a| {
            a.iter()
                .map(|x| x.as_u64().filter(|n| *n <= max))
                .collect::<Option<Vec<u64>>>()
        });
        if list.is_none() {
            self.problem(
                key,
                format!(
                    "expected a list of whole numbers, found {}",
                    show_for_number(&v)
                ),
                "write e.g. [7, 8, 8, 7]",
            );
        }
        list
    }

    /// A required positive real number in `[max·1e-9, max]` (see [`Reader::opt_pos`]).
    pub fn req_pos(&mut self, key: &'static str, max: f64, fix: &str) -> Option<f64> {
        let v = self.opt_pos(key, max);
        if v.is_none() {
            self.require(key, fix);
        }
        v
    }

    /// An optional positive real number in `[max·1e-9, max]`: nine orders of magnitude below
    /// the plausible ceiling is a typo too, and rates that small (5e-324 GB/s) made step times
    /// infinite and ratios NaN.
    pub fn opt_pos(&mut self, key: &'static str, max: f64) -> Option<f64> {
        let v = self.raw(key)?;
        let min = max * 1e-9;
        match v.as_f64() {
            Some(x) if x >= min && x <= max && x.is_finite() => Some(x),
            Some(x) if x > 0.0 && x < min => {
                self.problem(
                    key,
                    format!("{x:e} is implausibly small (at least {min:e})"),
                    "check the units",
                );
                None
            }
            Some(x) if x > max => {
                self.problem(
                    key,
                    format!(
                        "{} is implausibly large (limit {max})",
                        crate::units::fmt_given(x)
                    ),
                    "check the units",
                );
                None
            }
            Some(x) => {
                self.problem(
                    key,
                    format!("must be positive, found {x}"),
                    "give a positive number",
                );
                None
            }
            None => {
                self.problem(
                    key,
                    format!("expected a number, found {}", show_for_number(&v)),
                    "give a positive number",
                );
                None
            }
        }
    }

    /// An optional efficiency: a fraction of a peak in `[0.001, 1]`. Times divide by it, so 0
    /// (infinite times) is refused with everything above 1.
    pub fn opt_efficiency(&mut self, key: &'static str) -> Option<f64> {
        let v = self.raw(key)?;
        match v.as_f64() {
            // Below 0.1% of the peak is a typo (5e-324 had priced infinite steps).
            Some(x) if (1e-3..=1.0).contains(&x) => Some(x),
            _ => {
                self.problem(
                    key,
                    format!(
                        "expected an efficiency from 0.001 to 1, found {}",
                        show_for_number(&v)
                    ),
                    "give the achieved fraction of the peak, e.g. 0.8",
                );
                None
            }
        }
    }

    /// An optional share lost: a fraction in `[0, 1)`. Rates multiply by one minus it, so 1
    /// (no progress at all) is refused with everything above it.
    pub fn opt_share(&mut self, key: &'static str) -> Option<f64> {
        let v = self.raw(key)?;
        match v.as_f64() {
            Some(x) if (0.0..1.0).contains(&x) => Some(x),
            _ => {
                self.problem(
                    key,
                    format!(
                        "expected a fraction from 0 up to (not including) 1, found {}",
                        show_for_number(&v)
                    ),
                    "give the share lost, e.g. 0.16 (0 for none)",
                );
                None
            }
        }
    }

    /// An optional boolean (`true` or `false` only).
    pub fn opt_bool(&mut self, key: &'static str) -> Option<bool> {
        let v = self.raw(key)?;
        match v {
            Value::Bool(b) => Some(b),
            other => {
                self.problem(
                    key,
                    format!("expected true or false, found {}", show(&other)),
                    "write true or false",
                );
                None
            }
        }
    }

    /// An optional nested mapping, read by `f`.
    pub fn nested<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&mut Reader<'_>) -> T,
    ) -> Option<T> {
        let v = self.raw(key)?;
        let prefix = self.path(key);
        let mut r = Reader::new(self.file, &prefix, &v, self.problems);
        let out = f(&mut r);
        r.finish();
        Some(out)
    }

    /// Reports every key of the mapping that no accessor asked for, with the closest valid key.
    pub fn finish(self) {
        let unknown: Vec<String> = self
            .map
            .keys()
            .filter(|k| !self.seen.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            let hint = match closest(&key, self.seen.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("valid keys here: {}", self.seen.join(", ")),
            };
            let field = if self.prefix.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.prefix)
            };
            self.problems.push(Problem {
                file: self.file.to_string(),
                field,
                message: "unknown key".into(),
                fix: hint,
            });
        }
    }
}

/// A short description of a value's YAML kind, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value as the user wrote it, for messages.
/// A found value as a message quotes it.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        other => other.to_string(),
    }
}

/// [`show`] where a number was expected: a quoted number says it is text (`layers: "32"` had
/// read "found `32`", as if 32 were refused).
fn show_for_number(v: &Value) -> String {
    match v {
        Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
            format!("the text \"{s}\" (a number in quotes: drop the quotes)")
        }
        other => show(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A number in quotes is named as text, with the fix (it had read "found `32`").
    #[test]
    fn quoted_numbers_are_named_as_text() {
        let v = parse("m.yaml", "layers: \"32\"\n").unwrap();
        let mut problems = Vec::new();
        let mut r = Reader::new("m.yaml", "", &v, &mut problems);
        assert_eq!(r.req_count("layers", 1000, "set it"), None);
        r.finish();
        assert!(
            problems[0]
                .message
                .ends_with("found the text \"32\" (a number in quotes: drop the quotes)"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn reader_collects_every_problem_at_once() {
        let v = parse("m.yaml", "layers: 0\nhiden: 5\nheads: -3\nflag: yes\n").unwrap();
        let mut problems = Vec::new();
        let mut r = Reader::new("m.yaml", "", &v, &mut problems);
        assert_eq!(r.req_count("layers", 1000, "set it"), None);
        assert_eq!(r.req_count("hidden", 1 << 20, "set it"), None);
        assert_eq!(r.req_count("heads", 1000, "set it"), None);
        assert_eq!(r.opt_bool("flag"), None);
        r.finish();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["layers", "hidden", "heads", "flag", "hiden"]);
        assert!(problems[4].fix.contains("`hidden`"), "{}", problems[4]);
        assert!(problems[1].message.contains("missing"));
    }

    /// A required key given with no value (`layers:` in YAML, `"dp": null` in JSON) is a
    /// problem naming it, like an absent key: never an error with an empty problem list.
    #[test]
    fn required_fields_given_null_are_reported() {
        for (file, text) in [
            ("m.yaml", "name: m\nlayers:\nhidden: 8\n"),
            ("p.json", r#"{"name": "m", "layers": null, "hidden": 8}"#),
        ] {
            let v = parse(file, text).unwrap();
            let mut problems = Vec::new();
            let mut r = Reader::new(file, "", &v, &mut problems);
            assert_eq!(r.req_str("name", "set it").as_deref(), Some("m"));
            assert_eq!(r.req_count("layers", 1000, "add `layers: N`"), None);
            assert_eq!(r.req_pos("hidden", 10.0, "set it"), Some(8.0));
            r.finish();
            assert_eq!(problems.len(), 1, "{file}: {problems:?}");
            assert_eq!(
                problems[0].to_string(),
                format!("{file}: `layers`: required field has no value (fix: add `layers: N`)")
            );
        }
    }

    /// The same through the model and plan-file loaders: one problem, naming the field.
    #[test]
    fn null_required_fields_name_the_field_in_models_and_plans() {
        let model =
            "name: m\narch: gpt\nlayers:\nhidden: 1024\nheads: 16\nvocab: 50000\nseq_len: 2048\n";
        let e = crate::spec::ModelSpec::from_yaml("m.yaml", model).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 problem found:\n  - m.yaml: `layers`: required field has no value (fix: add `layers: N` (transformer layers))"
        );
        let plan =
            r#"{"dp": null, "tp": 1, "pp": 1, "mbs": 1, "global_batch": 8, "seq_len": 2048}"#;
        let e = crate::spec::Plan::from_json("p.json", plan).unwrap_err();
        assert!(
            e.to_string()
                .contains("p.json: `dp`: required field has no value"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        let e = parse("bad.yaml", "a: [1, 2\nb: 3").unwrap_err();
        assert!(e.to_string().starts_with("bad.yaml: not valid YAML"), "{e}");
    }
}
