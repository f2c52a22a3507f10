//! The module order of ARCHITECTURE.md: a module may use only modules before it, and every
//! source file says what it is for in a `//!` line.

use std::fs;
use std::path::{Path, PathBuf};

const ORDER: [&str; 11] = [
    "units", "spec", "graph", "calib", "cost", "search", "sim", "validate", "exec", "report", "cli",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Option<&'static str> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    ORDER.iter().copied().find(|m| *m == name)
}

#[test]
fn modules_use_only_earlier_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut violations = Vec::new();
    for f in &all {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let rank = ORDER.iter().position(|x| *x == m).unwrap();
        let text = fs::read_to_string(f).unwrap();
        for (i, used) in ORDER.iter().enumerate() {
            if i > rank
                && (text.contains(&format!("crate::{used}::"))
                    || text.contains(&format!("crate::{used}}}"))
                    || text.contains(&format!("crate::{{{used}")))
            {
                violations.push(format!("{} ({m}) uses {used}", f.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_file_says_what_it_is_for() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let missing: Vec<String> = all
        .iter()
        .filter(|f| {
            !fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}
