// SPDX-License-Identifier: GPL-2.0-or-later
//! Shared helpers for integration tests, included one way: `mod support;` then
//! `support::cluster::...` (the test cluster, `cluster/`) and the helpers below.
#![allow(dead_code)]

pub mod cluster;
pub mod site;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built plugins (`ASBB_PLUGIN_DIR`, else target/plugins). `None` (the test skips)
/// when they are missing, except under `ASBB_E2E=1` (CI), where that panics.
pub fn plugin_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ASBB_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plugins"));
    if ["job_submit_asbb.so", "jobcomp_asbb.so", "prep_asbb.so"].iter().all(|so| dir.join(so).exists()) {
        return Some(dir);
    }
    if std::env::var("ASBB_E2E").as_deref() == Ok("1") {
        panic!("ASBB_E2E=1 but the plugins are not built in {} (run `make build`)", dir.display());
    }
    eprintln!("skipped: plugins not built in {} (run `make build`)", dir.display());
    None
}

/// `asbb-admin` for a cluster: its slurm.conf and the asbb.toml beside it, with no
/// ledger or clock override from the test's own environment.
pub fn admin_command(c: &cluster::Cluster) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_asbb-admin"));
    cmd.envs(c.env())
        .env("ASBB_CONFIG", c.etc_dir().join("asbb.toml"))
        .env_remove("ASBB_LEDGER")
        .env_remove("ASBB_NOW");
    cmd
}
