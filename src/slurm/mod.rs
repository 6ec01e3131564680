// SPDX-License-Identifier: GPL-2.0-or-later
//! The SLURM glue (feature `slurm`): bindgen output (`sys`), and a thin safe layer
//! that copies SLURM's structs into the core's plain types and applies the core's
//! actions back. Nothing here decides money.

pub mod host;
pub mod job_desc;
pub mod job_list;
pub mod job_record;
pub mod plugin;
pub mod sweeper;
pub mod sys;
