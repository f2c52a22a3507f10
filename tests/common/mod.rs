//! Helpers shared by the test binaries: running the built `planner`, temporary folders.
// Each binary uses its own subset of these.
#![allow(dead_code)]

use std::process::{Command, Output};

pub fn planner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planner"))
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// An empty folder `planner-<tag>-<pid>` under the temporary directory, for one test.
pub fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("planner-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` to `dir/name` and returns the path as an argument.
pub fn write_in(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Two "GPUs" in one node: the verify tests' layout; the cpu backend runs them as 2
/// thread-devices.
pub const TWO: &str = "name: two\ngpu: a100-sxm4-80gb\nnodes: 1\ngpus_per_node: 2\n\
                       intra_node: {bw_gbytes_s: 10}\n";

/// The JSON document a successful run printed.
pub fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}
