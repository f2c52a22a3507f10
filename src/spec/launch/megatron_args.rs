//! Reading a Megatron-LM command line: shell-style words (quotes, backslash-newlines, `#`
//! comments, a leading `python … pretrain_gpt.py`), `--name value` and `--name=value` pairs,
//! and what planner does with every argument it knows (`megatron_flags`). An argument planner
//! does not know is an error: it might change the plan.

use super::Collect;
use super::megatron_flags::{LIST_ARGS, Role, known_names, lookup};
use crate::spec::error::closest;

/// A parsed command line: arguments in order; the last of a repeated one wins (argparse).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArgMap {
    /// `(name, value)` in command-line order.
    pub args: Vec<(String, Option<String>)>,
    /// The words before the training script (`torchrun --nproc_per_node 8 … pretrain_gpt.py`).
    pub launcher: Vec<String>,
}

impl ArgMap {
    /// The value of the last `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether `name` appears.
    pub fn has(&self, name: &str) -> bool {
        self.args.iter().any(|(n, _)| n == name)
    }
}

/// Splits `text` into words like a POSIX shell does for a plain command line: whitespace,
/// single and double quotes, backslash escapes and line continuations, `#` comments.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '#' if cur.is_none() => while chars.next_if(|c| *c != '\n').is_some() {},
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(c) => cur.get_or_insert_with(String::new).push(c),
            },
            '\'' | '"' => {
                let word = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(c) if c == ch => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated {ch} quote")),
                    }
                }
            }
            c if c.is_whitespace() => words.extend(cur.take()),
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    Ok(words)
}

/// Reads a Megatron-LM command line into arguments, recording in `c` every word it cannot
/// take (unknown or unsupported arguments, missing values, unexpanded variables) and a warning
/// for each argument priced without. `None` (recorded) where the line does not split into
/// words (an open quote): there are no arguments to read.
pub(crate) fn read(text: &str, c: &mut Collect) -> Option<ArgMap> {
    let words = match split_words(text) {
        Ok(w) => w,
        Err(e) => {
            c.refuse("--megatron-args", e, "close the quote");
            return None;
        }
    };
    // A launcher prefix such as `torchrun --nproc_per_node 8 … pretrain_gpt.py`.
    let start = words
        .iter()
        .rposition(|w| w.ends_with(".py"))
        .map_or(0, |i| i + 1);
    let mut out = ArgMap {
        args: Vec::new(),
        launcher: words[..start].to_vec(),
    };
    let (mut ignored, mut i) = (Vec::new(), start);
    while i < words.len() {
        let Some((name, value)) = next_arg(&words, &mut i, c) else {
            continue;
        };
        // argparse keeps the last of a repeated argument (scripts append overrides); one given
        // two different values is said, not taken silently.
        if let Some(v0) = out.get(&name)
            && value.as_deref().is_some_and(|v| v != v0)
        {
            c.warn(format!(
                "{name} is given twice ({v0}, then {}): Megatron-LM's argparse keeps the last",
                value.as_deref().unwrap_or_default()
            ));
        }
        if name == "--moe-token-dispatcher-type" && value.as_deref() != Some("alltoall") {
            c.warn(format!(
                "{name} {}: not modelled (tokens are priced as Megatron-Core's all-to-all \
                 dispatcher moves them; the default `allgather` gathers every token over the \
                 TP × EP ranks, ep/top_k times the traffic)",
                value.as_deref().unwrap_or_default()
            ));
        }
        match lookup(&name).map(|(_, r)| r) {
            Some(Role::Plan | Role::Model) => out.args.push((name, value)),
            Some(Role::Ignore) => ignored.push(name),
            Some(Role::NotModelled(why)) => {
                c.warn(format!("{name}: not modelled ({why})"));
                out.args.push((name, value));
            }
            Some(Role::Unsupported(why)) => c.refuse(
                &name,
                format!("cannot be priced: {why}"),
                "remove it to price the plan without it",
            ),
            None => unknown(c, &name),
        }
    }
    if !ignored.is_empty() {
        c.warn(format!(
            "ignored (they do not change what is priced): {}",
            ignored.join(" ")
        ));
    }
    Some(out)
}

/// The argument at `words[*i]` with its value, advancing `*i`; `None` (recorded in `c`) when
/// the words there are not an argument planner can read.
fn next_arg(words: &[String], i: &mut usize, c: &mut Collect) -> Option<(String, Option<String>)> {
    let unexpanded = |c: &mut Collect, field: &str, v: &str| {
        c.refuse(
            field,
            format!("`{v}` holds an unexpanded shell variable"),
            "pass the expanded command line (e.g. echo it first)",
        )
    };
    let w = &words[*i];
    *i += 1;
    if w.contains('$') {
        unexpanded(c, "--megatron-args", w);
        return None;
    }
    let Some(body) = w.strip_prefix("--") else {
        // A value after a switch (`--sequence-parallel true`) is the likeliest stray word.
        let after_switch = (*i >= 2)
            .then(|| words[*i - 2].as_str())
            .filter(|p| lookup(p).is_some_and(|(v, _)| !v));
        match after_switch {
            Some(p) => c.refuse(
                p,
                format!("takes no value, but `{w}` follows it"),
                format!("write {p} to set it, or leave it out to keep it off"),
            ),
            None => c.refuse(
                "--megatron-args",
                format!("stray word `{w}`"),
                "give arguments as --name value",
            ),
        }
        return None;
    };
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
        None => (w.clone(), None),
    };
    let next_is_value = words.get(*i).is_some_and(|n| !n.starts_with("--"));
    let known = lookup(&name);
    let wants_value = known.map_or(next_is_value, |(v, _)| v);
    let value = match (wants_value, inline) {
        // argparse refuses a value for a switch (`--sequence-parallel=false` is no "off").
        (false, Some(v)) if known.is_some() => {
            c.refuse(
                &name,
                format!("takes no value, but `={v}` was given"),
                format!("write {name} to set it, or leave it out to keep it off"),
            );
            return None;
        }
        (_, Some(v)) => Some(v),
        (true, None) if next_is_value => {
            *i += 1;
            let mut v = words[*i - 1].clone();
            // argparse `nargs="*"`: every word up to the next argument is one more value.
            while LIST_ARGS.contains(&name.as_str())
                && let Some(more) = words.get(*i).filter(|n| !n.starts_with("--"))
            {
                v = format!("{v} {more}");
                *i += 1;
            }
            Some(v)
        }
        (true, None) => {
            c.refuse(&name, "needs a value", format!("write {name} VALUE"));
            return None;
        }
        (false, None) => None,
    };
    if let Some(v) = value.as_deref().filter(|v| v.contains('$')) {
        unexpanded(c, &name, v);
        return None;
    }
    Some((name, value))
}

/// Ranks a torchrun prefix starts (`--nproc_per_node` × `--nnodes`), when it says: not for an
/// elastic node range (`--nnodes=1:2`), whose world size is decided at launch.
pub fn launcher_world(launcher: &[String]) -> Option<u64> {
    let raw = |names: &[&str]| -> Option<&str> {
        launcher.iter().enumerate().find_map(|(i, w)| {
            let (name, inline) = w
                .split_once('=')
                .map_or((w.as_str(), None), |(n, v)| (n, Some(v)));
            if !names.contains(&name) {
                return None;
            }
            inline.or(launcher.get(i + 1).map(String::as_str))
        })
    };
    let per_node: u64 = raw(&["--nproc_per_node", "--nproc-per-node"])?
        .parse()
        .ok()?;
    let nodes: u64 = match raw(&["--nnodes"]) {
        None => 1,
        Some(v) => v.parse().ok()?,
    };
    Some(per_node * nodes)
}

fn unknown(c: &mut Collect, name: &str) {
    let hint = closest(name, known_names())
        .map(|n| format!("did you mean `{n}`? "))
        .unwrap_or_default();
    c.refuse(
        name,
        "unknown Megatron-LM argument: it might change the plan",
        format!("{hint}remove it if it changes neither the layout, the memory nor the speed"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_like_a_shell() {
        let w = split_words("python pretrain_gpt.py \\\n  --a 1 # note\n --b='x y' \"--c\" 2\n")
            .unwrap();
        assert_eq!(
            w,
            [
                "python",
                "pretrain_gpt.py",
                "--a",
                "1",
                "--b=x y",
                "--c",
                "2"
            ]
        );
        assert!(split_words("--a 'oops").is_err());
    }

    /// argparse keeps the last of a repeated argument; two different values are said (QA:
    /// `--tensor-model-parallel-size 2 … 4` had been taken as 4 silently), the same value
    /// twice is not.
    #[test]
    fn a_repeated_argument_keeps_the_last_and_says_so() {
        let mut c = Collect::new("--megatron-args");
        let m = read(
            "--tensor-model-parallel-size 2 --micro-batch-size 1 --tensor-model-parallel-size 4 \
             --micro-batch-size 1",
            &mut c,
        )
        .unwrap();
        assert_eq!(m.get("--tensor-model-parallel-size"), Some("4"));
        let said: Vec<&String> = c.warnings.iter().filter(|w| w.contains("twice")).collect();
        assert_eq!(said.len(), 1, "{:?}", c.warnings);
        assert!(said[0].contains("(2, then 4)"), "{}", said[0]);
    }

    #[test]
    fn torchrun_prefix_gives_the_world_size() {
        let w = |t: &str| launcher_world(&split_words(t).unwrap());
        assert_eq!(
            w("torchrun --nproc_per_node 8 --nnodes=4 --node_rank 0"),
            Some(32)
        );
        assert_eq!(w("torchrun --nproc-per-node=4"), Some(4));
        assert_eq!(w("python"), None);
        // An elastic range fixes no world size (it was read as one node).
        assert_eq!(w("torchrun --nproc_per_node 8 --nnodes=1:2"), None);
    }

    #[test]
    fn unknown_unsupported_and_variables_are_refused_at_once() {
        let mut c = Collect::new("--megatron-args");
        let m = read(
            "torchrun --nproc_per_node 8 pretrain_gpt.py --tensor-model-parallel-size=2 \
             --lr 1e-4 --micro-batch-sise 2 --cpu-offloading --data-path $DATA --fp16",
            &mut c,
        )
        .unwrap();
        assert_eq!(m.get("--tensor-model-parallel-size"), Some("2"));
        assert!(m.has("--fp16") && !m.has("--lr"));
        let (problems, warnings) = c.into_parts();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["--micro-batch-sise", "--cpu-offloading", "--data-path"]
        );
        assert!(
            problems[0]
                .fix
                .contains("did you mean `--micro-batch-size`"),
            "{}",
            problems[0]
        );
        assert_eq!(
            warnings,
            ["ignored (they do not change what is priced): --lr"]
        );
    }
}
