//! Inputs: models, devices, clusters (YAML files or embedded presets) and plans, validated
//! with every problem reported at once. Only this module reads models/ and hardware/.

pub mod error;
pub mod framework;
pub mod hardware;
pub mod hf;
pub mod infeasible;
mod json;
pub mod launch;
pub mod model;
pub mod plan;
pub mod plan_file;
pub mod presets;
pub mod runs;
pub mod yaml;

pub use error::{Problem, SpecError};
pub use hardware::{ClusterSpec, DeviceEfficiency, DeviceSpec, InterNode, IntraNode, PeakTflops};
pub use model::{Arch, Mla, ModelSpec, MoeSpec, Positions, SlidingWindow, WindowLayers};
pub use plan::{
    AttentionImpl, Fp8Recipe, Framework, Infeasible, Plan, Recompute, RecomputeModules, Schedule,
    SplitAccounts, TpOverlap, fold_counts, unfold_counts,
};
pub use plan_file::load_plan;

use std::path::Path;

/// Reads `arg` as a file when such a file exists (or it looks like a path), else as a preset.
fn resolve(
    arg: &str,
    set: &[presets::Preset],
    kind: &'static str,
    list_cmd: &'static str,
) -> Result<(String, String), SpecError> {
    let looks_like_path = arg.contains('/')
        || arg.ends_with(".yaml")
        || arg.ends_with(".yml")
        || arg.ends_with(".json");
    if Path::new(arg).is_file() || looks_like_path {
        let text = std::fs::read_to_string(arg).map_err(|source| SpecError::Io {
            path: arg.to_string(),
            source,
        })?;
        return Ok((arg.to_string(), text));
    }
    if let Some(text) = presets::find(set, arg) {
        return Ok((format!("preset {arg}"), text.to_string()));
    }
    let hint = error::closest(arg, set.iter().map(|(n, _)| *n))
        .map(|c| format!(", did you mean `{c}`?"))
        .unwrap_or_default();
    Err(SpecError::UnknownPreset {
        kind,
        name: arg.to_string(),
        hint,
        list_cmd,
    })
}

/// Loads a model from a preset name, a YAML path, or a Hugging Face `config.json` (a `.json`
/// path, or any file holding a JSON object with `model_type` or `architectures`).
pub fn load_model(arg: &str) -> Result<ModelSpec, SpecError> {
    load_model_noted(arg).map(|i| i.model)
}

/// Like [`load_model`], with the approximations a Hugging Face import made (empty otherwise).
pub fn load_model_noted(arg: &str) -> Result<hf::Imported, SpecError> {
    let (file, text) = resolve(arg, presets::MODELS, "model", "models")?;
    // A `.json` file is a Hugging Face config unless it is a planner model written as JSON.
    let planner_json =
        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.get("arch").is_some());
    if hf::looks_like_hf(&text) || (file.ends_with(".json") && !planner_json) {
        return hf::import(&file, &text, &hf::HfOptions::default());
    }
    ModelSpec::from_yaml(&file, &text).map(|model| hf::Imported {
        model,
        notes: Vec::new(),
    })
}

/// Loads a device from a preset name or a YAML path.
pub fn load_device(arg: &str) -> Result<DeviceSpec, SpecError> {
    let (file, text) = resolve(arg, presets::DEVICES, "device", "clusters")?;
    DeviceSpec::from_yaml(&file, &text)
}

/// Loads a cluster from a preset name or a YAML path; its `gpu` may name a device preset.
pub fn load_cluster(arg: &str) -> Result<ClusterSpec, SpecError> {
    let (file, text) = resolve(arg, presets::CLUSTERS, "cluster", "clusters")?;
    let c = ClusterSpec::from_yaml(&file, &text, &|g| load_device(g))?;
    let problems = hardware::check_cluster(&c, &file);
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(SpecError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, _) in presets::MODELS {
            load_model(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for (name, _) in presets::DEVICES {
            load_device(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for (name, _) in presets::CLUSTERS {
            load_cluster(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn preset_names_match_their_files() {
        for (name, text) in presets::MODELS
            .iter()
            .chain(presets::CLUSTERS)
            .chain(presets::DEVICES)
        {
            assert!(text.contains(&format!("name: {name}\n")), "{name}");
        }
    }

    #[test]
    fn unknown_preset_suggests_closest() {
        let e = load_model("gpt3-175").unwrap_err();
        assert!(e.to_string().contains("did you mean `gpt3-175b`"), "{e}");
    }

    /// Parameter counts quoted by the model authors (issue 2's "Done when").
    #[test]
    fn published_parameter_counts() {
        let p = |n: &str| load_model(n).unwrap().params() / 1e9;
        // GPT-3: 174.6 B (see model::tests for the exact sum).
        assert!((p("gpt3-175b") - 174.6).abs() < 0.05);
        // Llama-2-70B: 80·(2·8192² + 2·8192·1024 + 3·8192·28672 + 2·8192) + 2·32000·8192 + 8192
        //   = 80·855_654_400 + 524_288_000 + 8192 = 68_976_648_192.
        assert_eq!(load_model("llama2-70b").unwrap().params(), 68_976_648_192.0);
        // Llama-3-8B: 32·218_112_000 + 2·128256·4096 + 4096 = 8_030_261_248.
        assert_eq!(load_model("llama3-8b").unwrap().params(), 8_030_261_248.0);
        // Mixtral 8x7B: 46.7 B total, 12.9 B active (Jiang et al. 2024 §2).
        assert!(
            (p("mixtral-8x7b") - 46.70).abs() < 0.01,
            "{}",
            p("mixtral-8x7b")
        );
        let mx = load_model("mixtral-8x7b").unwrap();
        assert!(
            (mx.active_params() / 1e9 - 12.88).abs() < 0.05,
            "{}",
            mx.active_params()
        );
        // BERT-large: 335 M (Devlin et al. report 340 M with a rounded count).
        assert!(
            (p("bert-large") - 0.335).abs() < 0.002,
            "{}",
            p("bert-large")
        );
    }
}
