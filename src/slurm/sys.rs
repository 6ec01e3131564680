// SPDX-License-Identifier: GPL-2.0-or-later
//! Raw bindgen output over SLURM's headers (see build.rs for what is allowlisted).
//! Only the rest of `crate::slurm` touches these types.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all, clippy::pedantic, unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/slurm_bindings.rs"));
