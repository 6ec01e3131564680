// SPDX-License-Identifier: GPL-2.0-or-later
//! What a job costs: the request (`job`), the cost model (`cost`), the metadata a job
//! carries (`metadata`), and the hold sizes learned from past runs (`learning`).

pub mod cost;
pub mod job;
pub mod learning;
pub mod metadata;
