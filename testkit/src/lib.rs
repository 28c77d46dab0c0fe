//! The shared test kit of manager-operator: everything the integration tests (`tests/`) and the
//! bench harness (`bench/`) need around the operator, in one place.
//!
//! * [`cluster`] – the real local control plane (etcd + kube-apiserver + kube-controller-manager
//!   started by `hack/cluster.sh`) found through the environment `hack/with-cluster.sh` exports,
//!   kube clients, `kubectl`, fresh namespaces, the CRD;
//! * [`private_cluster`] – a control plane of one test's own ([`PrivateCluster`]), for fault
//!   injection (etcd or kube-apiserver stopped and started) and load tests;
//! * [`wait`] – [`TIMEOUT`] and [`wait_for`], the one poll-with-timeout loop;
//! * [`net`] – free loopback ports, the loopback HTTP client, log tails;
//! * [`operator`] – `manager-operator run` as a child process ([`OperatorBuilder`]);
//! * [`hook`] – a recording hook server ([`RecordingHook`]: calls, fencing checks, scripted
//!   replies, in-flight counts);
//! * [`config`] – typed ManagerConfig builders over [`manager_operator::api`];
//! * [`rbac`] – ServiceAccounts, Roles and RoleBindings for the workers' service accounts;
//! * [`prom`] – a Prometheus text exposition parser.
//!
//! Integration tests use it through `tests/support/mod.rs` (`mod support;`), which re-exports
//! this crate and adds what only a test crate of the operator package can know: the path of the
//! operator binary (`CARGO_BIN_EXE_manager-operator`).
//!
//! When the control plane's environment is missing the helpers panic with an explanation:
//! integration tests never skip.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod hook;
pub mod net;
pub mod operator;
pub mod private_cluster;
pub mod prom;
pub mod rbac;
pub mod wait;

pub use cluster::{
    CRD_NAME, admin_client, apply_yaml, client_from, cluster_dir, config_from, ensure_crd,
    fresh_namespace, kubeconfig_path, kubectl, kubectl_as, kubectl_bin, kubectl_ok, repo_root,
    unprivileged_client, unprivileged_kubeconfig_path,
};
pub use config::{ManagerConfigBuilder, WorkerBuilder};
pub use hook::{Call, RecordingHook, Reply};
pub use net::{free_addr, free_port, http_get, log_tail, loopback_http};
pub use operator::{Operator, OperatorBuilder};
pub use private_cluster::{PrivateCluster, wait_api_ready};
pub use wait::{TIMEOUT, wait_for};
