//! The command line: `run`, `crd`, `check`, `selftest` and `echo-hook` (docs/design.md §7).

pub mod args;
pub mod check;
pub mod echo_hook;
pub mod selftest;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures::TryFutureExt;

pub use args::{HookPolicyArgs, parse_network};

/// manager-operator: leader-elected managers declared by ManagerConfig resources, with every
/// startup failure surfaced as a Condition, an Event and a metric.
#[derive(Parser, Debug)]
#[command(name = "manager-operator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the ManagerConfig CustomResourceDefinition as YAML.
    Crd,
    /// Validate ManagerConfig YAML offline with the webhook's rules (exit 0 valid, 1 invalid,
    /// 2 unreadable).
    Check(check::CheckArgs),
    /// Run the operator: the ManagerConfig controller, the admission webhook, /metrics,
    /// /healthz and /readyz.
    Run(Box<args::RunArgs>),
    /// Development aid: a hook endpoint that answers 200 and logs each call (used by
    /// `make run`).
    EchoHook(echo_hook::EchoHookArgs),
    /// In-cluster check run by the chart's `helm test` hook: dry-run a valid ManagerConfig
    /// (must be admitted) and one the webhook must deny (exit 0 when both hold).
    Selftest(selftest::SelftestArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crate::api::crd_yaml() {
            Ok(yaml) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(yaml.as_bytes()).is_err() {
                    return ExitCode::from(2);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::from(2)
            }
        },
        Command::Check(args) => ExitCode::from(check::run(&args)),
        Command::Selftest(args) => block_on(
            tokio::runtime::Builder::new_current_thread(),
            selftest::run(&args),
        ),
        Command::EchoHook(args) => block_on(
            tokio::runtime::Builder::new_current_thread(),
            echo_hook::run(&args),
        ),
        Command::Run(args) => {
            crate::operator::init_logging(args.log_format.into());
            let run = async move { crate::operator::run(args.into_config()?).await }
                .inspect_err(|e| tracing::error!(error = %e, "manager-operator failed to start"));
            block_on(tokio::runtime::Builder::new_multi_thread(), run)
        }
    }
}

/// Runs a command's future on the runtime `builder` makes: exit 0 on success, 1 (with the
/// error on stderr) otherwise.
fn block_on<E: std::fmt::Display>(
    mut builder: tokio::runtime::Builder,
    future: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn committed_crd_matches_the_code() {
        let committed = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/managerconfig.yaml"
        ))
        .expect("crds/managerconfig.yaml exists (run `make crds`)");
        let generated = crate::api::crd_yaml().expect("CRD renders");
        assert!(
            committed == generated,
            "crds/managerconfig.yaml is out of date with src/api: run `make crds` and commit the result"
        );
    }
}
