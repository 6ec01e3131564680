// SPDX-License-Identifier: GPL-2.0-or-later
//! asbb: money budgets for SLURM clusters that burst into AWS.
//!
//! The submit path runs downhill: `plugin/` (the exported symbols) -> `slurm` (the FFI
//! glue, feature `slurm`) -> `adapter` (SLURM's fields and hooks in plain Rust) ->
//! `core` (the money rules: pricing, decisions, the ledger). `cli` and `api` are the two
//! front doors for people and the sister tools; they share `shape` (a job as people type
//! it), `render` (reports as text, HTML and SVG) and `system` (the clock, the user
//! database). `core` imports none of the others.

#![cfg_attr(not(feature = "slurm"), forbid(unsafe_code))]

pub mod adapter;
#[cfg(feature = "api")]
pub mod alerts;
#[cfg(feature = "api")]
pub mod api;
pub mod cli;
pub mod core;
pub mod render;
pub mod shape;
#[cfg(feature = "slurm")]
pub mod slurm;
pub mod system;
