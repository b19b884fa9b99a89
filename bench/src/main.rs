//! `peer-bench`: the scenarios of `wt bench`, with the same code and sizes, through every
//! implementation we compare with, in one invocation, and one table with ratios to raw
//! quinn.
//!
//! - `webtransport` (ours) and `quinn` (the baseline): the `wt bench` modules themselves,
//!   included by path;
//! - `wtransport` 0.7 and `web-transport-quinn` 0.13: `peers.rs`, on the same quinn
//!   configs;
//! - `pywebtransport-0.8.1` and `pywebtransport-0.21.1`: `python/pwt_bench.py` in their
//!   virtual environments (the same scenarios and server protocol, written in Python, at
//!   smaller sizes: rates are what count).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- [--quick] [--json]
//!     [--impl a,b] [--scenario x,y] [--rounds N] [--against IMPL] [--server-process]
//! ```
//!
//! Two additions serve only to read the others' figures by:
//!
//! - `quinn-again` is raw quinn measured a second time, as a stack of its own: its ratio
//!   to `quinn` is what two identical stacks differ by in one run on this machine, the
//!   noise floor every other ratio sits in;
//! - `--against IMPL` runs every client against IMPL's server instead of its own, so that
//!   a gap between two stacks can be split between their clients and their servers (quinn
//!   and `quinn-again` speak raw QUIC, not WebTransport: they run against each other
//!   only).
//!
//! `--server-process` runs every scenario's server in a child process of its own (the
//! sessions scenario's always is), as client and server are deployed: by default they
//! share this process's two tokio workers, where how one side's tasks interleave with the
//! other's moves streams/s and latency by more than the stacks differ in the work they do.

// The files shared with `wt bench` carry items only the CLI uses.
#[allow(dead_code)]
#[path = "../../crates/webtransport-cli/src/bench/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "../../crates/webtransport-cli/src/bench/ours.rs"]
mod ours;
#[allow(dead_code)]
#[path = "../../crates/webtransport-cli/src/bench/raw_quinn.rs"]
mod raw_quinn;
#[allow(dead_code)]
#[path = "../../crates/webtransport-cli/src/bench/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../../crates/webtransport-cli/src/bench/scenarios.rs"]
mod scenarios;
// The scenarios' server answers its memory through the CLI's reader.
#[allow(dead_code)]
#[path = "../../crates/webtransport-cli/src/rss.rs"]
mod rss;

mod peers;

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use api::{Listener, Stack};
use ours::{Configs, WebTransport};
use peers::{WebTransportQuinn, Wtransport};
use raw_quinn::RawQuinn;
use report::{Metric, Results};
use scenarios::{Sizes, SCENARIOS};

const RUST_IMPLS: &[&str] = &[
    "webtransport",
    "quinn",
    "wtransport",
    "web-transport-quinn",
    report::BASELINE_AGAIN,
];
/// The implementations that speak raw QUIC (the baseline), not WebTransport.
const RAW_QUIC: &[&str] = &[report::BASELINE, report::BASELINE_AGAIN];
/// Ours, which the closing lines compare with every other implementation.
const OURS: &str = "webtransport";
/// Python implementations: the name in tables, and the virtual environments tried in turn
/// (interop/setup-python.sh makes the first, bench/setup-python.sh the second).
const PYTHON_IMPLS: &[(&str, &[&str])] = &[
    (
        "pywebtransport-0.8.1",
        &["interop/.venv-pwt081", "bench/.venv-pwt081"],
    ),
    (
        "pywebtransport-new",
        &["interop/.venv-pwt-new", "bench/.venv-pwt-new"],
    ),
];

const CERT_ENV: &str = "WT_BENCH_CERT_PEM";
const KEY_ENV: &str = "WT_BENCH_KEY_PEM";

struct Args {
    quick: bool,
    json: bool,
    rounds: u32,
    impls: Vec<String>,
    scenarios: Vec<String>,
    server: Option<String>,
    against: Option<String>,
    /// Every scenario's server in a child process.
    server_process: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        json: false,
        rounds: 1,
        impls: Vec::new(),
        scenarios: Vec::new(),
        server: None,
        against: None,
        server_process: false,
    };
    let mut it = std::env::args().skip(1);
    let list = |v: Option<String>| -> Result<Vec<String>> {
        Ok(v.context("a list is missing")?
            .split(',')
            .map(str::to_owned)
            .collect())
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = true,
            "--rounds" => args.rounds = it.next().context("--rounds N")?.parse()?,
            "--impl" => args.impls = list(it.next())?,
            "--scenario" => args.scenarios = list(it.next())?,
            "--server" => args.server = Some(it.next().context("--server IMPL")?),
            "--against" => args.against = Some(it.next().context("--against IMPL")?),
            "--server-process" => args.server_process = true,
            "-h" | "--help" => {
                println!(
                    "peer-bench [--quick] [--json] [--rounds N] [--impl LIST] [--scenario LIST] \
                     [--against IMPL] [--server-process]\n\
                     implementations: {}, {}\nscenarios: {}\n\
                     quinn-again: raw quinn a second time (the noise floor of a ratio)\n\
                     --against IMPL: every client against IMPL's server (Rust only)\n\
                     --server-process: every server in a process of its own (Rust only)",
                    RUST_IMPLS.join(", "),
                    PYTHON_IMPLS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                    SCENARIOS.join(", ")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    for s in &args.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("no scenario {s:?}");
        }
    }
    for i in &args.impls {
        if !RUST_IMPLS.contains(&i.as_str()) && !PYTHON_IMPLS.iter().any(|(n, _)| n == i) {
            bail!("no implementation {i:?}");
        }
    }
    if let Some(a) = &args.against {
        if !RUST_IMPLS.contains(&a.as_str()) {
            bail!("--against takes a Rust implementation, not {a:?}");
        }
    }
    Ok(args)
}

/// Whether `client` can run the scenarios against `server`'s server: WebTransport with
/// WebTransport, raw QUIC with raw QUIC.
fn speaks_with(client: &str, server: &str) -> bool {
    RAW_QUIC.contains(&client) == RAW_QUIC.contains(&server)
}

/// Evaluates `$body` with `$stack` a new stack of the Rust implementation called `$name`
/// (each is a type of its own, so the table is a macro), or returns an error for a name
/// that is none.
macro_rules! with_stack {
    ($name:expr, $configs:expr, |$stack:ident| $body:expr) => {
        match $name {
            "webtransport" => {
                let $stack = WebTransport::new($configs)?;
                $body
            }
            report::BASELINE | report::BASELINE_AGAIN => {
                let $stack = RawQuinn::new($configs)?;
                $body
            }
            "wtransport" => {
                let $stack = Wtransport::new($configs)?;
                $body
            }
            "web-transport-quinn" => {
                let $stack = WebTransportQuinn::new($configs)?;
                $body
            }
            other => bail!("no implementation {other:?}"),
        }
    };
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = parse_args().and_then(|args| runtime.block_on(run(args)));
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peer-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (bench/ is one level below it).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

async fn run(args: Args) -> Result<ExitCode> {
    if let Some(name) = &args.server {
        return serve_child(name).await;
    }
    if cfg!(debug_assertions) {
        eprintln!("peer-bench: warning: a debug build's numbers mean nothing (use --release)");
    }
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let scenarios: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| args.scenarios.iter().any(|a| a == s))
            .collect()
    };
    // `quinn-again` only when asked for: it measures the bench, not a stack.
    let wanted = |name: &str| {
        args.impls.iter().any(|i| i == name)
            || (args.impls.is_empty() && name != report::BASELINE_AGAIN)
    };
    let against = args.against.as_deref();

    let configs = Configs::new()?;
    let mut results = Results::default();
    let mut failed = false;
    let rounds = args.rounds.max(1);
    for round in 0..rounds {
        // The Rust implementations take turns going first, so that none always runs on a
        // warmer (or busier) machine.
        let mut order: Vec<&str> = RUST_IMPLS.iter().copied().filter(|n| wanted(n)).collect();
        if !order.is_empty() {
            let turn = round as usize % order.len();
            order.rotate_left(turn);
        }
        for &scenario in &scenarios {
            for &name in &order {
                if let Some(server) = against.filter(|&a| !speaks_with(name, a)) {
                    eprintln!("peer-bench: {name} cannot run against {server}'s server, skipped");
                    continue;
                }
                let run = Run {
                    name,
                    server: against,
                    server_process: args.server_process,
                    scenario,
                    sizes: &sizes,
                    configs: &configs,
                };
                let ok = with_stack!(name, &configs, |stack| run
                    .measure(stack, &mut results)
                    .await);
                failed |= !ok;
            }
        }
        // Python runs every scenario in one process per round.
        for (name, venvs) in PYTHON_IMPLS {
            if !wanted(name) {
                continue;
            }
            if let Some(server) = against {
                eprintln!(
                    "peer-bench: {name} runs against its own server only, not {server}'s: skipped"
                );
                continue;
            }
            eprintln!("peer-bench: round {}/{rounds}: {name}", round + 1);
            match run_python(name, venvs, args.quick, &scenarios, &configs, &mut results).await {
                Ok(()) => {}
                Err(e) => {
                    eprintln!("peer-bench: warning: {name}: {e:#}");
                    failed = true;
                }
            }
        }
    }

    if args.json {
        for s in &results.samples {
            println!("{}", report::sample_json(s));
        }
        for l in report::ratio_json(&results) {
            println!("{l}");
        }
        for l in report::versus_json(&results, OURS) {
            println!("{l}");
        }
    } else {
        println!(
            "peer-bench: {} build, {} cores, {} sizes (Python: its own smaller sizes), best of \
             {rounds} round(s)\n",
            if cfg!(debug_assertions) {
                "DEBUG"
            } else {
                "release"
            },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if args.quick { "quick" } else { "full" },
        );
        if let Some(server) = against {
            println!("every client against {server}'s server\n");
        }
        if args.server_process {
            println!("every server in a process of its own (Python: as always)\n");
        }
        print!("{}", report::table(&results));
        print!("{}", report::versus_summary(&results, OURS));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One scenario of one Rust implementation, filed under `name`.
struct Run<'a> {
    name: &'a str,
    /// Whose server the client runs against: its own when `None`.
    server: Option<&'a str>,
    /// The server runs in a child process for every scenario, not only sessions.
    server_process: bool,
    scenario: &'static str,
    sizes: &'a Sizes,
    configs: &'a Configs,
}

impl Run<'_> {
    /// Runs the scenario with `stack`'s client against its own server (or the one of
    /// `--against`), in this process or, for sessions and with `--server-process`, in a
    /// child process. False when it failed.
    async fn measure<S: Stack>(&self, stack: S, results: &mut Results) -> bool {
        let (name, scenario) = (self.name, self.scenario);
        match self.server {
            Some(server) => eprintln!("peer-bench: {scenario} ({name} against {server})"),
            None => eprintln!("peer-bench: {scenario} ({name})"),
        }
        let stack = Arc::new(stack);
        let r = async {
            let child = if self.server_process || scenario == "sessions" {
                let server = self.server.unwrap_or(name);
                Some(ChildServer::start(server, self.configs).await?)
            } else {
                None
            };
            let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let (addr, serving) = match (&child, self.server) {
                (Some(child), _) if self.server_process => (child.addr, None),
                (_, Some(server)) => {
                    let (addr, task) = start_named(server, self.configs, any).await?;
                    (addr, Some(task))
                }
                (_, None) => {
                    let (addr, task) = start(stack.clone(), any).await?;
                    (addr, Some(task))
                }
            };
            let sessions_server = child.as_ref().map(|c| c.addr);
            let r = scenarios::run(&stack, addr, scenario, self.sizes, sessions_server).await;
            if let Some(task) = serving {
                task.abort();
            }
            r
        }
        .await;
        match r {
            Ok(metrics) => {
                for m in metrics {
                    results.add(name, m);
                }
                true
            }
            Err(e) => {
                eprintln!("peer-bench: warning: {scenario} ({name}) failed: {e:#}");
                false
            }
        }
    }
}

/// `--server NAME`: the child server of the sessions scenario.
async fn serve_child(name: &str) -> Result<ExitCode> {
    let cert = std::env::var(CERT_ENV).context("no certificate from the parent")?;
    let key = std::env::var(KEY_ENV).context("no key from the parent")?;
    let der = webtransport::tls::certificates_from_pem(cert.as_bytes(), CERT_ENV)?;
    let sha256 = webtransport::tls::certificate_sha256(der.first().context("no certificate")?);
    let configs = Configs::with_certificate(
        webtransport::CertificateSource::Pem {
            cert: cert.into_bytes(),
            key: key.into_bytes(),
        },
        sha256,
    );
    let (addr, _serving) =
        start_named(name, &configs, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    println!("{}", serde_json::json!({ "addr": addr.to_string() }));
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut sink)
            .is_ok_and(|n| n > 0)
        {
            sink.clear();
        }
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `stack`'s server at `addr` and serves the scenarios on it until the returned
/// task is aborted; returns the address it bound.
async fn start<S: Stack>(
    stack: Arc<S>,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let server = Arc::new(stack.bind(addr).await?);
    let local = server.local_addr();
    Ok((local, tokio::spawn(scenarios::serve(server))))
}

/// [`start`] for the implementation called `name`.
async fn start_named(
    name: &str,
    configs: &Configs,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    with_stack!(name, configs, |stack| start(Arc::new(stack), addr).await)
}

/// A `peer-bench --server` child process, ended when dropped.
struct ChildServer {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ChildServer {
    async fn start(name: &str, configs: &Configs) -> Result<Self> {
        let name = name.to_owned();
        let webtransport::CertificateSource::Pem { cert, key } = &configs.server.certificate else {
            bail!("the child server needs the certificate as PEM");
        };
        let (cert, key) = (
            String::from_utf8_lossy(cert).into_owned(),
            String::from_utf8_lossy(key).into_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(std::env::current_exe()?)
                .args(["--server", &name])
                .env(CERT_ENV, cert)
                .env(KEY_ENV, key)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("cannot start the child server")?;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().context("no stdout")?)
                .read_line(&mut line)?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("child server said {line:?}"))?;
            let addr = v["addr"].as_str().context("no address")?.parse()?;
            Ok(ChildServer { child, addr })
        })
        .await?
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        std::thread::sleep(Duration::from_millis(50));
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `python/pwt_bench.py` in the first virtual environment of `venvs` that exists
/// and adds its JSON lines to `results` under `name`.
async fn run_python(
    name: &str,
    venvs: &[&str],
    quick: bool,
    scenarios: &[&str],
    configs: &Configs,
    results: &mut Results,
) -> Result<()> {
    let webtransport::CertificateSource::Pem { cert, key } = &configs.server.certificate else {
        bail!("the Python server needs the certificate as PEM");
    };
    let root = repo_root();
    let python = venvs
        .iter()
        .map(|v| root.join(v).join("bin/python"))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "no virtual environment ({}); run bench/setup-python.sh",
                venvs.join(" or ")
            )
        })?;
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(root.join("bench/python/pwt_bench.py"))
        .arg("--scenario")
        .arg(scenarios.join(","))
        .env(CERT_ENV, String::from_utf8_lossy(cert).as_ref())
        .env(KEY_ENV, String::from_utf8_lossy(key).as_ref());
    if quick {
        cmd.arg("--quick");
    }
    let out = tokio::time::timeout(Duration::from_secs(900), cmd.output())
        .await
        .context("the Python benchmark took more than 15 minutes")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.contains(" failed: ")) {
        eprintln!("peer-bench: {name}: {line}");
    }
    let mut any = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(scenario), Some(metric), Some(value), Some(unit)) = (
            v["scenario"].as_str(),
            v["metric"].as_str(),
            v["value"].as_f64(),
            v["unit"].as_str(),
        ) else {
            continue;
        };
        let Some(scenario) = SCENARIOS.iter().copied().find(|s| *s == scenario) else {
            continue;
        };
        // Units are few and fixed; leaking them keeps `Metric` free of lifetimes.
        let unit: &'static str = Box::leak(unit.to_owned().into_boxed_str());
        let higher = v["higher_is_better"].as_bool().unwrap_or(true);
        let m = if higher {
            Metric::higher(scenario, metric, value, unit)
        } else {
            Metric::lower(scenario, metric, value, unit)
        };
        // The version the environment really has (pywebtransport-0.21.1, ...).
        results.add(v["impl"].as_str().unwrap_or(name), m);
        any = true;
    }
    if !out.status.success() || !any {
        bail!(
            "{} exited with {} ({})",
            python.display(),
            out.status,
            stderr.lines().last().unwrap_or("no output")
        );
    }
    Ok(())
}
