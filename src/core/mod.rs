// SPDX-License-Identifier: GPL-2.0-or-later
//! The budget core: everything that decides money, testable without SLURM.

#![forbid(unsafe_code)]
pub mod approval;
pub mod budget;
pub mod config;
pub mod corrections;
pub mod cost;
pub mod fields;
pub mod grants;
pub mod hooks;
pub mod integration; // issue 6
pub mod job;
pub mod learning; // issue 6
pub mod ledger;
pub mod metadata;
pub mod money;
pub mod report;
pub mod report_render;
pub mod safe_fs; // issue 17
pub mod settle; // issue 7
pub mod slurm_snapshot; // issue 7
pub mod verify;
