//! The command line: `run`, `crd`, `check` (docs/design.md §7).

pub mod check;
pub mod echo_hook;
pub mod selftest;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::validation::HookPolicy;

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
    Run(Box<crate::operator::RunArgs>),
    /// Development aid: a hook endpoint that answers 200 and logs each call (used by
    /// `make run`).
    EchoHook(echo_hook::EchoHookArgs),
    /// In-cluster check run by the chart's `helm test` hook: dry-run a valid ManagerConfig
    /// (must be admitted) and one the webhook must deny (exit 0 when both hold).
    Selftest(selftest::SelftestArgs),
}

/// Hook policy flags (docs/design.md §6), shared by `run` and `check`.
#[derive(Args, Debug, Clone)]
pub struct HookPolicyArgs {
    /// Allowed hook URL schemes (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http,https",
        env = "MO_HOOK_ALLOWED_SCHEMES"
    )]
    pub hook_allowed_schemes: Vec<String>,
    /// Allowed hook hosts: `*`, `*.suffix` or exact names (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        env = "MO_HOOK_ALLOWED_HOSTS"
    )]
    pub hook_allowed_hosts: Vec<String>,
    /// Allow loopback hook URLs (127.0.0.0/8, ::1, localhost). Link-local and cloud metadata
    /// addresses are refused whatever the flags say.
    #[arg(long, env = "MO_HOOK_ALLOW_LOOPBACK")]
    pub hook_allow_loopback: bool,
    /// More networks no hook may reach, as CIDRs or addresses (comma-separated), on top of the
    /// built-in list (docs/hooks-security.md), e.g. the node network. Judged on the URL's
    /// literal address and on every address a hook host name resolves to.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_network,
        env = "MO_HOOK_DENIED_NETWORKS"
    )]
    pub hook_denied_networks: Vec<ipnet::IpNet>,
    /// Allow workers that watch v1/Secret to call plain-http hooks (the Secrets' data then
    /// crosses the network unencrypted). Without it such a config is refused (HookRejected).
    #[arg(long, env = "MO_HOOK_ALLOW_INSECURE_SECRETS")]
    pub hook_allow_insecure_secrets: bool,
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"))
}

impl HookPolicyArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> HookPolicy {
        fn normalized(values: &[String]) -> Vec<String> {
            values
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        }
        HookPolicy {
            allowed_schemes: normalized(&self.hook_allowed_schemes),
            allowed_hosts: normalized(&self.hook_allowed_hosts),
            allow_loopback: self.hook_allow_loopback,
            denied_networks: self.hook_denied_networks.clone(),
            allow_insecure_secrets: self.hook_allow_insecure_secrets,
        }
    }
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
        Command::Selftest(args) => block_on_current_thread(selftest::run(&args)),
        Command::EchoHook(args) => block_on_current_thread(echo_hook::run(&args)),
        Command::Run(args) => {
            crate::operator::init_logging(args.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(crate::operator::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "manager-operator failed to start");
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Runs a small command's future on a single-threaded runtime: exit 0 on success, 1 (with the
/// error on stderr) otherwise.
fn block_on_current_thread<E: std::fmt::Display>(
    future: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
