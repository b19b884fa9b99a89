//! Python peers from PyPI against our stack, both directions, on loopback:
//! pywebtransport 0.8.1 (the seed's version), the newest pywebtransport (0.21, draft-16
//! only) and a small WebTransport client and server of our own on aioquic 1.7.2's
//! `H3Connection`.
//!
//! Each cell spawns a peer script from `python/` with its virtual environment's
//! interpreter (made by `setup-python.sh`), drives our side, and asserts every check. The
//! `*_through_loss` cells run the same checks with the impairment relay between our side
//! and the peer, losing 2 % of the packets each way. The
//! peers print JSON lines (see `python/peer_common.py`); our driver logs each peer's
//! SETTINGS and the draft chosen at info, written straight to stderr so that they show in
//! the output of a passing run too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop::{lossy_path, via};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use webtransport::{CertVerification, ClientConfig, ConnectOptions, Connection, Session};
use webtransport_relay::{Relay, RelayConfig};

const STARTUP: Duration = Duration::from_secs(30);
const CLIENT_RUN: Duration = Duration::from_secs(120);
const CHECK: Duration = Duration::from_secs(10);

/// Mirrors `python/peer_common.py`.
const BIDI_MESSAGE: &[u8] = b"hello over a bidirectional stream";
const UNI_MESSAGE: &[u8] = b"hello over a unidirectional stream";
const DATAGRAM_MESSAGE: &[u8] = b"hello datagram";
const CLOSE_CODE: u32 = 4242;
const CLOSE_REASON: &str = "bye from webtransport-rs";

/// A Python peer: which environment runs it and which scripts it has.
#[derive(Clone, Copy)]
struct Peer {
    name: &'static str,
    venv: &'static str,
    client: &'static str,
    server: &'static str,
    /// Version `setup-python.sh` pins; the scripts report what is installed.
    version: &'static str,
    /// pywebtransport 0.8.1 reads and writes capsules without DATA frames around them;
    /// our side must find that out by itself (CapsuleFraming::Auto).
    bare_capsules: bool,
}

const PWT081: Peer = Peer {
    name: "pywebtransport 0.8.1",
    venv: ".venv-pwt081",
    client: "pwt081_client.py",
    server: "pwt081_server.py",
    version: "0.8.1",
    bare_capsules: true,
};

const PWT_NEW: Peer = Peer {
    name: "pywebtransport 0.21",
    venv: ".venv-pwt-new",
    client: "pwtnew_client.py",
    server: "pwtnew_server.py",
    version: "0.21.1",
    bare_capsules: false,
};

const AIOQUIC: Peer = Peer {
    name: "aioquic 1.7.2",
    venv: ".venv-pwt081",
    client: "aioquic_client.py",
    server: "aioquic_server.py",
    version: "1.7.2",
    bare_capsules: false,
};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Always visible, even when libtest captures the output of a passing test.
fn say(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

/// Our driver's SETTINGS / draft lines (and warnings) on the real stderr.
fn init_log() {
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,webtransport::engine=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn python(peer: &Peer) -> PathBuf {
    let py = interop_dir().join(peer.venv).join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run interop/setup-python.sh (interop/run does)",
        py.display()
    );
    py
}

fn wt_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| interop_dir().join("../target"));
    let wt = target.join("debug/wt");
    assert!(
        wt.exists(),
        "{} is missing: build it with `cargo build -p webtransport-cli` at the repository root \
         (interop/setup-python.sh does)",
        wt.display()
    );
    wt
}

/// A child process killed (with its group) when dropped, its stdout read line by line
/// and its stderr kept for failure reports.
struct Proc {
    label: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn collect_stderr(
    stream: impl AsyncRead + Unpin + Send + 'static,
    label: String,
) -> Arc<Mutex<String>> {
    let buf: Arc<Mutex<String>> = Arc::default();
    let keep = buf.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // The wt binary's own driver lines: the peer's SETTINGS and the draft chosen.
            if line.contains("peer SETTINGS") {
                say(format!("  [{label}] {line}"));
            }
            let mut b = keep.lock().unwrap();
            if b.len() < 256 * 1024 {
                b.push_str(&line);
                b.push('\n');
            }
        }
    });
    buf
}

fn spawn(label: &str, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(interop_dir().join("python"))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let stdout = child.stdout.take().unwrap();
    let stderr = collect_stderr(child.stderr.take().unwrap(), label.to_owned());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc {
        label: label.to_owned(),
        child,
        lines: rx,
        stderr,
    }
}

impl Proc {
    /// The next JSON line on stdout, or `None` at EOF or after `within`.
    async fn next_json(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = tokio::time::timeout(left, self.lines.recv()).await.ok()??;
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => return Some(v),
                Err(_) => say(format!("  [{}] stdout: {line}", self.label)),
            }
        }
    }

    /// Waits for the first line whose `key` is `value`.
    async fn wait_for(&mut self, key: &str, value: &str, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let v = self.next_json(left).await?;
            if v[key] == value {
                return Some(v);
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "{what}\n---- {} stderr ----\n{}---- end of {} stderr ----",
            self.label,
            self.stderr(),
            self.label
        );
    }
}

/// Results of one cell: (check, ok, detail).
#[derive(Default)]
struct Results {
    cell: String,
    rows: Vec<(String, bool, String)>,
}

impl Results {
    fn new(cell: impl Into<String>) -> Self {
        Results {
            cell: cell.into(),
            rows: Vec::new(),
        }
    }

    fn record(&mut self, check: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        say(format!(
            "[{}] {check:20} {} {detail}",
            self.cell,
            if ok { "ok  " } else { "FAIL" }
        ));
        self.rows.push((check.to_owned(), ok, detail));
    }

    async fn run<F>(&mut self, check: &str, within: Duration, fut: F)
    where
        F: std::future::Future<Output = Result<String, String>>,
    {
        match tokio::time::timeout(within, fut).await {
            Ok(Ok(detail)) => self.record(check, true, detail),
            Ok(Err(e)) => self.record(check, false, e),
            Err(_) => self.record(check, false, format!("timed out after {within:?}")),
        }
    }

    fn failed(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| !r.1)
            .map(|r| r.0.clone())
            .collect()
    }

    /// Panics (with the peer's stderr) unless every expected check ran and passed.
    fn assert_all(&self, expected: &[&str], peer: &Proc) {
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|c| !self.rows.iter().any(|r| r.0 == **c))
            .collect();
        let failed = self.failed();
        if !missing.is_empty() || !failed.is_empty() {
            peer.fail(format!(
                "[{}] failed checks {failed:?}, checks never reported {missing:?}",
                self.cell
            ));
        }
    }
}

// -------------------------------------------------------------------------------------
// Their client against our servers
// -------------------------------------------------------------------------------------

const ROUTE_CHECKS: [&str; 9] = [
    "session",
    "bidi_echo",
    "bidi_echo_256k",
    "uni_echo",
    "datagram_echo",
    "server_bidi",
    "close_by_server",
    "close_by_client",
    "summary",
];

const ECHO_CHECKS: [&str; 7] = [
    "session",
    "bidi_echo",
    "bidi_echo_256k",
    "uni_echo",
    "datagram_echo",
    "close_by_client",
    "summary",
];

/// Runs a peer's client script to its summary line and records its checks.
async fn run_client_script(peer: &Peer, cell: &str, base: &str, mode: &str) -> (Results, Proc) {
    let py = python(peer);
    let mut proc = spawn(cell, &py, &[peer.client, base, mode], &[]);
    let mut results = Results::new(cell);
    let deadline = Instant::now() + CLIENT_RUN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(v) = proc.next_json(left).await else {
            results.record(
                "summary",
                false,
                "the client ended (or hung) before its summary line",
            );
            break;
        };
        if let Some(check) = v["check"].as_str() {
            let ok = v["ok"].as_bool().unwrap_or(false);
            let detail = format!("{}ms {}", v["ms"], v["detail"].as_str().unwrap_or(""));
            results.record(check, ok, detail);
        } else if v.get("summary").is_some() {
            let ok = v["summary"] == "pass";
            results.record(
                "summary",
                ok,
                format!("passed {} failed {}", v["passed"], v["failed"]),
            );
            break;
        }
    }
    (results, proc)
}

/// One line on what the relay of a cell did, if it has one.
fn report_relay(cell: &str, relay: Option<&Relay>) {
    if let Some(relay) = relay {
        let s = relay.stats();
        for (way, d) in [("c->s", s.client_to_server), ("s->c", s.server_to_client)] {
            say(format!(
                "[{cell}] relay {way}: {} packets, {} lost, {} forwarded",
                d.received_packets, d.dropped_loss, d.forwarded_packets
            ));
        }
    }
}

/// Their client against the interop route server (`interop::start`).
async fn client_vs_route_server(peer: Peer) {
    client_vs_route_server_via(peer, None).await;
}

/// [`client_vs_route_server`], through a relay with `path` when there is one.
async fn client_vs_route_server_via(peer: Peer, path: Option<RelayConfig>) {
    init_log();
    let lossy = if path.is_some() { " (2 % loss)" } else { "" };
    let cell = format!("{} client -> route server{lossy}", peer.name);
    // Default configuration: the server tells a pywebtransport 0.8.1 client by its
    // user-agent and writes its capsules bare (CapsuleFraming::Auto, docs/design.md).
    let srv = interop::start(|_| {}).await;
    let (port, relay) = via(srv.port, path);
    say(format!(
        "[{cell}] server on 127.0.0.1:{}, the client goes to 127.0.0.1:{port}",
        srv.port
    ));
    let base = format!("https://127.0.0.1:{port}");
    let (mut results, proc) = run_client_script(&peer, &cell, &base, "routes").await;

    // What the server saw of the client's close.
    let want_reason = format!("bye from {}", client_tag(&peer));
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = srv.observed.lock().unwrap().closes.clone();
        if seen.iter().any(|c| c.0 == "/close-watch") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let close = seen.iter().find(|c| c.0 == "/close-watch");
    match close {
        Some((_, code, reason, remote))
            if *code == CLOSE_CODE && *reason == want_reason && *remote =>
        {
            results.record(
                "server_saw_close",
                true,
                format!("code {code} reason {reason:?}"),
            )
        }
        other => results.record("server_saw_close", false, format!("server saw {other:?}")),
    }
    report_relay(&cell, relay.as_ref());
    let mut expected = ROUTE_CHECKS.to_vec();
    expected.push("server_saw_close");
    results.assert_all(&expected, &proc);
}

/// The `bye from NAME` tag each client script puts in its close reason.
fn client_tag(peer: &Peer) -> &'static str {
    match peer.client {
        "pwt081_client.py" => "pwt081",
        "pwtnew_client.py" => "pwtnew",
        _ => "aioquic",
    }
}

/// Their client against `wt serve --json`.
async fn client_vs_wt_serve(peer: Peer) {
    init_log();
    let cell = format!("{} client -> wt serve", peer.name);
    let mut serve = spawn(
        "wt serve",
        &wt_binary(),
        &["serve", "--json", "--bind", "127.0.0.1:0"],
        &[
            ("RUST_LOG", "warn,webtransport::engine=info"),
            ("NO_COLOR", "1"),
        ],
    );
    let listening = serve
        .wait_for("event", "listening", STARTUP)
        .await
        .unwrap_or_else(|| serve.fail("wt serve printed no listening line"));
    let addr = listening["addrs"][0].as_str().unwrap().to_owned();
    let (mut results, client) =
        run_client_script(&peer, &cell, &format!("https://{addr}"), "echo").await;
    // wt serve reports the session's close with the client's code and reason.
    let want_reason = format!("bye from {}", client_tag(&peer));
    let closed = serve
        .wait_for("event", "session_closed", Duration::from_secs(5))
        .await;
    match closed {
        Some(v)
            if v["code"] == CLOSE_CODE
                && v["reason"] == want_reason.as_str()
                && v["remote"] == true =>
        {
            results.record(
                "server_saw_close",
                true,
                format!("code {} reason {}", v["code"], v["reason"]),
            )
        }
        other => results.record(
            "server_saw_close",
            false,
            format!("wt serve printed {other:?}"),
        ),
    }
    if !results.failed().is_empty() {
        say(format!("---- wt serve stderr ----\n{}", serve.stderr()));
    }
    let mut expected = ECHO_CHECKS.to_vec();
    expected.push("server_saw_close");
    results.assert_all(&expected, &client);
}

// -------------------------------------------------------------------------------------
// Our client against their server
// -------------------------------------------------------------------------------------

/// A peer server started with a fresh certificate; `hash` pins it.
struct PeerServer {
    proc: Proc,
    port: u16,
    hash: [u8; 32],
    hash_hex: String,
    dir: PathBuf,
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_peer_server(peer: &Peer, label: &str) -> PeerServer {
    let cert = webtransport::generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wt-python-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    let py = python(peer);
    let mut proc = spawn(
        label,
        &py,
        &[
            peer.server,
            cert_path.to_str().unwrap(),
            key_path.to_str().unwrap(),
        ],
        &[],
    );
    let ready = proc
        .wait_for("event", "ready", STARTUP)
        .await
        .unwrap_or_else(|| proc.fail(format!("{} printed no ready line", peer.server)));
    let port = ready["port"].as_u64().unwrap() as u16;
    say(format!(
        "[{label}] {} {} listening on 127.0.0.1:{port}",
        ready["peer"], ready["version"]
    ));
    if ready["version"].as_str() != Some(peer.version) {
        proc.fail(format!(
            "expected version {}, the server runs {}",
            peer.version, ready["version"]
        ));
    }
    let hash = webtransport::tls::certificate_sha256(&cert.cert_der);
    PeerServer {
        proc,
        port,
        hash,
        hash_hex: cert.sha256_hex(),
        dir,
    }
}

/// The default configuration, pinned to the peer's certificate: a pywebtransport 0.8.1
/// server closes the connection with H3_FRAME_UNEXPECTED on a DATA-framed close capsule
/// (docs/protocol.md), and the default (CapsuleFraming::Auto) finds that out from its
/// SETTINGS, with no setting for that peer.
fn client_config(hash: [u8; 32]) -> ClientConfig {
    ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![hash]),
        connect_timeout: CHECK,
        stream_creation_timeout: CHECK,
        ..ClientConfig::default()
    }
}

async fn open(cfg: &ClientConfig, port: u16, path: &str) -> Result<(Connection, Session), String> {
    let opts = ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        ..ConnectOptions::default()
    };
    Connection::connect_with(cfg, opts)
        .await
        .map_err(|e| format!("connect {path}: {e}"))
}

fn big_payload() -> Vec<u8> {
    // Same generator as peer_common.big_payload (xorshift), 256 KiB.
    let mut out = Vec::with_capacity(256 * 1024 + 8);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < 256 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(256 * 1024);
    out
}

fn same(sent: &[u8], got: &[u8]) -> Result<String, String> {
    if sent == got {
        Ok(format!("{} bytes echoed intact", got.len()))
    } else {
        Err(format!(
            "sent {} bytes, got {} different bytes",
            sent.len(),
            got.len()
        ))
    }
}

async fn bidi_echo(session: &Session, payload: &[u8]) -> Result<String, String> {
    let (mut send, mut recv) = session.open_bi().await.map_err(|e| format!("open: {e}"))?;
    let write = async {
        send.write_all(payload).await?;
        send.finish()
    };
    let (w, r) = tokio::join!(write, recv.read_to_end(payload.len() + 65536));
    w.map_err(|e| format!("write: {e}"))?;
    same(payload, &r.map_err(|e| format!("read: {e}"))?)
}

async fn uni_echo(session: &Session) -> Result<String, String> {
    let mut send = session.open_uni().await.map_err(|e| format!("open: {e}"))?;
    send.write_all(UNI_MESSAGE)
        .await
        .map_err(|e| format!("write: {e}"))?;
    send.finish().map_err(|e| format!("finish: {e}"))?;
    let mut recv = session
        .accept_uni()
        .await
        .map_err(|e| format!("accept: {e}"))?;
    let got = recv
        .read_to_end(65536)
        .await
        .map_err(|e| format!("read: {e}"))?;
    same(UNI_MESSAGE, &got).map(|d| format!("{d} on server stream {}", recv.id()))
}

async fn datagram_echo(session: &Session) -> Result<String, String> {
    for attempt in 1..=5 {
        session
            .send_datagram(DATAGRAM_MESSAGE)
            .map_err(|e| format!("send: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(1), session.read_datagram()).await {
            Ok(Ok(d)) => {
                return same(DATAGRAM_MESSAGE, &d).map(|s| format!("{s} (attempt {attempt})"))
            }
            Ok(Err(e)) => return Err(format!("session ended: {e}")),
            Err(_) => continue,
        }
    }
    Err("no echo of 5 datagrams".into())
}

async fn expect_close(session: &Session, code: u32, reason: &str) -> Result<String, String> {
    let info = session
        .closed()
        .await
        .map_err(|e| format!("session ended badly: {e}"))?;
    if info.code == code && info.reason == reason && info.remote {
        Ok(format!(
            "closed by the server with code {code} reason {reason:?}"
        ))
    } else {
        Err(format!("got {info:?}, want remote close {code} {reason:?}"))
    }
}

fn report_protocol(cell: &str, conn: &Connection) {
    let p = conn.protocol();
    let settings = p
        .peer_settings
        .map(|s| s.to_string())
        .unwrap_or_else(|| "none".into());
    say(format!(
        "[{cell}] peer SETTINGS: {settings}; draft chosen: {}",
        p.draft
            .map(|d| d.to_string())
            .unwrap_or_else(|| "none".into())
    ));
}

const LIBRARY_CHECKS: [&str; 9] = [
    "session",
    "capsule_framing",
    "bidi_echo",
    "bidi_echo_256k",
    "uni_echo",
    "datagram_echo",
    "close_by_client",
    "close_by_server",
    "server_bidi",
];

/// Our library's client against their server.
async fn library_vs_server(peer: Peer) {
    library_vs_server_via(peer, None).await;
}

/// [`library_vs_server`], through a relay with `path` when there is one.
async fn library_vs_server_via(peer: Peer, path: Option<RelayConfig>) {
    init_log();
    let lossy = if path.is_some() { " (2 % loss)" } else { "" };
    let cell = format!("webtransport client -> {} server{lossy}", peer.name);
    let mut srv = start_peer_server(&peer, &cell).await;
    let (port, relay) = via(srv.port, path);
    let cfg = client_config(srv.hash);
    let mut results = Results::new(&cell);

    let echo = tokio::time::timeout(CHECK, open(&cfg, port, "/echo")).await;
    match echo {
        Ok(Ok((conn, session))) => {
            report_protocol(&cell, &conn);
            results.record(
                "session",
                true,
                format!("session {} ({:?})", session.id(), conn.protocol().draft),
            );
            results
                .run("bidi_echo", CHECK, bidi_echo(&session, BIDI_MESSAGE))
                .await;
            results
                .run("bidi_echo_256k", CHECK, bidi_echo(&session, &big_payload()))
                .await;
            results.run("uni_echo", CHECK, uni_echo(&session)).await;
            results
                .run("datagram_echo", CHECK, datagram_echo(&session))
                .await;
            let bare = conn.protocol().unframed_capsules;
            results.record(
                "capsule_framing",
                bare == peer.bare_capsules,
                format!(
                    "capsules written bare: {bare} (the peer wants bare: {})",
                    peer.bare_capsules
                ),
            );
            conn.close_within(0, "echo checks done", Duration::from_secs(2))
                .await;
        }
        Ok(Err(e)) => results.record("session", false, e),
        Err(_) => results.record("session", false, "timed out"),
    }

    // We close; the server prints the code and reason it saw.
    let close = async {
        let (conn, session) = open(&cfg, port, "/close-watch").await?;
        session
            .close(CLOSE_CODE, CLOSE_REASON)
            .map_err(|e| format!("close: {e}"))?;
        let seen = srv.proc.wait_for("event", "observed", CHECK).await;
        conn.close(0, "done").await;
        match seen {
            Some(v) if v["code"] == CLOSE_CODE && v["reason"] == CLOSE_REASON => Ok(format!(
                "server saw code {} reason {}",
                v["code"], v["reason"]
            )),
            other => Err(format!("server printed {other:?}")),
        }
    };
    results.run("close_by_client", CHECK * 2, close).await;

    let by_server = async {
        let (conn, session) = open(&cfg, port, "/close-by-server").await?;
        let r = expect_close(&session, 4000, "server bye").await;
        conn.close(0, "done").await;
        r
    };
    results.run("close_by_server", CHECK, by_server).await;

    let server_bidi = async {
        let (conn, session) = open(&cfg, port, "/server-bidi").await?;
        let (mut send, mut recv) = session
            .accept_bi()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let hello = recv
            .read_to_end(1024)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if hello != b"hello from server" {
            return Err(format!("server sent {:?}", String::from_utf8_lossy(&hello)));
        }
        send.write_all(b"reply from webtransport-rs")
            .await
            .map_err(|e| format!("write: {e}"))?;
        send.finish().map_err(|e| format!("finish: {e}"))?;
        let r = expect_close(&session, 1, "reply from webtransport-rs").await;
        conn.close(0, "done").await;
        r
    };
    results.run("server_bidi", CHECK, server_bidi).await;
    report_relay(&cell, relay.as_ref());
    results.assert_all(&LIBRARY_CHECKS, &srv.proc);
}

/// `wt connect --json` against their server's /echo.
async fn wt_connect_vs_server(peer: Peer) {
    init_log();
    let cell = format!("wt connect -> {} server", peer.name);
    let srv = start_peer_server(&peer, &cell).await;
    let url = format!("https://127.0.0.1:{}/echo", srv.port);
    let args = vec![
        "connect",
        &url,
        "--cert-hash",
        &srv.hash_hex,
        "--json",
        "--timeout",
        "10",
    ];
    let mut connect = spawn(
        "wt connect",
        &wt_binary(),
        &args,
        &[
            ("RUST_LOG", "warn,webtransport::engine=info"),
            ("NO_COLOR", "1"),
        ],
    );
    let mut results = Results::new(&cell);
    let deadline = Instant::now() + CLIENT_RUN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(v) = connect.next_json(left).await else {
            results.record("summary", false, "wt connect ended without a summary");
            break;
        };
        if let Some(check) = v["check"].as_str() {
            results.record(
                check,
                v["ok"] == true,
                format!("{}ms {}", v["ms"], v["detail"].as_str().unwrap_or("")),
            );
        } else if v.get("summary").is_some() {
            results.record(
                "summary",
                v["summary"] == "pass",
                format!("passed {} failed {}", v["passed"], v["failed"]),
            );
            break;
        }
    }
    let expected = [
        "session",
        "bidi_echo",
        "bidi_echo_1mib",
        "uni_round_trip",
        "datagram_round_trip",
        "close",
        "summary",
    ];
    if !results.failed().is_empty() {
        say(format!("---- wt connect stderr ----\n{}", connect.stderr()));
    }
    results.assert_all(&expected, &srv.proc);
}

/// The quirk `limits.capsule_framing` exists for, kept measurable: a pywebtransport 0.8.1
/// server that receives a correctly DATA-framed CLOSE_WEBTRANSPORT_SESSION capsule closes
/// the whole connection with H3_FRAME_UNEXPECTED and never learns the close code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwt081_server_refuses_framed_close_capsule() {
    init_log();
    let cell = "webtransport client (framed capsules) -> pywebtransport 0.8.1 server";
    let mut srv = start_peer_server(&PWT081, cell).await;
    let mut cfg = client_config(srv.hash);
    cfg.limits.capsule_framing = webtransport::CapsuleFraming::Framed;
    let (conn, session) = tokio::time::timeout(CHECK, open(&cfg, srv.port, "/close-watch"))
        .await
        .unwrap_or_else(|_| srv.proc.fail("connect timed out"))
        .unwrap_or_else(|e| srv.proc.fail(e));
    session.close(CLOSE_CODE, CLOSE_REASON).unwrap();
    let why = tokio::time::timeout(CHECK, conn.wait_closed())
        .await
        .unwrap_or_else(|_| srv.proc.fail("the peer kept the connection open"))
        .to_string();
    say(format!("[{cell}] connection closed: {why}"));
    if !why.contains("0x105") {
        srv.proc.fail(format!(
            "expected H3_FRAME_UNEXPECTED (0x105) from the peer, got {why}"
        ));
    }
    if let Some(v) = srv
        .proc
        .wait_for("event", "observed", Duration::from_millis(500))
        .await
    {
        srv.proc
            .fail(format!("the peer read the framed close after all: {v}"));
    }
}

// -------------------------------------------------------------------------------------
// The cells
// -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwt081_client_vs_route_server() {
    client_vs_route_server(PWT081).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwt081_client_vs_wt_serve() {
    client_vs_wt_serve(PWT081).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwt081_server_vs_library_client() {
    library_vs_server(PWT081).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwt081_server_vs_wt_connect() {
    wt_connect_vs_server(PWT081).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwtnew_client_vs_route_server() {
    client_vs_route_server(PWT_NEW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwtnew_client_vs_wt_serve() {
    client_vs_wt_serve(PWT_NEW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwtnew_server_vs_library_client() {
    library_vs_server(PWT_NEW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwtnew_client_vs_route_server_through_loss() {
    client_vs_route_server_via(PWT_NEW, Some(lossy_path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwtnew_server_vs_library_client_through_loss() {
    library_vs_server_via(PWT_NEW, Some(lossy_path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwtnew_server_vs_wt_connect() {
    wt_connect_vs_server(PWT_NEW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_client_vs_route_server() {
    client_vs_route_server(AIOQUIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_client_vs_wt_serve() {
    client_vs_wt_serve(AIOQUIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_server_vs_library_client() {
    library_vs_server(AIOQUIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_server_vs_wt_connect() {
    wt_connect_vs_server(AIOQUIC).await;
}
