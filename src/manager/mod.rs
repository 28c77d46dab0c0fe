//! The manager runtime (docs/design.md §3): Lease leader election with fencing, and a start that
//! cannot hang or leak.

pub mod election;
pub mod fence;
pub mod handover;
pub mod kube_store;
pub mod lease;
pub mod lease_hub;
#[cfg(test)]
pub(crate) mod memstore;
pub mod runtime;
