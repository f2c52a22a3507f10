//! The integration tests, in one test binary (ripgrep's habit): CLI behaviour, module
//! layering, validation against published runs. The one test that times the machine, issue
//! 7's cpu accuracy check, has a binary of its own (tests/cpu_accuracy) so that nothing runs
//! beside it.

mod calibrate;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod gemm;
mod hf;
mod ilp;
mod launch;
mod layering;
mod modules;
mod mtp;
mod report;
mod sim;
mod validation;
mod verify;
