//! The `planner` binary: parses the command line and hands over to `planner::cli`.
fn main() {}
