//! Preset models, devices and clusters, embedded in the binary so `--model gpt3-175b` works
//! from any directory. The same files live in models/ and hardware/ for users to copy.

/// A preset: its name and YAML text.
pub type Preset = (&'static str, &'static str);

macro_rules! presets {
    ($dir:literal: $($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../", $dir, "/", $name, ".yaml")))),*]
    };
}

/// Model presets (models/*.yaml).
pub const MODELS: &[Preset] = presets!("models":
    "bert-large", "gpt2-xl", "gpt3-175b",
    "gpt-1.7b", "gpt-3.6b", "gpt-7.5b", "gpt-18b", "gpt-39b", "gpt-76b", "gpt-145b",
    "gpt-310b", "gpt-530b", "gpt-1t",
    "llama2-7b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b", "mixtral-8x7b",
    "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-120b",
);

/// Device presets (hardware/gpus/*.yaml).
pub const DEVICES: &[Preset] = presets!("hardware/gpus":
    "a100-sxm4-40gb", "a100-sxm4-80gb", "h100-sxm5-80gb", "h200-sxm-141gb", "b200-sxm-180gb",
);

/// Cluster presets (hardware/*.yaml).
pub const CLUSTERS: &[Preset] = presets!("hardware":
    "a100x8", "a100-4x2", "a100-80g-x1024", "a100-80g-x4096", "h100x8", "h100-x1024", "h200x8",
    "b200x8", "b200-x1024",
);

/// The YAML text of preset `name` in `set`.
pub fn find(set: &[Preset], name: &str) -> Option<&'static str> {
    set.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
