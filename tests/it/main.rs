//! All integration tests, in one test binary (ripgrep's habit): CLI behaviour, module
//! layering, validation against published runs.

mod calibrate;
mod cli;
mod hf;
mod ilp;
mod launch;
mod layering;
mod report;
mod sim;
mod validation;
mod verify;
