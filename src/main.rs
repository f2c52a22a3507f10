//! The `planner` binary: everything lives in the library; `planner::cli` wires it up.
fn main() -> std::process::ExitCode {
    planner::cli::main()
}
