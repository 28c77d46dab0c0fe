//! `mo-bench`: the benchmark harness of manager-operator. Each subcommand runs one
//! scenario against an already started local control plane (`hack/cluster.sh up`, with the CRD,
//! the namespace and its RBAC installed: see `bench/run.sh`) and writes raw CSV; `report`
//! turns the CSV files into `docs/benchmarks.md`.

mod admission;
mod bare;
mod dispatch;
mod failover;
mod hook;
mod peer_admission;
mod peer_failover;
mod peer_memory;
mod peers;
mod report;
mod scale;
mod scaleout;
mod seed;
mod surfacing;
mod util;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mo-bench", about = "manager-operator benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Admin kubeconfig of the cluster (DIR/kubeconfig of hack/cluster.sh).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The operator binary (a release build).
    #[arg(long)]
    operator_bin: PathBuf,
    /// Where operator logs and scratch files go.
    #[arg(long)]
    log_dir: PathBuf,
    /// Where the CSV files go.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// Namespace the scenario works in (must exist, with RBAC for its default ServiceAccount
    /// to get/list/watch ConfigMaps).
    #[arg(long, default_value = "bench")]
    namespace: String,
}

impl Common {
    fn opts(&self) -> util::OperatorOpts {
        util::OperatorOpts {
            bin: self.operator_bin.clone(),
            kubeconfig: self.kubeconfig.clone(),
            log_dir: self.log_dir.clone(),
        }
    }
}

fn levels(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenario 1: kill -9 the leader; time to the new leader's first hook call.
    Failover {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20)]
        trials: usize,
    },
    /// Scenario 2: SIGTERM the leader (releaseOnCancel); time to the new leader's first hook call.
    Handoff {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20)]
        trials: usize,
    },
    /// Scenario 3: broken configs with the webhook off; create -> Ready=False reason seen by a watch.
    Surfacing {
        #[command(flatten)]
        common: Common,
        /// Configs per reason.
        #[arg(long, default_value_t = 100)]
        configs: usize,
    },
    /// Scenario 4: webhook latency, direct HTTPS load and through the API server.
    Admission {
        #[command(flatten)]
        common: Common,
        /// Concurrency levels.
        #[arg(long, default_value = "1,16,64")]
        levels: String,
        /// Measured seconds per level and review kind.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Warm-up seconds per level.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Objects sent through kubectl (dry run).
        #[arg(long, default_value_t = 400)]
        burst: usize,
        /// Parallel kubectl processes.
        #[arg(long, default_value_t = 4)]
        kubectl_parallel: usize,
        /// kubectl binary.
        #[arg(long, default_value = "kubectl")]
        kubectl: String,
        /// `perf record` the operator during an extra, unreported run of valid reviews at the highest
        /// level into this file.
        #[arg(long)]
        perf_out: Option<PathBuf>,
    },
    /// Scenario 5: N ManagerConfigs on R replicas (one membership group).
    Scale {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        configs: usize,
        /// Operator replicas sharing the configs.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Run number of this (configs, replicas) case (repeated runs keep their own rows).
        #[arg(long, default_value_t = 1)]
        run: usize,
        #[arg(long, default_value_t = 30.0)]
        settle: f64,
        #[arg(long, default_value_t = 60.0)]
        window: f64,
        #[arg(long)]
        apiserver_pid: Option<u32>,
        #[arg(long)]
        etcd_pid: Option<u32>,
        /// `perf record` the operator over a second steady-state window into this file.
        #[arg(long)]
        perf_out: Option<PathBuf>,
    },
    /// Scenario 7 (docs/placement.md): placement over R replicas, a replica joining, SIGTERM and SIGKILL.
    Scaleout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 300)]
        configs: usize,
        /// Replicas before the join.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Seconds after the joining replica's start at which its share is read.
        #[arg(long, default_value_t = 60.0)]
        join_window: f64,
        /// resyncPeriod of every worker (each leader calls the hook this often).
        #[arg(long, default_value = "1s")]
        resync: String,
        /// leaseDuration, whole seconds.
        #[arg(long, default_value_t = 15)]
        lease_duration: u64,
        #[arg(long, default_value = "10s")]
        renew_deadline: String,
        #[arg(long, default_value = "2s")]
        retry_period: String,
        /// Trials per signal (SIGTERM, then SIGKILL).
        #[arg(long, default_value_t = 3)]
        trials: usize,
        /// Least seconds between all Ready and reading the initial distribution.
        #[arg(long, default_value_t = 15.0)]
        settle: f64,
    },
    /// Scenario 6: dispatch throughput (operator and bare controller).
    Dispatch {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        #[arg(long, default_value = "1,8,32")]
        levels: String,
        /// Implementations, comma-separated: operator, bare.
        #[arg(long, default_value = "operator,bare")]
        impls: String,
        /// `perf record` the operator in an extra, unreported run at this concurrency (needs --perf-out).
        #[arg(long)]
        perf_concurrency: Option<usize>,
        /// perf.data path.
        #[arg(long)]
        perf_out: Option<PathBuf>,
    },
    /// the seed failure: leaseDuration < renewDeadline given to controller-runtime
    /// before v0.19, to the current release, and to the operator.
    Seed {
        #[command(flatten)]
        common: Common,
        /// cr-manager built against controller-runtime before v0.19.
        #[arg(long)]
        cr_old: PathBuf,
        /// Its controller-runtime version (for the report).
        #[arg(long)]
        cr_old_version: String,
        /// cr-manager built against the current controller-runtime.
        #[arg(long)]
        cr_new: PathBuf,
        #[arg(long)]
        cr_new_version: String,
        /// Seconds a cr-manager is given to exit.
        #[arg(long, default_value_t = 30.0)]
        window: f64,
        #[arg(long, default_value_t = 3)]
        trials: usize,
    },
    /// failover and handoff, the operator and two controller-runtime replicas
    /// alternating (SIGKILL and SIGTERM each round).
    PeerFailover {
        #[command(flatten)]
        common: Common,
        /// cr-manager built against the current controller-runtime.
        #[arg(long)]
        cr_manager: PathBuf,
        #[arg(long)]
        cr_version: String,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// the operator's webhook and a controller-runtime webhook under the same load.
    PeerAdmission {
        #[command(flatten)]
        common: Common,
        /// cr-webhook built against the current controller-runtime.
        #[arg(long)]
        cr_webhook: PathBuf,
        #[arg(long)]
        cr_version: String,
        #[arg(long, default_value = "1,16,64")]
        levels: String,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Runs of each implementation per (review, concurrency), alternating.
        #[arg(long, default_value_t = 2)]
        reps: usize,
    },
    /// the operator's marginal RSS per manager against controller-runtime processes.
    PeerMemory {
        #[command(flatten)]
        common: Common,
        /// cr-manager built against the current controller-runtime.
        #[arg(long)]
        cr_manager: PathBuf,
        #[arg(long)]
        cr_version: String,
        /// Manager counts, comma-separated.
        #[arg(long, default_value = "1,10,100")]
        sizes: String,
        #[arg(long, default_value_t = 2)]
        reps: usize,
        /// Seconds between the last manager up and the RSS samples.
        #[arg(long, default_value_t = 10.0)]
        settle: f64,
    },
    /// The bare kube-runtime controller of scenario 6 (started by `dispatch`).
    BareController {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        selector: String,
        #[arg(long)]
        concurrency: u16,
        #[arg(long)]
        hook: String,
    },
    /// Writes the machine description (nproc, memory, load, CPU) as key,value CSV.
    Machine {
        #[arg(long)]
        out: PathBuf,
        /// Free-form key=value pairs to record as well (settings, git revision).
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Renders docs/benchmarks.md from the CSV files.
    Report {
        #[arg(long, default_value = "bench/results")]
        results: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Hand-written analysis appended verbatim (profile findings).
        #[arg(long, default_value = "bench/analysis.md")]
        analysis: PathBuf,
    },
}

async fn main_() -> util::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Failover { common, trials } => {
            failover::run(
                &common.opts(),
                &common.namespace,
                failover::Mode::Crash,
                trials,
                &common.out_dir.join("failover-crash.csv"),
            )
            .await
        }
        Cmd::Handoff { common, trials } => {
            failover::run(
                &common.opts(),
                &common.namespace,
                failover::Mode::Graceful,
                trials,
                &common.out_dir.join("failover-graceful.csv"),
            )
            .await
        }
        Cmd::Surfacing { common, configs } => {
            surfacing::run(
                &common.opts(),
                &common.namespace,
                configs,
                &common.out_dir.join("surfacing.csv"),
            )
            .await
        }
        Cmd::Admission {
            common,
            levels: l,
            seconds,
            warmup,
            burst,
            kubectl_parallel,
            kubectl,
            perf_out,
        } => {
            let s = admission::Settings {
                levels: levels(&l),
                seconds,
                warmup,
                burst,
                kubectl_parallel,
                kubectl,
                perf_out,
            };
            admission::run(&common.opts(), &common.namespace, &s, &common.out_dir).await
        }
        Cmd::Scale {
            common,
            configs,
            replicas,
            run,
            settle,
            window,
            apiserver_pid,
            etcd_pid,
            perf_out,
        } => {
            let s = scale::Settings {
                configs,
                replicas,
                run,
                settle,
                window,
                apiserver_pid,
                etcd_pid,
                perf_out,
            };
            scale::run(&common.opts(), &common.namespace, &s, &common.out_dir).await
        }
        Cmd::Scaleout {
            common,
            configs,
            replicas,
            join_window,
            resync,
            lease_duration,
            renew_deadline,
            retry_period,
            trials,
            settle,
        } => {
            let s = scaleout::Settings {
                settle,
                configs,
                replicas,
                join_window,
                resync,
                lease_duration,
                renew_deadline,
                retry_period,
                trials,
            };
            scaleout::run(&common.opts(), &common.namespace, &s, &common.out_dir).await
        }
        Cmd::Dispatch {
            common,
            objects,
            levels: l,
            impls,
            perf_concurrency,
            perf_out,
        } => {
            let s = dispatch::Settings {
                objects,
                levels: levels(&l),
                impls: impls.split(',').map(|x| x.trim().to_string()).collect(),
                perf: perf_concurrency.zip(perf_out),
            };
            dispatch::run(&common.opts(), &common.namespace, &s, &common.out_dir).await
        }
        Cmd::Seed {
            common,
            cr_old,
            cr_old_version,
            cr_new,
            cr_new_version,
            window,
            trials,
        } => {
            let s = seed::Settings {
                old: seed::CrBuild {
                    version: cr_old_version,
                    bin: cr_old,
                },
                new: seed::CrBuild {
                    version: cr_new_version,
                    bin: cr_new,
                },
                window,
                trials,
            };
            seed::run(
                &common.opts(),
                &common.namespace,
                &s,
                &common.out_dir.join("seed.csv"),
            )
            .await
        }
        Cmd::PeerFailover {
            common,
            cr_manager,
            cr_version,
            rounds,
        } => {
            peer_failover::run(
                &common.opts(),
                &common.namespace,
                &cr_manager,
                &cr_version,
                rounds,
                &common.out_dir.join("peer-failover.csv"),
            )
            .await
        }
        Cmd::PeerAdmission {
            common,
            cr_webhook,
            cr_version,
            levels: l,
            seconds,
            warmup,
            reps,
        } => {
            let s = peer_admission::Settings {
                levels: levels(&l),
                seconds,
                warmup,
                reps,
                cr_webhook,
                cr_version,
            };
            peer_admission::run(&common.opts(), &common.namespace, &s, &common.out_dir).await
        }
        Cmd::PeerMemory {
            common,
            cr_manager,
            cr_version,
            sizes,
            reps,
            settle,
        } => {
            let s = peer_memory::Settings {
                sizes: levels(&sizes),
                reps,
                settle,
                cr_manager,
                cr_version,
            };
            peer_memory::run(
                &common.opts(),
                &common.namespace,
                &s,
                &common.out_dir.join("peer-memory.csv"),
            )
            .await
        }
        Cmd::BareController {
            kubeconfig,
            namespace,
            selector,
            concurrency,
            hook,
        } => bare::run(&kubeconfig, &namespace, &selector, concurrency, &hook).await,
        Cmd::Machine { out, set } => report::machine(&out, &set),
        Cmd::Report {
            results,
            out,
            analysis,
        } => report::render(&results, &out, &analysis),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = main_().await {
        eprintln!("mo-bench: {e}");
        std::process::exit(1);
    }
}
