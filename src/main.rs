//! The `manager-operator` binary: everything lives in the library; see `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    manager_operator::cli::main()
}
