//! The budget core: everything that decides money, testable without SLURM.

#![forbid(unsafe_code)]

pub mod budget;
pub mod config;
pub mod cost;
pub mod fields;
pub mod hooks;
pub mod job;
pub mod ledger;
pub mod money;
pub mod verify;
