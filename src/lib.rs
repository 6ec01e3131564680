// SPDX-License-Identifier: GPL-2.0-or-later
//! asbb: money budgets for SLURM clusters that burst into AWS.
//!
//! `core` is pure Rust (no SLURM types, no unsafe): money, the cost model, the
//! ledger, decisions and reports. `slurm` (feature `slurm`) is the thin glue the
//! plugin crates in `plugin/` use to read SLURM's structs and talk to slurmctld.
//! `cli` and `api` are the two front doors; they share `shape` (a job as people type
//! it) and `system` (the clock, the user database). Imports run one way only:
//! bin -> cli -> api -> core <- slurm.

#![cfg_attr(not(feature = "slurm"), forbid(unsafe_code))]

#[cfg(feature = "api")]
pub mod api; // issue 6: `asbb-admin serve`
pub mod cli;
pub mod core;
pub mod shape;
#[cfg(feature = "slurm")]
pub mod slurm;
pub mod system;
