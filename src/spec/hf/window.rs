//! Which layers of an imported model slide their attention, and over how many keys: the
//! window each family's classes apply (`sliding_window`, `use_sliding_window`,
//! `max_window_layers`, `layer_types`), with the class defaults transformers loads.

use super::Family;
use super::fields::Fields;
use crate::spec::model::{MAX_LAYERS, MAX_SEQ, SlidingWindow, WindowLayers};
use serde_json::Value;

/// The sliding attention window, where transformers' class applies one: Mistral's and
/// Mixtral's `sliding_window` (null: none); Qwen2's only with `use_sliding_window` and on
/// some layers (`max_window_layers` below the layer count: layers from it on slide). Llama's
/// class ignores the key.
///
/// A key the config leaves out takes its configuration class's default, as transformers
/// would load it: `MistralConfig` and `Qwen2Config` default `sliding_window` to 4096, and
/// `Qwen2Config` `max_window_layers` to 28; `MixtralConfig` has no window by default. (An
/// explicit `null` is no window.) Where a Qwen config writes `layer_types` (transformers
/// 4.53 on), that list says which layers slide, over `max_window_layers`.
pub(super) fn sliding_window(f: &mut Fields<'_>, fam: Family) -> Option<SlidingWindow> {
    let absent = |f: &Fields<'_>, key: &str| !f.map.contains_key(key);
    let mut layers = WindowLayers::All;
    let listed = match fam {
        Family::Qwen2 | Family::Qwen2Moe | Family::Qwen3 | Family::Qwen3Moe | Family::GptOss => {
            let n_layers = f.count(&["num_hidden_layers"], MAX_LAYERS);
            layer_types(f, n_layers)
        }
        _ => None,
    };
    let on = match fam {
        // `GptOssAttention` slides wherever `layer_types` says: by default every other layer
        // from layer 0 (`GptOssConfig`), one layer in 2 full.
        Family::GptOss => {
            layers = match listed {
                Some(Some(l)) => l,
                Some(None) => return None,
                // (One layer alone slides.)
                None if f.count(&["num_hidden_layers"], MAX_LAYERS) == Some(1) => WindowLayers::All,
                None => WindowLayers::FullEvery(2),
            };
            true
        }
        _ if listed.is_some() => {
            let use_window = f.flag("use_sliding_window") == Some(true);
            match listed {
                Some(Some(l)) if use_window => {
                    layers = l;
                    true
                }
                _ => false,
            }
        }
        Family::Mistral | Family::Mixtral => true,
        // `Qwen3MoeAttention` slides in every layer when `use_sliding_window`.
        Family::Qwen3Moe => f.flag("use_sliding_window") == Some(true),
        // Qwen3's and Qwen2-MoE's classes read the window as Qwen2's: from layer
        // `max_window_layers` on, when `use_sliding_window`.
        Family::Qwen2 | Family::Qwen2Moe | Family::Qwen3 => {
            let n_layers = f.count(&["num_hidden_layers"], MAX_LAYERS);
            // 0 is valid: every layer slides.
            let from = match f.map.get("max_window_layers") {
                None | Some(Value::Null) => Some(28),
                Some(v) => {
                    match v.as_u64().filter(|n| *n <= MAX_LAYERS) {
                        Some(n) => Some(n),
                        None => {
                            let msg = format!(
                                "expected a whole number from 0 to {MAX_LAYERS}, found {v}"
                            );
                            f.bad("max_window_layers", &msg, "correct it in config.json to the value the model was published with");
                            None
                        }
                    }
                }
            };
            if let Some(first) = from.filter(|&m| m > 0) {
                layers = WindowLayers::From(first);
            }
            f.flag("use_sliding_window") == Some(true)
                && n_layers.is_some_and(|l| from.is_none_or(|m| m < l))
        }
        _ => false,
    };
    let size = match fam {
        _ if !on => None,
        Family::Mistral | Family::Qwen2 | Family::Qwen2Moe | Family::Qwen3 | Family::Qwen3Moe
            if absent(f, "sliding_window") =>
        {
            Some(4096)
        }
        Family::GptOss if absent(f, "sliding_window") => Some(128),
        _ => f.count(&["sliding_window"], MAX_SEQ),
    };
    size.map(|size| SlidingWindow { size, layers })
}

/// transformers' `layer_types`, where the config writes it: `"sliding_attention"` or
/// `"full_attention"` per layer. `Some(None)`: no layer slides (or the list is bad, which is
/// recorded); `Some(Some(pattern))`: every layer, all but every n-th, or those from one on —
/// the patterns planner prices; another pattern is refused naming the key.
fn layer_types(f: &mut Fields<'_>, n_layers: Option<u64>) -> Option<Option<WindowLayers>> {
    let v = f.map.get("layer_types").filter(|v| !v.is_null())?.clone();
    let kinds: Option<Vec<bool>> = v.as_array().and_then(|a| {
        a.iter()
            .map(|k| match k.as_str() {
                Some("sliding_attention") => Some(true),
                Some("full_attention") => Some(false),
                _ => None,
            })
            .collect()
    });
    let Some(slides) = kinds else {
        f.bad(
            "layer_types",
            "expected a list of \"sliding_attention\" and \"full_attention\"",
            "fix the list",
        );
        return Some(None);
    };
    if let Some(n) = n_layers.filter(|&n| n != slides.len() as u64) {
        let msg = format!("{} entries for {n} layers", slides.len());
        f.bad("layer_types", &msg, "give one entry per layer");
        return Some(None);
    }
    let pattern = WindowLayers::from_slides(&slides);
    if pattern.is_none() {
        f.bad(
            "layer_types",
            "a pattern of sliding and full layers planner does not price",
            "planner prices a window on every layer, on all but every n-th layer, or on the layers from one on",
        );
        return Some(None);
    }
    pattern
}
