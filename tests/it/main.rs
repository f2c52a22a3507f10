//! All integration tests, in one test binary (ripgrep's habit): CLI behaviour, module
//! layering, validation against published runs.

mod cli;
mod ilp;
mod layering;
mod validation;
