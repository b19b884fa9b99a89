//! `wt soak`: sessions opened and closed against a server for a long time (or many idle
//! sessions held), with the server's memory sampled along the way.
//!
//! - `work.rs`: the client side (a cycle, an echo, the failures by typed variant);
//! - here: the options, the child server, the two modes and their report.

mod work;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use tokio::sync::mpsc;
use webtransport::{tls, CertVerification, Client, ClientConfig, Session};

use crate::child::ChildProcess;
use crate::output;
use crate::serve::ServeFile;
use work::{ErrorKind, Failure, Open, Target};

pub const LONG_ABOUT: &str = "\
Soak a WebTransport echo server: open and close sessions for a long time and watch the
server's memory, or hold many idle sessions and check that none is dropped.

Each cycle opens a session on the echo route (on a new connection, or on one reused for
--sessions-per-connection sessions), sends a small message on a bidirectional stream,
checks the echo byte for byte, closes the session and waits for its end. --concurrency
cycles run at once, for --cycles or --duration, whichever ends first.

With --idle N --hold DURATION it instead opens N sessions, spread over connections of
--sessions-per-connection sessions each (default 10), keeps them idle with QUIC
keep-alive for DURATION, then checks each with one echo: a session that ended or does not
echo counts as dropped.

By default it starts its own server, a `wt serve --json` child on a free port of
127.0.0.1 whose session and connection limits are raised to what the run needs, samples
the child's resident memory (VmRSS in /proc/PID/status), and ends it with SIGINT. With
--url and --cert-hash it targets a server running elsewhere (no memory figures).

Failures are counted by step and by the variant of the library's error (connect/rejected(429),
read/connection.timed_out, ...). The exit status is 1 if any cycle failed, any idle session
was dropped, or the server's memory grew after the warm-up by more than --max-growth.";

pub const AFTER_HELP: &str = "\
Examples:
  wt soak --cycles 10000                          10,000 cycles on new connections
  wt soak --duration 30m --cycles 1000000         whichever comes first
  wt soak --cycles 100000 --sessions-per-connection 10 --concurrency 16
  wt soak --idle 10000 --hold 10m                 10,000 idle sessions for 10 minutes
  wt soak --url https://host:4433/echo --cert-hash <HASH> --duration 5m

The server's memory is sampled at the start, after --warmup cycles (the baseline), every
--report-every cycles and at the end; each sample is a line (a JSON object with --json):
  {\"event\":\"sample\",\"label\":\"100000\",\"cycles\":100000,\"elapsed_s\":120.5,
   \"cycles_per_s\":830.1,\"server_rss\":15187968,\"growth_percent\":0.4,\"failed\":0,\"errors\":{}}
and the run ends with {\"event\":\"result\",\"ok\":true,...}.
Use a release build for long runs.";

/// Sessions of the spawned server beyond what a run holds at once (sessions whose close
/// is still under way on the server).
const HEADROOM: usize = 1000;
/// How long the spawned server gets to exit after SIGINT (it closes every session and
/// drains first).
const SERVER_EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long to wait at the end for the server to have closed every session.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// Failures printed in full on stderr (the rest are counted only).
const FAILURES_SHOWN: u64 = 5;
/// Echoes at once when the held sessions are checked.
const VERIFY_CONCURRENCY: usize = 64;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("length")
        .required(true)
        .multiple(true)
        .args(["cycles", "duration", "idle"])
))]
pub struct SoakArgs {
    /// Stop after this many cycles
    #[arg(long, value_name = "N", conflicts_with = "idle")]
    cycles: Option<u64>,

    /// Stop after this long (e.g. 30m, 90s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "idle")]
    duration: Option<Duration>,

    /// Cycles at once (with --idle: connections being opened at once)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,

    /// Sessions opened one after another on a connection before it is closed [default:
    /// 1, a new connection every cycle; with --idle, 10 sessions held on each]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    sessions_per_connection: Option<u32>,

    /// Sample the server's memory every N cycles
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    report_every: u64,

    /// Cycles before the memory baseline is sampled
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    warmup: u64,

    /// Fail if the server's memory grows by more than this many percent over the warm-up
    /// baseline
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    max_growth: f64,

    /// Hold N idle sessions instead of cycling
    #[arg(long, value_name = "N", requires = "hold", value_parser = clap::value_parser!(u64).range(1..))]
    idle: Option<u64>,

    /// With --idle: how long to hold them (e.g. 10m)
    #[arg(long, value_name = "DURATION", requires = "idle", value_parser = parse_duration)]
    hold: Option<Duration>,

    /// QUIC keep-alive interval of the client and of the spawned server
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    keep_alive: Duration,

    /// QUIC idle timeout of the client and of the spawned server: a connection without
    /// packets for this long ends (keep-alive must beat it)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Time limit of each step (connect, open, write, read, close)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,

    /// The echo route of a server running elsewhere [default: start a `wt serve` child]
    #[arg(long, value_name = "URL", requires = "cert_hash")]
    url: Option<String>,

    /// The SHA-256 of --url's certificate (64 hex digits)
    #[arg(long, value_name = "HEX", requires = "url", value_parser = parse_hash)]
    cert_hash: Option<[u8; 32]>,

    /// Print JSON lines on stdout instead of a table
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match webtransport::config::parse_duration(text)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    tls::parse_sha256_hex(text).map_err(|e| e.to_string())
}

impl SoakArgs {
    fn per_connection(&self) -> u32 {
        self.sessions_per_connection
            .unwrap_or(if self.idle.is_some() { 10 } else { 1 })
    }

    /// The spawned server's configuration: `wt serve`'s defaults with every limit the
    /// run would hit raised above it (sessions in all and per IP, since every session
    /// comes from 127.0.0.1; sessions per connection; connections).
    fn server_file(&self) -> ServeFile {
        let per_connection = self.per_connection() as usize;
        let concurrency = self.concurrency as usize;
        let at_once = match self.idle {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => concurrency.saturating_mul(per_connection),
        };
        let connections = at_once.div_ceil(per_connection).saturating_add(concurrency);
        let base = ServeFile::default();
        let mut app = base.app.clone();
        app.max_sessions = app.max_sessions.max(at_once.saturating_add(HEADROOM));
        app.max_sessions_per_ip = app.max_sessions;
        let mut limits = base.limits.clone();
        limits.max_sessions = limits.max_sessions.max(self.per_connection());
        let mut transport = base.transport.clone();
        transport.keep_alive_interval = Some(self.keep_alive);
        transport.max_idle_timeout = self.idle_timeout;
        ServeFile {
            http: false,
            max_connections: base
                .max_connections
                .max(connections.saturating_add(HEADROOM)),
            app,
            limits,
            transport,
            ..base
        }
    }
}

/// The server the run talks to.
struct Server {
    url: String,
    hash: [u8; 32],
    child: Option<ChildProcess>,
}

impl Server {
    fn rss(&self) -> Option<u64> {
        self.child.as_ref().and_then(ChildProcess::resident_bytes)
    }

    /// A `wt serve --json` child with `file` as its configuration.
    async fn spawn(file: ServeFile) -> Result<Server> {
        tokio::task::spawn_blocking(move || {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path =
                std::env::temp_dir().join(format!("wt-soak-{}-{stamp}.toml", std::process::id()));
            std::fs::write(&path, file.to_toml_string()?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let config = path.to_string_lossy().into_owned();
            let child = ChildProcess::spawn(
                "server (wt serve)",
                &[
                    "serve",
                    "--json",
                    "--config",
                    &config,
                    "--bind",
                    "127.0.0.1:0",
                ],
                &[],
            );
            let _ = std::fs::remove_file(&path);
            let child = child?;
            let v = child.announcement();
            let addr = v["addrs"][0]
                .as_str()
                .with_context(|| format!("the server did not say its address: {v}"))?;
            let hash = parse_hash(v["cert_sha256"].as_str().unwrap_or_default())
                .map_err(anyhow::Error::msg)
                .context("the server did not say its certificate hash")?;
            Ok(Server {
                url: format!("https://{addr}/echo"),
                hash,
                child: Some(child),
            })
        })
        .await?
    }

    /// Ends the child with SIGINT and waits for it; says how it ended.
    async fn stop(mut self) -> Result<Option<String>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let (status, killed) =
            tokio::task::spawn_blocking(move || child.interrupt_and_wait(SERVER_EXIT_GRACE))
                .await??;
        Ok(if killed {
            Some(format!(
                "did not exit within {SERVER_EXIT_GRACE:?} of SIGINT and was killed"
            ))
        } else if !status.success() {
            Some(format!("exited with {status}"))
        } else {
            None
        })
    }
}

/// Failed steps so far.
#[derive(Debug, Default)]
struct Failures {
    count: AtomicU64,
    by_kind: Mutex<BTreeMap<ErrorKind, u64>>,
}

impl Failures {
    fn add(&self, f: &Failure) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        *self
            .by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(f.kind())
            .or_default() += 1;
        if n < FAILURES_SHOWN {
            output::warn(format!("{f} [{}]", f.kind()));
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> BTreeMap<ErrorKind, u64> {
        self.by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn errors_text(errors: &BTreeMap<ErrorKind, u64>) -> String {
    if errors.is_empty() {
        return "-".into();
    }
    errors
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn errors_json(errors: &BTreeMap<ErrorKind, u64>) -> serde_json::Value {
    errors
        .iter()
        .map(|(k, n)| (k.to_string(), serde_json::Value::from(*n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".into(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:+.1} %"))
}

fn growth(rss: Option<u64>, base: Option<u64>) -> Option<f64> {
    match (rss, base) {
        (Some(r), Some(b)) if b > 0 => Some((r as f64 - b as f64) * 100.0 / b as f64),
        _ => None,
    }
}

fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn rounded(v: f64) -> serde_json::Value {
    serde_json::Value::from((v * 10.0).round() / 10.0)
}

pub async fn run(args: SoakArgs) -> Result<ExitCode> {
    if args.max_growth.is_nan() || args.max_growth < 0.0 {
        bail!("--max-growth must be a percentage of zero or more");
    }
    if cfg!(debug_assertions) && !args.json {
        output::warn("this is a debug build: use --release for long runs");
    }
    let server = match (&args.url, args.cert_hash) {
        (Some(url), Some(hash)) => {
            url.parse::<webtransport::WebTransportUrl>()?;
            Server {
                url: url.clone(),
                hash,
                child: None,
            }
        }
        _ => Server::spawn(args.server_file()).await?,
    };
    let mut config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![server.hash]),
        connect_timeout: args.timeout,
        stream_creation_timeout: args.timeout,
        max_retries: 0,
        ..ClientConfig::default()
    };
    config.transport.keep_alive_interval = Some(args.keep_alive);
    config.transport.max_idle_timeout = args.idle_timeout;
    let target = Target {
        client: Client::new(config).context("invalid client settings")?,
        url: server.url.clone(),
        timeout: args.timeout,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = stop.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.store(true, Ordering::Relaxed);
        }
    });

    let outcome = match args.idle {
        Some(n) => idle(&args, &server, &target, n, &stop).await,
        None => cycles(&args, &server, &target, &stop).await,
    };
    ctrl_c.abort();
    let opened = server
        .child
        .as_ref()
        .map(|c| c.event_count("session_opened"));
    let closed = server
        .child
        .as_ref()
        .map(|c| c.event_count("session_closed"));
    let server_end = server.stop().await?;
    let mut outcome = outcome?;
    if let Some(problem) = &server_end {
        outcome.problems.push(format!("the server {problem}"));
    }
    if stop.load(Ordering::Relaxed) {
        outcome.problems.push("interrupted".into());
    }
    let ok = outcome.problems.is_empty();
    if args.json {
        let mut fields = vec![("event", "result".into()), ("ok", ok.into())];
        fields.extend(outcome.fields.iter().map(|(k, v)| (*k, v.clone())));
        fields.push(("server_sessions_opened", opened.into()));
        fields.push(("server_sessions_closed", closed.into()));
        fields.push(("problems", outcome.problems.clone().into()));
        output::json_line(&fields);
    } else {
        output::line("");
        let mut text = format!("{}: {}", if ok { "ok" } else { "FAILED" }, outcome.summary);
        if let (Some(o), Some(c)) = (opened, closed) {
            text += &format!("; the server opened {o} sessions and closed {c}");
        }
        output::line(text);
        for p in &outcome.problems {
            output::line(format!("  {p}"));
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How a run went.
struct Outcome {
    /// One sentence.
    summary: String,
    /// The same for the JSON result line.
    fields: Vec<(&'static str, serde_json::Value)>,
    /// What makes it fail.
    problems: Vec<String>,
}

/// The lines of a run: a table, or JSON lines.
struct Table {
    json: bool,
    start: Instant,
}

impl Table {
    fn new(json: bool, header: &str, columns: &[(&str, usize)]) -> Table {
        if !json {
            output::line(header);
            output::line("");
            let mut head = String::new();
            for (i, (name, width)) in columns.iter().enumerate() {
                if i == 0 {
                    head += &format!("{name:<width$}");
                } else {
                    head += &format!("  {name:>width$}");
                }
            }
            output::line(head.trim_end());
        }
        Table {
            json,
            start: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A memory sample of the cycles mode.
struct CycleSample {
    label: String,
    cycles: u64,
    elapsed: Duration,
    rss: Option<u64>,
}

async fn cycles(
    args: &SoakArgs,
    server: &Server,
    target: &Target,
    stop: &Arc<AtomicBool>,
) -> Result<Outcome> {
    let per_connection = args.per_connection();
    let limit = args.cycles.unwrap_or(u64::MAX);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let length = match (args.cycles, args.duration) {
        (Some(n), Some(d)) => format!("{n} cycles or {d:?}, whichever comes first"),
        (Some(n), None) => format!("{n} cycles"),
        (None, Some(d)) => format!("{d:?}"),
        (None, None) => unreachable!("clap requires one"),
    };
    let header = format!(
        "wt soak: {length}, {} at once, {}; server {} ({}); {} build",
        args.concurrency,
        if per_connection == 1 {
            "a new connection each cycle".to_owned()
        } else {
            format!("{per_connection} sessions per connection")
        },
        server.url,
        server.child.as_ref().map_or_else(
            || "elsewhere".to_owned(),
            |c| format!("child pid {}", c.pid())
        ),
        build(),
    );
    if args.json {
        output::json_line(&[
            ("event", "run".into()),
            ("mode", "cycles".into()),
            ("cycles", args.cycles.into()),
            ("duration_s", args.duration.map(|d| d.as_secs_f64()).into()),
            ("concurrency", args.concurrency.into()),
            ("sessions_per_connection", per_connection.into()),
            ("server", server.url.clone().into()),
            (
                "server_pid",
                server.child.as_ref().map(ChildProcess::pid).into(),
            ),
            ("build", build().into()),
        ]);
    }
    let table = Table::new(
        args.json,
        &header,
        &[
            ("sample", 8),
            ("cycles", 9),
            ("elapsed", 9),
            ("cycles/s", 9),
            ("server RSS", 10),
            ("vs warm-up", 10),
            ("failed", 6),
            ("errors", 0),
        ],
    );

    let failures = Arc::new(Failures::default());
    let tickets = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<String>();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (target, failures, tickets, done, samples, stop) = (
            target.clone(),
            failures.clone(),
            tickets.clone(),
            done.clone(),
            samples_tx.clone(),
            stop.clone(),
        );
        let (warmup, every) = (args.warmup, args.report_every);
        workers.spawn(async move {
            let mut reuse: Option<Open> = None;
            loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = tickets.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let payload = format!("wt soak cycle {n:020}");
                if let Err(f) = target
                    .cycle(&mut reuse, per_connection, payload.as_bytes())
                    .await
                {
                    failures.add(&f);
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished == warmup {
                    let _ = samples.send("warm-up".into());
                }
                if finished % every == 0 {
                    let _ = samples.send(finished.to_string());
                }
            }
            if let Some(open) = reuse {
                let _ = target.close_connection(open).await;
            }
        });
    }
    drop(samples_tx);

    let mut rows: Vec<CycleSample> = Vec::new();
    let mut base: Option<u64> = None;
    let print = |label: String, rows: &mut Vec<CycleSample>, base: &mut Option<u64>| {
        let s = CycleSample {
            label,
            cycles: done.load(Ordering::Relaxed),
            elapsed: table.elapsed(),
            rss: server.rss(),
        };
        if s.label == "warm-up" {
            *base = s.rss;
        }
        let (prev_cycles, prev_elapsed) = rows
            .last()
            .map_or((0, Duration::ZERO), |p| (p.cycles, p.elapsed));
        let secs = (s.elapsed - prev_elapsed).as_secs_f64();
        let rate = (rows.last().is_some() && secs > 0.0 && s.cycles > prev_cycles)
            .then(|| (s.cycles - prev_cycles) as f64 / secs);
        let g = growth(s.rss, *base).filter(|_| s.label != "warm-up");
        let errors = failures.snapshot();
        if table.json {
            output::json_line(&[
                ("event", "sample".into()),
                ("label", s.label.clone().into()),
                ("cycles", s.cycles.into()),
                ("elapsed_s", rounded(s.elapsed.as_secs_f64())),
                ("cycles_per_s", rate.map(rounded).into()),
                ("server_rss", s.rss.into()),
                ("growth_percent", g.map(rounded).into()),
                ("failed", failures.count().into()),
                ("errors", errors_json(&errors)),
            ]);
        } else {
            output::line(format!(
                "{:<8}  {:>9}  {:>9}  {:>9}  {:>10}  {:>10}  {:>6}  {}",
                s.label,
                s.cycles,
                format!("{:.1}s", s.elapsed.as_secs_f64()),
                rate.map_or_else(|| "-".into(), |r| format!("{r:.1}")),
                mib(s.rss),
                percent(g),
                failures.count(),
                errors_text(&errors),
            ));
        }
        rows.push(s);
    };
    print("start".into(), &mut rows, &mut base);
    if args.warmup == 0 {
        print("warm-up".into(), &mut rows, &mut base);
    }
    while let Some(label) = samples_rx.recv().await {
        print(label, &mut rows, &mut base);
    }
    while let Some(r) = workers.join_next().await {
        r.context("a soak worker failed")?;
    }
    let cycles = done.load(Ordering::Relaxed);
    let elapsed = table.elapsed();
    // Let the server finish closing what the last cycles closed before the last sample.
    settle(server).await;
    print("end".into(), &mut rows, &mut base);

    let failed = failures.count();
    let after_warmup: Vec<f64> = rows
        .iter()
        .skip_while(|r| r.label != "warm-up")
        .skip(1)
        .filter_map(|r| growth(r.rss, base))
        .collect();
    let max_growth = after_warmup.iter().copied().reduce(f64::max);
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!(
            "{failed} cycles failed: {}",
            errors_text(&failures.snapshot())
        ));
    }
    if let Some(g) = max_growth.filter(|g| *g > args.max_growth) {
        problems.push(format!(
            "the server's memory grew by {g:.1} % after the warm-up (limit {} %)",
            args.max_growth
        ));
    }
    let rate = cycles as f64 / elapsed.as_secs_f64().max(1e-9);
    let memory = match (server.child.is_some(), base, max_growth) {
        (false, _, _) => "server memory not measured (it runs elsewhere)".to_owned(),
        (true, None, _) => format!(
            "no growth check: the run ended before the warm-up of {} cycles",
            args.warmup
        ),
        (true, Some(b), g) => format!(
            "server RSS {} after the warm-up, at most {} more after it (limit {} %)",
            mib(Some(b)),
            percent(g.or(Some(0.0))),
            args.max_growth
        ),
    };
    Ok(Outcome {
        summary: format!(
            "{cycles} cycles in {:.1} s ({rate:.1}/s), {failed} failed; {memory}",
            elapsed.as_secs_f64()
        ),
        fields: vec![
            ("mode", "cycles".into()),
            ("cycles", cycles.into()),
            ("elapsed_s", rounded(elapsed.as_secs_f64())),
            ("cycles_per_s", rounded(rate)),
            ("failed", failed.into()),
            ("errors", errors_json(&failures.snapshot())),
            ("server_rss_warmup", base.into()),
            ("max_growth_percent", max_growth.map(rounded).into()),
            ("limit_percent", args.max_growth.into()),
        ],
        problems,
    })
}

/// Waits until the spawned server has closed every session it opened (at most
/// [`SETTLE_LIMIT`]), then a moment for its connections to go.
async fn settle(server: &Server) {
    let Some(child) = &server.child else { return };
    let until = Instant::now() + SETTLE_LIMIT;
    while child.event_count("session_closed") < child.event_count("session_opened")
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn idle(
    args: &SoakArgs,
    server: &Server,
    target: &Target,
    count: u64,
    stop: &Arc<AtomicBool>,
) -> Result<Outcome> {
    let hold = args.hold.context("--idle needs --hold")?;
    let per_connection = args.per_connection();
    let connections = count.div_ceil(u64::from(per_connection));
    let header = format!(
        "wt soak: {count} idle sessions on {connections} connections ({per_connection} each), \
         held {hold:?} with keep-alive every {:?} (idle timeout {:?}); server {} ({}); {} build",
        args.keep_alive,
        args.idle_timeout,
        server.url,
        server.child.as_ref().map_or_else(
            || "elsewhere".to_owned(),
            |c| format!("child pid {}", c.pid())
        ),
        build(),
    );
    if args.json {
        output::json_line(&[
            ("event", "run".into()),
            ("mode", "idle".into()),
            ("sessions", count.into()),
            ("connections", connections.into()),
            ("hold_s", hold.as_secs_f64().into()),
            ("keep_alive_s", args.keep_alive.as_secs_f64().into()),
            ("idle_timeout_s", args.idle_timeout.as_secs_f64().into()),
            ("server", server.url.clone().into()),
            (
                "server_pid",
                server.child.as_ref().map(ChildProcess::pid).into(),
            ),
            ("build", build().into()),
        ]);
    }
    let table = Table::new(
        args.json,
        &header,
        &[
            ("sample", 10),
            ("sessions", 8),
            ("elapsed", 9),
            ("server RSS", 10),
            ("ended", 6),
            ("errors", 0),
        ],
    );
    let failures = Arc::new(Failures::default());
    let print = |label: &str, sessions: &[Session], failures: &Failures| {
        let rss = server.rss();
        let ended = sessions.iter().filter(|s| s.is_closed()).count();
        let elapsed = table.elapsed().as_secs_f64();
        let errors = failures.snapshot();
        if table.json {
            output::json_line(&[
                ("event", "sample".into()),
                ("label", label.into()),
                ("sessions", sessions.len().into()),
                ("elapsed_s", rounded(elapsed)),
                ("server_rss", rss.into()),
                ("ended", ended.into()),
                ("errors", errors_json(&errors)),
            ]);
        } else {
            output::line(format!(
                "{label:<10}  {:>8}  {:>9}  {:>10}  {ended:>6}  {}",
                sessions.len(),
                format!("{elapsed:.1}s"),
                mib(rss),
                errors_text(&errors),
            ));
        }
        rss
    };
    let before = print("before", &[], &failures);

    // Open: `concurrency` workers, each taking whole connections.
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (target, failures, next, stop) =
            (target.clone(), failures.clone(), next.clone(), stop.clone());
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= connections || stop.load(Ordering::Relaxed) {
                    break;
                }
                let here = (count - c * u64::from(per_connection)).min(u64::from(per_connection));
                let mut reuse: Option<Open> = None;
                for _ in 0..here {
                    match target.session(&mut reuse, per_connection).await {
                        Ok(s) => mine.push(s),
                        Err(f) => {
                            failures.add(&f);
                            break;
                        }
                    }
                }
                // The sessions keep their connection; `reuse` is only for opening.
                drop(reuse);
            }
            mine
        });
    }
    let mut sessions: Vec<Session> = Vec::with_capacity(count as usize);
    while let Some(r) = workers.join_next().await {
        sessions.extend(r.context("a soak worker failed")?);
    }
    let not_opened = count - sessions.len() as u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened_rss = print("opened", &sessions, &failures);

    // Hold, with a sample every tenth of the time (at most a minute apart).
    let step = (hold / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let held_from = Instant::now();
    while held_from.elapsed() < hold && !stop.load(Ordering::Relaxed) {
        let left = hold.saturating_sub(held_from.elapsed());
        tokio::time::sleep(step.min(left)).await;
        if held_from.elapsed() < hold {
            print(
                &format!("held {}s", held_from.elapsed().as_secs()),
                &sessions,
                &failures,
            );
        }
    }
    let held = held_from.elapsed();

    // Check each: still open, and one echo.
    let dropped = Arc::new(AtomicU64::new(0));
    let queue = Arc::new(Mutex::new(sessions.clone()));
    let mut checkers = tokio::task::JoinSet::new();
    for _ in 0..VERIFY_CONCURRENCY {
        let (target, failures, dropped, queue) = (
            target.clone(),
            failures.clone(),
            dropped.clone(),
            queue.clone(),
        );
        checkers.spawn(async move {
            let mut n = 0u64;
            loop {
                let Some(session) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    break;
                };
                n += 1;
                let payload = format!("wt soak held {n:020}");
                let check = if session.is_closed() {
                    Err(work::ended_while_held(session.closed().await))
                } else {
                    target.echo(&session, payload.as_bytes()).await
                };
                if let Err(f) = check {
                    failures.add(&f);
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(r) = checkers.join_next().await {
        r.context("a soak worker failed")?;
    }
    let dropped = dropped.load(Ordering::Relaxed);
    let after = print("after", &sessions, &failures);

    // Close every connection (each session's connection once).
    let mut seen = std::collections::HashSet::new();
    let mut closing = tokio::task::JoinSet::new();
    for s in &sessions {
        let conn = s.connection().clone();
        if seen.insert(conn.connection_id().to_owned()) {
            let timeout = args.timeout;
            closing.spawn(async move { conn.close_within(0, "", timeout).await });
        }
    }
    let total = sessions.len();
    drop(sessions);
    while closing.join_next().await.is_some() {}
    settle(server).await;
    let closed_rss = print("closed", &[], &failures);

    let mut problems = Vec::new();
    if not_opened > 0 {
        problems.push(format!(
            "{not_opened} of {count} sessions did not open: {}",
            errors_text(&failures.snapshot())
        ));
    }
    if dropped > 0 {
        problems.push(format!(
            "{dropped} of {total} held sessions were dropped: {}",
            errors_text(&failures.snapshot())
        ));
    }
    let per_session = match (before, opened_rss) {
        (Some(b), Some(o)) if total > 0 => Some(o.saturating_sub(b) as f64 / total as f64),
        _ => None,
    };
    Ok(Outcome {
        summary: format!(
            "{total} sessions held {:.0} s, {dropped} dropped; server RSS {} before, {} \
             opened, {} after the hold ({}), {} closed{}",
            held.as_secs_f64(),
            mib(before),
            mib(opened_rss),
            mib(after),
            percent(growth(after, opened_rss)),
            mib(closed_rss),
            per_session.map_or_else(String::new, |p| format!(
                "; {:.1} KiB per session",
                p / 1024.0
            )),
        ),
        fields: vec![
            ("mode", "idle".into()),
            ("sessions", total.into()),
            ("connections", connections.into()),
            ("held_s", rounded(held.as_secs_f64())),
            ("dropped", dropped.into()),
            ("not_opened", not_opened.into()),
            ("errors", errors_json(&failures.snapshot())),
            ("server_rss_before", before.into()),
            ("server_rss_opened", opened_rss.into()),
            ("server_rss_after", after.into()),
            ("server_rss_closed", closed_rss.into()),
        ],
        problems,
    })
}
