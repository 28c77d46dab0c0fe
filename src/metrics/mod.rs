//! Prometheus metrics (docs/design.md §5). Labels are bounded: per ManagerConfig
//! (namespace/name), per worker, per stable reason, never per object or per error text.
//! Documented in `docs/metrics.md`.
//!
//! * [`registry`]: [`Metrics`], every metric in one registry, and their text exposition;
//! * [`kube_api`]: the Kubernetes client layer that counts and times every API request;
//! * [`server`]: the `/metrics` route and the plain HTTP server (also used for the probes);
//! * [`auth`]: the TokenReview/SubjectAccessReview layer of the secure server;
//! * [`secure`]: `/metrics` over TLS behind that layer (`--metrics-secure`).

pub mod auth;
pub mod kube_api;
pub mod registry;
pub mod secure;
pub mod server;

pub use registry::{ADMISSION_ERROR_CODES, HANDOVER_REASONS, Metrics, REVISION};
