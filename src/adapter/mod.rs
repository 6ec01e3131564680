// SPDX-License-Identifier: GPL-2.0-or-later
//! The SLURM adapter, in plain Rust: what the FFI glue (`crate::slurm`) copies out of
//! SLURM's structs (`fields`), one function per SLURM hook returning an action for the
//! glue to apply (`hooks`), the text SLURM's commands print (`snapshot`), and the
//! reconcile safety net that holds the ledger against what SLURM says exists
//! (`reconcile`). It turns SLURM's view into core requests and completions and maps
//! the core's decisions back to SLURM's codes; the money rules stay in `core`.

pub mod fields;
pub mod hooks;
pub mod reconcile;
pub mod snapshot;
