//! Shared helpers for integration tests: `mod support;` then `support::cluster::...`
//! (or include one file directly: `#[path = "support/cluster.rs"] mod cluster;`).

pub mod cluster;
