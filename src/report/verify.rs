//! Reads what `planner verify --format json` prints — `{"predicted": {…estimate fields…,
//! "classes", "peak_memory_gib"}, "measured": {"step_time_s", "classes", "peak_memory_gib"},
//! "error": {…}}` — for the predicted-vs-measured section. Errors are recomputed here as
//! (predicted − measured) / measured, the definition `verify` uses.

use super::ReportError;
use crate::exec::verify::Classes;
use serde_json::Value;

/// Operation classes in the order `verify` lists them.
fn classes() -> [&'static str; 9] {
    Classes::default().rows().map(|(name, _)| name)
}

/// A class as the report writes it: `gemm_s` → `GEMM (s)`; unknown names unchanged.
pub fn class_label(name: &str) -> String {
    let known = [
        ("gemm_s", "GEMM"),
        ("memory_bound_s", "memory-bound"),
        ("recompute_s", "recompute"),
        ("tp_comm_s", "TP comm"),
        ("pp_comm_s", "PP comm"),
        ("dp_comm_s", "DP comm"),
        ("other_comm_s", "CP/EP comm"),
        ("optimizer_s", "optimizer"),
        ("bubble_s", "bubble"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == name)
        .map_or(name.to_string(), |(_, l)| l.to_string())
}

/// Predicted and measured figures of one verified run.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// Backend the run used (`cuda`, `cpu`), if stated.
    pub backend: Option<String>,
    /// Model name, if stated.
    pub model: Option<String>,
    /// Plan summary, if the file holds the plan.
    pub plan: Option<String>,
    /// Predicted and measured step time, seconds.
    pub step_s: (f64, f64),
    /// Per class: name, predicted seconds, measured seconds (`None`: not measured).
    pub classes: Vec<(String, f64, Option<f64>)>,
    /// Peak memory per GPU, GiB: predicted, measured.
    pub memory_gib: (Option<f64>, Option<f64>),
    /// Notes the run recorded.
    pub notes: Vec<String>,
}

pub use crate::exec::verify::relative as error;

fn field<'a>(file: &str, v: &'a Value, path: &str) -> Result<&'a Value, ReportError> {
    v.pointer(&format!("/{}", path.replace('.', "/")))
        .ok_or_else(|| ReportError::Verify {
            file: file.into(),
            field: path.into(),
            problem: "missing".into(),
        })
}

fn number(file: &str, v: &Value, path: &str) -> Result<f64, ReportError> {
    field(file, v, path)?
        .as_f64()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| ReportError::Verify {
            file: file.into(),
            field: path.into(),
            problem: "not a non-negative number".into(),
        })
}

/// Classes of `predicted`: its `classes` object, in `verify`'s order then any others sorted.
fn class_names(predicted: &Value) -> Vec<String> {
    let Some(obj) = predicted.get("classes").and_then(Value::as_object) else {
        return Vec::new();
    };
    let order = classes();
    let mut names: Vec<String> = order
        .iter()
        .filter(|c| obj.contains_key(**c))
        .map(|c| c.to_string())
        .collect();
    let mut rest: Vec<String> = obj
        .keys()
        .filter(|k| !order.contains(&k.as_str()))
        .cloned()
        .collect();
    rest.sort();
    names.extend(rest);
    names
}

/// Parses the JSON text of `file`.
pub fn parse(file: &str, text: &str) -> Result<Verified, ReportError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ReportError::Verify {
        file: file.into(),
        field: "(document)".into(),
        problem: format!("not JSON ({e})"),
    })?;
    let step_s = (
        number(file, &v, "predicted.step_time_s")?,
        number(file, &v, "measured.step_time_s")?,
    );
    // A class may take no time; a whole step cannot (0 had been accepted and compared).
    for (path, x) in [
        ("predicted.step_time_s", step_s.0),
        ("measured.step_time_s", step_s.1),
    ] {
        if x <= 0.0 {
            return Err(ReportError::Verify {
                file: file.into(),
                field: path.into(),
                problem: "not a positive number: a step takes time".into(),
            });
        }
    }
    let mut classes = Vec::new();
    for name in class_names(&v["predicted"]) {
        let p = number(file, &v, &format!("predicted.classes.{name}"))?;
        let m = match v.pointer(&format!("/measured/classes/{name}")) {
            None | Some(Value::Null) => None,
            Some(_) => Some(number(file, &v, &format!("measured.classes.{name}"))?),
        };
        classes.push((name, p, m));
    }
    let opt = |path: &str| -> Result<Option<f64>, ReportError> {
        match v.pointer(&format!("/{}", path.replace('.', "/"))) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => number(file, &v, path).map(Some),
        }
    };
    let predicted_mem = match opt("predicted.peak_memory_gib")? {
        Some(m) => Some(m),
        None => opt("predicted.memory_gib_per_gpu")?,
    };
    let plan = v["predicted"]["plan"]
        .is_object()
        .then(|| serde_json::from_value::<crate::spec::Plan>(v["predicted"]["plan"].clone()))
        .and_then(Result::ok)
        .map(|p| p.short());
    Ok(Verified {
        backend: v["backend"].as_str().map(String::from),
        model: v["model"].as_str().map(String::from),
        plan,
        step_s,
        classes,
        memory_gib: (predicted_mem, opt("measured.peak_memory_gib")?),
        notes: v["notes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_bad_fields_are_named() {
        let e = parse(
            "v.json",
            r#"{"predicted": {}, "measured": {"step_time_s": 1}}"#,
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("`predicted.step_time_s`")
        );
        let e = parse(
            "v.json",
            r#"{"predicted": {"step_time_s": 1, "classes": {"gemm_s": "x"}},
                "measured": {"step_time_s": 1}}"#,
        );
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.contains("`predicted.classes.gemm_s`") && msg.contains("v.json"),
            "{msg}"
        );
        assert!(parse("v.json", "[1,").is_err());
    }

    /// A measured step of no time is no measurement (QA: it had been accepted).
    #[test]
    fn a_step_takes_time() {
        let e = parse(
            "v.json",
            r#"{"predicted": {"step_time_s": 1}, "measured": {"step_time_s": 0}}"#,
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("`measured.step_time_s`")
        );
    }

    #[test]
    fn classes_keep_verify_order_and_unmeasured_ones() {
        let v = parse(
            "v.json",
            r#"{"predicted": {"step_time_s": 2.0, "peak_memory_gib": 10,
                  "classes": {"bubble_s": 0.5, "gemm_s": 1.0, "zz_s": 0.1}},
                "measured": {"step_time_s": 2.5, "peak_memory_gib": null,
                  "classes": {"gemm_s": 1.2, "bubble_s": null}}}"#,
        )
        .unwrap();
        assert_eq!(v.step_s, (2.0, 2.5));
        assert_eq!(
            v.classes,
            vec![
                ("gemm_s".into(), 1.0, Some(1.2)),
                ("bubble_s".into(), 0.5, None),
                ("zz_s".into(), 0.1, None),
            ]
        );
        assert_eq!(v.memory_gib, (Some(10.0), None));
        assert_eq!(error(2.0, 2.5), Some(-0.2));
    }
}
