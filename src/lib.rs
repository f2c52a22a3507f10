//! planner: lays a large language model out on a GPU cluster before it is booked.
//!
//! Modules in data-flow order (each uses only those before it; a test enforces it):
//! `units < spec < graph < calib < cost < search < sim < validate < exec < report < cli`.
#![deny(missing_docs)]
// Divisibility is written `a % b == 0`, as the papers the formulas come from write it.
#![allow(clippy::manual_is_multiple_of)]

pub mod calib;
pub mod cli;
pub mod cost;
pub mod exec;
pub mod graph;
pub mod report;
pub mod search;
pub mod sim;
pub mod spec;
pub mod units;
pub mod validate;
