//! `wt bench`: our stack against raw quinn with the same transport settings, scenario by
//! scenario, in one invocation.
//!
//! - `api.rs`: the traits an implementation provides;
//! - `scenarios.rs`: the scenarios and the server they talk to, written once;
//! - `ours.rs`, `raw_quinn.rs`: the two implementations;
//! - `report.rs`: the table, the JSON lines and the ratios to quinn.
//!
//! The peer harness in `bench/` at the top of the repository includes `api.rs`,
//! `scenarios.rs`, `report.rs`, `ours.rs` and `raw_quinn.rs` by path, so that its runs of
//! other implementations use the same code and sizes.

mod api;
mod ours;
mod raw_quinn;
mod report;
mod scenarios;

use std::io::{BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};

use crate::child::ChildProcess;
use crate::output;
use api::{Listener, Stack};
use ours::{Configs, WebTransport, WebTransportApp};
use raw_quinn::RawQuinn;
use report::Results;
use scenarios::Sizes;

pub const LONG_ABOUT: &str = "\
Benchmark this WebTransport stack against raw quinn with the same transport settings,
certificate and TLS configuration, in the same run:

  throughput   bulk bytes through one bidirectional stream (default 1 GiB)
  streams      many short streams (10,000 of 16 KiB, 64 at once)
  latency      64-byte request/response on one stream and on a new stream each
  datagrams    1,000-byte datagrams as fast as they go for 5 s
  handshakes   new connections plus session setup (quinn: the QUIC handshake alone),
               one after another and 32 at once
  sessions     10,000 idle sessions held at once; resident memory per session of the
               server, from its VmRSS before and after (the server runs as a child
               process so that client memory does not count)
  resumed      session setups one after another whose TLS handshake resumes an earlier
               session, then as many full ones (resumption off); no 0-RTT

By default client and server run in this process over loopback. With --server and
--client they run in two processes (or on two machines).

Use a release build: a debug build is ten times slower and its numbers mean nothing.";

pub const AFTER_HELP: &str = "\
Examples:
  wt bench                                   every scenario at full size
  wt bench --quick --json                    every scenario in under 30 s, JSON lines
  wt bench --scenario latency,datagrams --rounds 3
  wt bench --server --bind 127.0.0.1:4433    server for both (quinn on port + 1)
  wt bench --client 127.0.0.1:4433           client against it

With --json, stdout carries one JSON object per line, then one line per target:
  {\"scenario\":\"throughput\",\"impl\":\"webtransport\",\"metric\":\"goodput\",\"value\":2.1,\"unit\":\"Gbit/s\"}
  {\"scenario\":\"throughput\",\"impl\":\"webtransport\",\"metric\":\"goodput\",\"ratio_to_quinn\":0.97,
   \"target\":\">= 0.95\",\"meets_target\":true}
Progress goes to stderr.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Throughput,
    Streams,
    Latency,
    Datagrams,
    Handshakes,
    Sessions,
    Resumed,
}

impl Scenario {
    fn name(self) -> &'static str {
        // The variants are declared in the order of `scenarios::SCENARIOS`.
        scenarios::SCENARIOS[self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Impl {
    Webtransport,
    Quinn,
    /// Ours with the server behind a `ServerApp` (not run unless asked for).
    WebtransportApp,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Webtransport => "webtransport",
            Impl::Quinn => "quinn",
            Impl::WebtransportApp => "webtransport-app",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "NAME")]
    scenario: Vec<Scenario>,

    /// Implementations to run, comma-separated [default: webtransport,quinn];
    /// `webtransport-app` is ours with its server behind a `ServerApp` (this process only)
    #[arg(long = "impl", value_enum, value_delimiter = ',', value_name = "NAME")]
    implementation: Vec<Impl>,

    /// Small sizes: every scenario for both implementations in well under 30 s
    #[arg(long)]
    quick: bool,

    /// Print JSON lines on stdout instead of a table
    #[arg(long)]
    json: bool,

    /// Run everything this many times and keep each metric's best value
    #[arg(long, default_value_t = 1, value_name = "N")]
    rounds: u32,

    /// Only serve (both implementations; quinn on the next port), for --client elsewhere
    #[arg(long, conflicts_with = "client")]
    server: bool,

    /// Address for --server [default: 127.0.0.1:4433]
    #[arg(long, value_name = "ADDR", requires = "server")]
    bind: Option<SocketAddr>,

    /// Only run the client, against the WebTransport server of `wt bench --server` here
    #[arg(long, value_name = "ADDR", requires = "cert_hash")]
    client: Option<SocketAddr>,

    /// The SHA-256 of the --client server's certificate (printed by `wt bench --server`)
    #[arg(long, value_name = "HEX", requires = "client")]
    cert_hash: Option<String>,

    /// The quinn server of --client [default: the --client port + 1]
    #[arg(long, value_name = "ADDR", requires = "client")]
    quinn_addr: Option<SocketAddr>,

    /// throughput: bytes through the stream (K, M, G suffixes are powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    bytes: Option<u64>,

    /// streams: how many
    #[arg(long, value_name = "N")]
    streams: Option<u64>,

    /// streams: bytes on each
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    stream_size: Option<u64>,

    /// streams: how many at once
    #[arg(long, value_name = "N")]
    in_flight: Option<usize>,

    /// latency: round trips in each mode
    #[arg(long, value_name = "N")]
    requests: Option<u64>,

    /// datagrams: how long to send (e.g. 5s, 500ms)
    #[arg(long, value_name = "DURATION", value_parser = webtransport::config::parse_duration)]
    datagram_time: Option<Duration>,

    /// handshakes: connections in each mode
    #[arg(long, value_name = "N")]
    handshakes: Option<u64>,

    /// sessions: idle sessions held at once
    #[arg(long, value_name = "N")]
    sessions: Option<u64>,

    /// (internal) with --server: exit when standard input closes; used for the child
    /// server of the sessions scenario
    #[arg(long, hide = true, requires = "server")]
    exit_with_stdin: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{text:?} is not a size (a number, optionally with K, M or G)"))
}

impl BenchArgs {
    fn sizes(&self) -> Sizes {
        let mut s = if self.quick {
            Sizes::quick()
        } else {
            Sizes::full()
        };
        if let Some(v) = self.bytes {
            s.throughput_bytes = v;
        }
        if let Some(v) = self.streams {
            s.streams = v;
        }
        if let Some(v) = self.stream_size {
            s.stream_size = v as usize;
        }
        if let Some(v) = self.in_flight {
            s.in_flight = v;
        }
        if let Some(v) = self.requests {
            s.requests = v;
        }
        if let Some(v) = self.datagram_time {
            s.datagram_time = v;
        }
        if let Some(v) = self.handshakes {
            s.handshakes = v;
        }
        if let Some(v) = self.sessions {
            s.sessions = v;
        }
        s
    }

    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenario.is_empty() {
            Scenario::value_variants().to_vec()
        } else {
            self.scenario.clone()
        }
    }

    fn implementations(&self) -> Vec<Impl> {
        if self.implementation.is_empty() {
            vec![Impl::Webtransport, Impl::Quinn]
        } else {
            self.implementation.clone()
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    if args.server {
        return serve(args).await;
    }
    if cfg!(debug_assertions) {
        output::warn("this is a debug build: its numbers mean nothing (use --release)");
    }
    let sizes = args.sizes();
    let configs = match &args.cert_hash {
        // The server's own certificate: only its hash is known here.
        Some(hash) => Configs::with_certificate(
            webtransport::CertificateSource::default(),
            webtransport::tls::parse_sha256_hex(hash)?,
        ),
        None => Configs::new()?,
    };
    let wt = Arc::new(WebTransport::new(&configs)?);
    let quinn = Arc::new(RawQuinn::new(&configs)?);
    let impls = args.implementations();
    let scenarios = args.scenarios();

    // Where each implementation's server is: in this process, or given.
    let mut servers = Vec::new();
    let (wt_addr, quinn_addr) = match args.client {
        Some(addr) => {
            let q = args
                .quinn_addr
                .unwrap_or_else(|| SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)));
            (addr, q)
        }
        None => {
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let a = start_server(&wt, loopback, &mut servers).await?;
            let b = start_server(&quinn, loopback, &mut servers).await?;
            (a, b)
        }
    };
    let remote = args.client.is_some();
    let app = Arc::new(WebTransportApp::new(&configs)?);
    let app_addr = if impls.contains(&Impl::WebtransportApp) {
        if remote {
            anyhow::bail!("webtransport-app runs only with its server in this process");
        }
        Some(
            start_server(
                &app,
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                &mut servers,
            )
            .await?,
        )
    } else {
        None
    };

    let mut progress =
        Progress::new(u64::from(args.rounds.max(1)) * (scenarios.len() * impls.len()) as u64);
    let mut results = Results::default();
    let mut failed = false;
    for round in 0..args.rounds.max(1) {
        // Every other round the other implementation goes first, so that neither always
        // runs on a warmer (or busier) machine.
        let mut order = impls.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for &scenario in &scenarios {
            for &imp in &order {
                progress.step(scenario.name(), imp.name());
                let r = match imp {
                    Impl::Webtransport => {
                        run_scenario(&wt, wt_addr, scenario, &sizes, remote, &configs).await
                    }
                    Impl::Quinn => {
                        run_scenario(&quinn, quinn_addr, scenario, &sizes, remote, &configs).await
                    }
                    Impl::WebtransportApp => match app_addr {
                        Some(addr) => {
                            run_scenario(&app, addr, scenario, &sizes, remote, &configs).await
                        }
                        None => unreachable!("started above when asked for"),
                    },
                };
                match r {
                    Ok(metrics) => {
                        for m in metrics {
                            results.add(imp.name(), m);
                        }
                    }
                    Err(e) => {
                        progress.clear();
                        output::warn(format!(
                            "{} ({}) failed: {e:#}",
                            scenario.name(),
                            imp.name()
                        ));
                        failed = true;
                    }
                }
            }
        }
    }
    progress.clear();

    if args.json {
        for s in &results.samples {
            output::line(report::sample_json(s));
        }
        for l in report::ratio_json(&results) {
            output::line(l);
        }
    } else {
        output::line(describe_run(&sizes, &args));
        output::line("");
        output::line(report::table(&results).trim_end());
        if impls.len() == 2 {
            output::line("");
            output::line(
                "ok / !!: meets / misses the target against quinn in this run. Loopback, one \
                 machine: rerun with --rounds 3 before reading much into a few percent.",
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn start_server<S: Stack>(
    stack: &Arc<S>,
    addr: SocketAddr,
    keep: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<SocketAddr> {
    let server = Arc::new(
        stack
            .bind(addr)
            .await
            .with_context(|| format!("cannot start the {} server", stack.name()))?,
    );
    let local = server.local_addr();
    keep.push(tokio::spawn(scenarios::serve(server)));
    Ok(local)
}

async fn run_scenario<S: Stack>(
    stack: &Arc<S>,
    addr: SocketAddr,
    scenario: Scenario,
    sizes: &Sizes,
    remote: bool,
    configs: &Configs,
) -> Result<Vec<report::Metric>> {
    // The sessions scenario measures a server of its own: a child process here (so that
    // client memory does not count), or the --client server, which then grows by both
    // implementations' sessions and each run measures its own growth.
    let child = if scenario == Scenario::Sessions && !remote {
        Some(ChildServer::start(stack.name(), configs).await?)
    } else {
        None
    };
    scenarios::run(
        stack,
        addr,
        scenario.name(),
        sizes,
        child.as_ref().map(|c| c.addr),
    )
    .await
}

/// `wt bench --server`: both servers (or the one of --impl) until Ctrl-C.
async fn serve(args: BenchArgs) -> Result<ExitCode> {
    // A child server of the sessions scenario gets its parent's certificate, so that the
    // parent's clients accept it.
    let configs = match (std::env::var(CERT_ENV), std::env::var(KEY_ENV)) {
        (Ok(cert), Ok(key)) => {
            let der = webtransport::tls::certificates_from_pem(cert.as_bytes(), CERT_ENV)?;
            let leaf = der.first().context("no certificate in the PEM")?;
            let sha256 = webtransport::tls::certificate_sha256(leaf);
            Configs::with_certificate(
                webtransport::CertificateSource::Pem {
                    cert: cert.into_bytes(),
                    key: key.into_bytes(),
                },
                sha256,
            )
        }
        _ => Configs::new()?,
    };
    let hash = match &configs.client.verification {
        webtransport::CertVerification::ServerCertificateHashes(h) => h
            .first()
            .map(webtransport::tls::sha256_hex)
            .unwrap_or_default(),
        _ => String::new(),
    };
    let bind = args
        .bind
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 4433)));
    let impls = args.implementations();
    let mut keep = Vec::new();
    let mut fields: Vec<(&str, serde_json::Value)> = vec![("event", "listening".into())];
    let mut next = bind;
    for imp in &impls {
        let addr = match imp {
            Impl::Webtransport => {
                start_server(&Arc::new(WebTransport::new(&configs)?), next, &mut keep).await?
            }
            Impl::Quinn => {
                start_server(&Arc::new(RawQuinn::new(&configs)?), next, &mut keep).await?
            }
            Impl::WebtransportApp => {
                start_server(&Arc::new(WebTransportApp::new(&configs)?), next, &mut keep).await?
            }
        };
        fields.push((imp.name(), addr.to_string().into()));
        if next.port() != 0 {
            next.set_port(next.port().wrapping_add(1));
        }
    }
    fields.push(("cert_sha256", hash.into()));
    output::json_line(&fields);
    if args.exit_with_stdin {
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
    } else {
        tokio::signal::ctrl_c().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Environment variables that hand the certificate to a child server.
const CERT_ENV: &str = "WT_BENCH_CERT_PEM";
const KEY_ENV: &str = "WT_BENCH_KEY_PEM";

/// A `wt bench --server` child process serving one implementation, ended when dropped.
struct ChildServer {
    _process: ChildProcess,
    addr: SocketAddr,
}

impl ChildServer {
    async fn start(implementation: &'static str, configs: &Configs) -> Result<Self> {
        let webtransport::CertificateSource::Pem { cert, key } = &configs.server.certificate else {
            anyhow::bail!("the child server needs the certificate as PEM");
        };
        let (cert, key) = (
            String::from_utf8_lossy(cert).into_owned(),
            String::from_utf8_lossy(key).into_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let process = ChildProcess::spawn(
                "child server",
                &[
                    "bench",
                    "--server",
                    "--exit-with-stdin",
                    "--bind",
                    "127.0.0.1:0",
                    "--impl",
                    implementation,
                ],
                &[(CERT_ENV, &cert), (KEY_ENV, &key)],
            )?;
            let addr = process.announcement()[implementation]
                .as_str()
                .ok_or_else(|| {
                    anyhow!(
                        "child server did not say its address: {}",
                        process.announcement()
                    )
                })?
                .parse()?;
            Ok(ChildServer {
                _process: process,
                addr,
            })
        })
        .await?
    }
}

fn describe_run(sizes: &Sizes, args: &BenchArgs) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "wt bench {}: {} build, {cores} cores ({cpu}), {}; throughput {} MiB, {} streams of {} KiB \
         ({} at once), {} round trips, datagrams for {:?}, {} handshakes (and {} at once), {} \
         sessions; best of {} round(s)",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) { "DEBUG" } else { "release" },
        if args.client.is_some() { "two processes" } else { "one process over loopback" },
        sizes.throughput_bytes >> 20,
        sizes.streams,
        sizes.stream_size / 1024,
        sizes.in_flight,
        sizes.requests,
        sizes.datagram_time,
        sizes.handshakes,
        sizes.handshake_concurrency,
        sizes.sessions,
        args.rounds.max(1),
    )
}

/// The progress line on stderr: rewritten in place on a terminal, one line per step
/// otherwise (CI logs).
struct Progress {
    total: u64,
    done: u64,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn step(&mut self, scenario: &str, implementation: &str) {
        self.done += 1;
        let text = format!(
            "wt bench [{}/{}] {scenario} ({implementation})",
            self.done, self.total
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names() {
        for s in Scenario::value_variants() {
            assert_eq!(
                s.to_possible_value().map(|v| v.get_name().to_owned()),
                Some(s.name().to_owned())
            );
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("16k"), Ok(16 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn table_and_ratios() {
        let mut r = Results::default();
        r.add(
            "webtransport",
            report::Metric::higher("throughput", "goodput", 1.9, "Gbit/s"),
        );
        r.add(
            "quinn",
            report::Metric::higher("throughput", "goodput", 2.0, "Gbit/s"),
        );
        r.add(
            "webtransport",
            report::Metric::higher("throughput", "goodput", 1.8, "Gbit/s"),
        );
        assert_eq!(r.value("webtransport", "throughput", "goodput"), Some(1.9));
        let lines = report::ratio_json(&r);
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["ratio_to_quinn"], 0.95);
        assert_eq!(v["meets_target"], true);
        let t = report::table(&r);
        assert!(t.contains("0.95 ok"), "{t}");
    }

    #[test]
    fn datagrams_must_arrive_whatever_quinn_delivers() {
        let mut r = Results::default();
        for (imp, delivered) in [("webtransport", 98.5), ("quinn", 97.0)] {
            r.add(
                imp,
                report::Metric::higher("datagrams", "delivered", delivered, "%"),
            );
        }
        let lines = report::ratio_json(&r);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["metric"], "delivered");
        assert_eq!(v["meets_target"], false, "98.5 % is under 99 %: {v}");
    }

    #[test]
    fn versus_lines_say_who_is_ahead_whichever_way_a_metric_points() {
        let mut r = Results::default();
        for (imp, goodput, p50) in [
            ("webtransport", 2.0, 50.0),
            ("quinn", 2.1, 40.0),
            ("wtransport", 1.6, 40.0),
            (report::BASELINE_AGAIN, 2.2, 30.0),
        ] {
            r.add(
                imp,
                report::Metric::higher("throughput", "goodput", goodput, "Gbit/s"),
            );
            r.add(
                imp,
                report::Metric::lower("latency", "same_stream_p50", p50, "us"),
            );
        }
        let lines: Vec<serde_json::Value> = report::versus_json(&r, "webtransport")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "quinn, measured once or twice, is the baseline, not a peer: {lines:?}"
        );
        assert_eq!(lines[0]["versus"], "wtransport");
        assert_eq!(
            (lines[0]["advantage"].clone(), lines[0]["ahead"].clone()),
            (1.25.into(), true.into())
        );
        assert_eq!(lines[1]["metric"], "same_stream_p50");
        assert_eq!(
            (lines[1]["advantage"].clone(), lines[1]["ahead"].clone()),
            (0.8.into(), false.into())
        );
        assert_eq!(
            report::versus_summary(&r, "webtransport"),
            "webtransport vs wtransport: behind on latency same_stream_p50 (0.800)\n"
        );
    }
}
