//! The manager runtime (SPEC §3): Lease leader election with fencing, and a start that
//! cannot hang or leak.

pub mod election;
pub mod fence;
pub mod kube_store;
pub mod lease;
#[cfg(test)]
pub(crate) mod memstore;
pub mod runtime;
