//! manager-operator: a Kubernetes operator that runs leader-elected managers declared by
//! `ManagerConfig` resources, and makes every startup failure visible (docs/design.md §1).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No unwrap/expect on anything that can fail at runtime; tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod authz;
pub mod backoff;
pub mod claims;
pub mod cli;
pub mod controller;
pub mod limits;
pub mod manager;
pub mod metrics;
pub mod operator;
pub mod placement;
pub mod probes;
pub mod tls;
pub mod validation;
pub mod webhook;
pub mod workers;
