// SPDX-License-Identifier: GPL-2.0-or-later
//! The budget core: the money rules, testable without SLURM or HTTP.
//!
//! Read it from the bottom up:
//! - `money` (integer micro-dollars, checked arithmetic), `config` (asbb.toml), `text`
//!   (names, user text and hold tokens), `safe_fs` (files opened without following links);
//! - `ledger`: the SQLite store and its `postings`, the only code that writes the journal;
//! - `pricing`: a job request, its cost, its metadata, and the holds learning sizes;
//! - `decisions`: what happens to money at submit, modify, release and settle, approval,
//!   corrections and `verify`;
//! - `grants` (awards, periods, agency reports), `usage` (chargeback by account, user,
//!   project, domain, grant, partition or QOS), `integration` (what the sister tools
//!   ask of asbb and tell it) and `alerts` (crossings people are told about, and each
//!   one's deliveries).

#![forbid(unsafe_code)]
pub mod alerts;
pub mod config;
pub mod decisions;
pub mod grants;
pub mod integration;
pub mod ledger;
pub mod money;
pub mod pricing;
pub mod safe_fs;
pub mod text;
pub mod usage;
