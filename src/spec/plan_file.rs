//! Plans as JSON files, the shape `Plan` serialises to everywhere (`estimate --save-plan`
//! writes one, `--plan` reads one back): read field by field with every problem reported at
//! once and unknown keys named with the closest valid key, like model and cluster files.

use super::error::SpecError;
use super::plan::{
    AttentionImpl, Fp8Recipe, Framework, Plan, Recompute, RecomputeModules, Schedule,
    SplitAccounts, TpOverlap,
};
use super::yaml::Reader;
use crate::units::Dtype;

/// The largest size a plan field may take before it is treated as a typo.
const MAX_SIZE: u64 = 1 << 24;

impl Plan {
    /// The plan as pretty-printed JSON (what `--save-plan` writes and `--plan` reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serialises") + "\n"
    }

    /// Reads a plan written by [`Plan::to_json`] (or by hand). Required: dp, tp, pp, mbs,
    /// global_batch, seq_len; the rest default as on the command line (cp, ep, vpp 1; no
    /// recompute; zero 0; bf16; flash attention; interleaved schedule when vpp > 1, else 1f1b).
    pub fn from_json(file: &str, text: &str) -> Result<Plan, SpecError> {
        // A byte-order mark (editors on Windows write one) is no JSON value.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let doc = super::json::parse(text).map_err(|message| SpecError::Json {
            file: file.to_string(),
            message,
        })?;
        let mut problems = Vec::new();
        let plan = {
            let mut r = Reader::new(file, "", &doc, &mut problems);
            let plan = read_plan(&mut r);
            r.finish();
            plan
        };
        match plan {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(SpecError::Invalid(problems)),
        }
    }
}

/// Reads a plan file.
pub fn load_plan(path: &str) -> Result<Plan, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_string(),
        source,
    })?;
    Plan::from_json(path, &text)
}

fn read_plan(r: &mut Reader<'_>) -> Option<Plan> {
    let need = |r: &mut Reader<'_>, key| {
        r.req_count(key, MAX_SIZE, "add it (see `planner estimate --save-plan`)")
    };
    let (dp, tp, pp) = (need(r, "dp"), need(r, "tp"), need(r, "pp"));
    let (mbs, global_batch, seq_len) =
        (need(r, "mbs"), need(r, "global_batch"), need(r, "seq_len"));
    let cp = r.opt_count("cp", MAX_SIZE).unwrap_or(1);
    let ep = r.opt_count("ep", MAX_SIZE).unwrap_or(1);
    let etp = r.opt_count("etp", MAX_SIZE);
    let vpp = r.opt_count("vpp", MAX_SIZE).unwrap_or(1);
    let recompute = choice(r, "recompute", &Recompute::ALL.map(|x| (x.name(), x)));
    let zero = zero_stage(r);
    let sequence_parallel = r.opt_bool("sequence_parallel").unwrap_or(false);
    let overlap_grad_reduce = r.opt_bool("overlap_grad_reduce").unwrap_or(false);
    let grad_accumulation_fusion = r.opt_bool("grad_accumulation_fusion").unwrap_or(true);
    let fp8_param_gather = r.opt_bool("fp8_param_gather").unwrap_or(false);
    let p2p_scatter_gather = r.opt_bool("p2p_scatter_gather").unwrap_or(false);
    let loss_fusion = r.opt_bool("cross_entropy_loss_fusion").unwrap_or(false);
    let vocab_divisor = r
        .opt_count("make_vocab_size_divisible_by", MAX_SIZE)
        .unwrap_or(super::framework::MAKE_VOCAB_SIZE_DIVISIBLE_BY);
    let split_accounts = SplitAccounts {
        embedding: r
            .opt_bool("account_for_embedding_in_pipeline_split")
            .unwrap_or(false),
        loss: r
            .opt_bool("account_for_loss_in_pipeline_split")
            .unwrap_or(false),
    };
    let dtype = choice(r, "dtype", &Dtype::ALL.map(|x| (x.name(), x)));
    let fp8_recipe = choice(r, "fp8_recipe", &Fp8Recipe::ALL.map(|x| (x.name(), x)));
    let grad_reduce_dtype = choice(r, "grad_reduce_dtype", &Dtype::ALL.map(|x| (x.name(), x)));
    let schedules = [Schedule::Gpipe, Schedule::OneFOneB, Schedule::Interleaved];
    let schedule = choice(r, "schedule", &schedules.map(|x| (x.name(), x)));
    let attention = choice(
        r,
        "attention",
        &[
            ("flash", AttentionImpl::Flash),
            ("unfused", AttentionImpl::Unfused),
            ("flash-triton", AttentionImpl::FlashTriton),
        ],
    );
    let overlaps = [TpOverlap::None, TpOverlap::Backward, TpOverlap::Full];
    let tp_overlap = choice(r, "tp_overlap", &overlaps.map(|x| (x.name(), x)));
    let framework = choice(r, "framework", &Framework::ALL.map(|x| (x.name(), x)));
    let stage_layers = r.opt_counts("stage_layers", MAX_SIZE);
    let recompute_layers = r.opt_counts("recompute_layers", MAX_SIZE);
    let recompute_modules = modules(r);
    if recompute_modules.is_some_and(|m| !m.is_default()) && recompute != Some(Recompute::Selective)
    {
        r.problem(
            "recompute_modules",
            format!(
                "given with recompute {}: the modules are what selective recomputation re-runs",
                recompute.unwrap_or(Recompute::None).name()
            ),
            "set \"recompute\": \"selective\", or remove recompute_modules",
        );
    }
    Some(Plan {
        dp: dp?,
        tp: tp?,
        pp: pp?,
        cp,
        ep,
        etp,
        vpp,
        mbs: mbs?,
        global_batch: global_batch?,
        seq_len: seq_len?,
        recompute: recompute.unwrap_or(Recompute::None),
        recompute_modules: recompute_modules?,
        zero: zero.unwrap_or(0),
        sequence_parallel,
        overlap_grad_reduce,
        dtype: dtype.unwrap_or(Dtype::Bf16),
        schedule: schedule.unwrap_or(if vpp > 1 {
            Schedule::Interleaved
        } else {
            Schedule::OneFOneB
        }),
        attention: attention.unwrap_or(AttentionImpl::Flash),
        tp_overlap: tp_overlap.unwrap_or_default(),
        framework: framework.unwrap_or_default(),
        stage_layers,
        recompute_layers,
        grad_accumulation_fusion,
        grad_reduce_dtype,
        fp8_param_gather,
        fp8_recipe: fp8_recipe.unwrap_or_default(),
        loss_fusion,
        p2p_scatter_gather,
        split_accounts,
        vocab_divisor,
    })
}

/// `recompute_modules`: a list of Megatron-Core module names (default: the attention core).
fn modules(r: &mut Reader<'_>) -> Option<RecomputeModules> {
    let Some(v) = r.raw("recompute_modules") else {
        return Some(RecomputeModules::default());
    };
    let names = v
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str()).collect::<Option<Vec<&str>>>());
    let parsed = match names {
        Some(n) => RecomputeModules::parse(&n.join(",")),
        None => Err("expected a list of module names".to_string()),
    };
    match parsed {
        Ok(m) => Some(m),
        Err(e) => {
            r.problem(
                "recompute_modules",
                e,
                "write e.g. [\"core_attn\", \"mla_up_proj\"]",
            );
            None
        }
    }
}

/// An optional name out of `options`; anything else is a problem listing them.
fn choice<T: Copy>(r: &mut Reader<'_>, key: &'static str, options: &[(&str, T)]) -> Option<T> {
    let given = r.opt_str(key)?;
    match options.iter().find(|(n, _)| *n == given) {
        Some((_, v)) => Some(*v),
        None => {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            r.problem(
                key,
                format!("unknown value `{given}`"),
                format!("use one of {}", names.join(", ")),
            );
            None
        }
    }
}

fn zero_stage(r: &mut Reader<'_>) -> Option<u8> {
    let v = r.raw("zero")?;
    match v.as_u64() {
        Some(z) if z <= 3 => Some(z as u8),
        _ => {
            r.problem(
                "zero",
                format!("expected a ZeRO stage 0 to 3, found {v}"),
                "give 0, 1, 2 or 3",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_defaults() {
        let p = Plan::from_json(
            "p.json",
            r#"{"dp": 4, "tp": 2, "pp": 1, "mbs": 2, "global_batch": 64, "seq_len": 2048}"#,
        )
        .unwrap();
        assert_eq!(
            (p.cp, p.vpp, p.zero, p.schedule),
            (1, 1, 0, Schedule::OneFOneB)
        );
        assert_eq!(
            (p.recompute, p.dtype, p.attention),
            (Recompute::None, Dtype::Bf16, AttentionImpl::Flash)
        );
        let q = Plan {
            vpp: 2,
            pp: 2,
            schedule: Schedule::Interleaved,
            zero: 1,
            ..p
        };
        assert_eq!(Plan::from_json("q.json", &q.to_json()).unwrap(), q);
        // The reduction precision and the expert TP size are written only when set.
        assert!(!q.to_json().contains("grad_reduce_dtype") && !q.to_json().contains("etp"));
        assert_eq!(p.etp, None);
        let e = Plan {
            etp: Some(1),
            ..q.clone()
        };
        assert!(e.to_json().contains(r#""etp": 1"#));
        assert_eq!(Plan::from_json("e.json", &e.to_json()).unwrap(), e);
        let r = Plan {
            grad_reduce_dtype: Some(Dtype::Bf16),
            ..q
        };
        assert!(r.to_json().contains(r#""grad_reduce_dtype": "bf16""#));
        assert_eq!(Plan::from_json("r.json", &r.to_json()).unwrap(), r);
    }

    /// A byte-order mark before the JSON is skipped (it had read "expected value at line 1
    /// column 1").
    #[test]
    fn a_byte_order_mark_is_skipped() {
        let text = "\u{feff}{\"dp\": 8, \"tp\": 1, \"pp\": 1, \"mbs\": 1, \"global_batch\": 8, \"seq_len\": 2048}";
        assert_eq!(Plan::from_json("p.json", text).unwrap().dp, 8);
    }

    /// A plan of every framework reads back from its JSON: serde's spelling of a framework is
    /// the one the reader and the command line take (`deepspeed` had been written
    /// `deep-speed`, which `--plan` then refused).
    #[test]
    fn every_framework_round_trips_through_json() {
        for f in Framework::ALL {
            let p = Plan {
                framework: f,
                ..Plan::from_json(
                    "p.json",
                    r#"{"dp": 1, "tp": 1, "pp": 1, "mbs": 1, "global_batch": 8, "seq_len": 512}"#,
                )
                .unwrap()
            };
            let text = p.to_json();
            assert!(
                text.contains(&format!(r#""framework": "{}""#, f.name())),
                "{text}"
            );
            assert_eq!(Plan::from_json("p.json", &text).unwrap(), p, "{}", f.name());
        }
    }

    #[test]
    fn every_problem_at_once_with_unknown_keys() {
        let e = Plan::from_json(
            "bad.json",
            r#"{"dp": 0, "tp": 2, "mbs": 1, "global_batch": 8, "seq_len": 64,
                "recompute": "most", "zero": 5, "micro_batch": 2}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.problems().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["dp", "pp", "recompute", "zero", "micro_batch"]);
        assert!(
            e.to_string().contains("use one of none, selective, full"),
            "{e}"
        );
    }
}
