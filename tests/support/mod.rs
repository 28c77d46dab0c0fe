//! The shared test kit (`testkit/`, crate `manager_operator_testkit`) for the integration tests,
//! plus the one thing only a test crate of the operator package knows: the path of the operator
//! binary under test.
//!
//! Use from a test file with `mod support;`; everything of the kit is re-exported here.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

pub use manager_operator_testkit::*;

/// A builder for `manager-operator run` of the binary under test
/// (`CARGO_BIN_EXE_manager-operator`).
pub fn operator() -> OperatorBuilder {
    OperatorBuilder::new(env!("CARGO_BIN_EXE_manager-operator"))
}
