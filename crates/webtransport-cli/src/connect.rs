//! `wt connect`: opens a session to an echo server (such as `wt serve`) and checks each
//! way of exchanging data, printing one result per check.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use webtransport::{
    tls, CapsuleFraming, CertVerification, Client, ClientConfig, ConnectError, ConnectionError,
    HandshakeError, ReadError, Session,
};

use crate::output;
use webtransport::proto::settings::{WtDraft, WtDrafts};

pub const LONG_ABOUT: &str = "\
Open a WebTransport session to an echo server (such as `wt serve`) and check, in order:

  session              the QUIC handshake, HTTP/3 and the WebTransport session come up
  bidi_echo            a short message on a bidirectional stream comes back intact
  bidi_echo_1mib       1 MiB of pseudo-random bytes comes back intact on one stream
  uni_round_trip       a unidirectional stream's bytes come back on a stream the server opens
  datagram_round_trip  a datagram comes back (sent up to 3 times: datagrams may be lost)
  close                the session closes with code 0 and reason \"wt connect done\"

The exit status is 0 only if every check passed.

By default the server's certificate must chain to the system's trusted roots. For a server
with a self-signed certificate, pin it with --cert-hash (what browsers do with
serverCertificateHashes) or trust it with --ca.";

pub const AFTER_HELP: &str = "\
Examples:
  wt connect https://127.0.0.1:4433/echo --cert-hash 3f2a...e9 (the hash wt serve printed)
  wt connect https://echo.example.com/echo
  wt connect https://localhost:4433/echo --ca certs/cert.pem --json

With --json, stdout carries one JSON object per check and a summary:
  {\"check\":\"bidi_echo\",\"ok\":true,\"ms\":0.8,\"detail\":\"...\"}
  {\"summary\":\"pass\",\"passed\":6,\"failed\":0,\"skipped\":0,\"ms\":42.1,\"url\":\"...\"}";

const CHECKS: [&str; 6] = [
    "session",
    "bidi_echo",
    "bidi_echo_1mib",
    "uni_round_trip",
    "datagram_round_trip",
    "close",
];

const CLOSE_CODE: u32 = 0;
const CLOSE_REASON: &str = "wt connect done";
const BIG: usize = 1024 * 1024;
const DATAGRAM_ATTEMPTS: u32 = 3;
const DATAGRAM_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// WebTransport URL of an echo server, such as https://127.0.0.1:4433/echo
    #[arg(value_name = "URL")]
    url: String,

    /// Trust only the certificate with this SHA-256 hash (64 hex digits; `:` separators
    /// allowed), as `wt serve` and `wt cert` print it
    #[arg(long, value_name = "HEX", value_parser = parse_hash, conflicts_with_all = ["ca", "insecure"])]
    cert_hash: Option<[u8; 32]>,

    /// Trust the CA certificates (or a self-signed certificate) in this PEM file
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,

    /// Do not check the server's certificate at all (unsafe outside a test network)
    #[arg(long)]
    insecure: bool,

    /// Print one JSON object per check and a summary line instead of a table
    #[arg(long)]
    json: bool,

    /// How capsules are written: `auto` frames them unless the server shows it wants them
    /// bare (pywebtransport 0.8.1, which ends the connection with H3_FRAME_UNEXPECTED on a
    /// framed one); `framed` or `unframed` force either way
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_framing)]
    capsule_framing: CapsuleFraming,

    /// Offer only this WebTransport draft; repeat to offer several. One of draft-02,
    /// draft-07, draft-13, draft-15 (also written draft-16), draft-17. The newest draft the
    /// server also offers is spoken. Default: all of them
    #[arg(long = "draft", value_name = "DRAFT", value_parser = parse_draft)]
    drafts: Vec<WtDraft>,

    /// Seconds to wait for the session to open, and for each check
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    timeout: Duration,
}

fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    tls::parse_sha256_hex(text).map_err(|e| e.to_string())
}

pub(crate) fn parse_framing(text: &str) -> Result<CapsuleFraming, String> {
    match text {
        "auto" => Ok(CapsuleFraming::Auto),
        "framed" => Ok(CapsuleFraming::Framed),
        "unframed" => Ok(CapsuleFraming::Unframed),
        _ => Err("expected auto, framed or unframed".into()),
    }
}

fn parse_draft(text: &str) -> Result<WtDraft, String> {
    text.parse::<WtDraft>().map_err(|e| e.to_string())
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err("expected a number of seconds between 0 and 86400, such as 10 or 2.5".into()),
    }
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let verification = if let Some(hash) = args.cert_hash {
        CertVerification::ServerCertificateHashes(vec![hash])
    } else if let Some(ca) = &args.ca {
        CertVerification::CaFile(ca.clone())
    } else if args.insecure {
        output::warn(
            "--insecure: the server's certificate is not checked, so anyone on the network \
             path could pose as the server",
        );
        CertVerification::DangerousNoVerify
    } else {
        CertVerification::SystemRoots
    };
    let system_roots = verification == CertVerification::SystemRoots;
    let mut config = ClientConfig {
        verification,
        connect_timeout: args.timeout,
        stream_creation_timeout: args.timeout,
        ..ClientConfig::default()
    };
    config.limits.capsule_framing = args.capsule_framing;
    if !args.drafts.is_empty() {
        config.drafts = args.drafts.iter().copied().collect::<WtDrafts>();
    }
    // Bad URLs and unusable options are errors, not failed checks.
    args.url
        .parse::<webtransport::WebTransportUrl>()
        .map_err(anyhow::Error::from)?;
    let client = Client::new(config).context("invalid client settings")?;

    let mut report = Report::new(args.json, &args.url);
    let started = Instant::now();
    let connecting = client.connect(&args.url);
    let session = match tokio::time::timeout(args.timeout, connecting).await {
        Ok(Ok(session)) => {
            report.record("session", started.elapsed(), Ok(describe(&session)));
            Some(session)
        }
        Ok(Err(e)) => {
            let mut why = explain(&e);
            if system_roots && matches!(&e, ConnectError::Handshake(HandshakeError::Certificate(_)))
            {
                why += "; the system does not trust this server's certificate: for a \
                        self-signed one, pass --cert-hash with its SHA-256 or --ca with the \
                        certificate file";
            }
            report.record("session", started.elapsed(), Err(why));
            None
        }
        Err(_) => {
            let why = format!("no session within {}", secs(args.timeout));
            report.record("session", started.elapsed(), Err(why));
            None
        }
    };
    if let Some(session) = session {
        run_checks(&session, &mut report, args.timeout).await;
        finish(session).await;
    }
    Ok(report.summary())
}

async fn run_checks(session: &Session, report: &mut Report, limit: Duration) {
    let short = b"hello from wt connect".to_vec();
    report
        .timed("bidi_echo", limit, bidi_echo(session, &short))
        .await;
    let big = pseudo_random(BIG);
    report
        .timed("bidi_echo_1mib", limit, bidi_echo(session, &big))
        .await;
    report
        .timed("uni_round_trip", limit, uni_round_trip(session))
        .await;
    let datagram_limit = DATAGRAM_WAIT * (DATAGRAM_ATTEMPTS + 1);
    report
        .timed(
            "datagram_round_trip",
            datagram_limit,
            datagram_round_trip(session),
        )
        .await;
    report.timed("close", limit, close(session)).await;
}

/// One line about the session that opened.
fn describe(session: &Session) -> String {
    let conn = session.connection();
    let draft = conn
        .protocol()
        .draft
        .map(|d| d.to_string())
        .unwrap_or_else(|| "unknown draft".into());
    let protocol = session
        .protocol()
        .map(|p| format!(", subprotocol {p:?}"))
        .unwrap_or_default();
    format!(
        "session {} open to {} ({draft}{protocol})",
        session.id(),
        conn.remote_address()
            .map_or_else(|| "?".to_owned(), |a| a.to_string())
    )
}

/// A connect error with what an HTTP status means, since "404" alone helps few people.
fn explain(e: &ConnectError) -> String {
    match e {
        ConnectError::Rejected(status) => {
            let meaning = match status {
                400 => " (Bad Request)",
                403 => " (Forbidden)",
                404 => " (Not Found: the server has nothing at this path)",
                429 => " (Too Many Requests)",
                500 => " (Internal Server Error)",
                503 => " (Service Unavailable)",
                _ => "",
            };
            format!("{e}{meaning}")
        }
        _ => e.to_string(),
    }
}

async fn bidi_echo(session: &Session, payload: &[u8]) -> Result<String, String> {
    let started = Instant::now();
    let (mut send, mut recv) = session
        .open_bi()
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    // Write and read at once: the server echoes while it reads, and a payload larger than
    // the flow-control windows would otherwise deadlock.
    let write = async {
        send.write_all(payload).await?;
        send.finish()
    };
    let read = recv.read_to_end(payload.len() + 64 * 1024);
    let (written, echo) = tokio::join!(write, read);
    written.map_err(|e| format!("sending: {e}"))?;
    let echo = echo.map_err(|e| match e {
        ReadError::TooLong(_) => "the echo is longer than what was sent".to_string(),
        e => format!("reading the echo: {e}"),
    })?;
    same(payload, &echo)?;
    let elapsed = started.elapsed();
    if payload.len() >= BIG {
        let mib_per_s = (payload.len() as f64 / (1024.0 * 1024.0)) / elapsed.as_secs_f64();
        Ok(format!(
            "{} bytes of pseudo-random data echoed intact ({mib_per_s:.0} MiB/s each way)",
            payload.len()
        ))
    } else {
        Ok(format!("{} bytes echoed intact", payload.len()))
    }
}

async fn uni_round_trip(session: &Session) -> Result<String, String> {
    let message = b"hello over a unidirectional stream".to_vec();
    let mut send = session
        .open_uni()
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    send.write_all(&message)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    send.finish().map_err(|e| format!("sending: {e}"))?;
    let mut recv = session
        .accept_uni()
        .await
        .map_err(|e| format!("no stream from the server: {e}"))?;
    let echo = recv
        .read_to_end(message.len() + 64 * 1024)
        .await
        .map_err(|e| format!("reading the server's stream: {e}"))?;
    same(&message, &echo)?;
    Ok(format!(
        "{} bytes came back on stream {} opened by the server",
        echo.len(),
        recv.id()
    ))
}

async fn datagram_round_trip(session: &Session) -> Result<String, String> {
    let max = session
        .max_datagram_size()
        .ok_or("the server does not accept datagrams")?;
    // A per-run tag, so a late echo from an earlier run or attempt is recognised.
    let tag = format!("wt connect datagram {:016x}", pseudo_random_u64());
    for attempt in 1..=DATAGRAM_ATTEMPTS {
        let payload = format!("{tag} #{attempt}");
        session
            .send_datagram(payload.as_bytes())
            .map_err(|e| format!("cannot send a datagram: {e}"))?;
        let wait = async {
            loop {
                match session.read_datagram().await {
                    Ok(d) if d.starts_with(tag.as_bytes()) => return Ok(d),
                    Ok(_) => continue,
                    Err(e) => return Err(format!("session ended: {e}")),
                }
            }
        };
        if let Ok(echo) = tokio::time::timeout(DATAGRAM_WAIT, wait).await {
            let echo = echo?;
            let tries = if attempt == 1 {
                String::new()
            } else {
                format!(" after {attempt} tries")
            };
            return Ok(format!(
                "{} bytes echoed{tries} (max datagram payload {max} bytes)",
                echo.len()
            ));
        }
    }
    Err(format!(
        "no echo of {DATAGRAM_ATTEMPTS} datagrams within {} each",
        secs(DATAGRAM_WAIT)
    ))
}

async fn close(session: &Session) -> Result<String, String> {
    session
        .close(CLOSE_CODE, CLOSE_REASON)
        .map_err(|e| format!("cannot close: {e}"))?;
    let info = session
        .closed()
        .await
        .map_err(|e| format!("session ended badly: {e}"))?;
    if info.remote {
        return Err(format!(
            "the server closed first (code {}, reason {:?})",
            info.code, info.reason
        ));
    }
    // Delivered means acknowledged, and not answered with a protocol error.
    let conn = session.connection();
    conn.close_within(0, "", Duration::from_secs(2)).await;
    if let Some(ConnectionError::PeerError { code, reason }) = conn.close_reason() {
        let hint = if code == webtransport::Code::H3_FRAME_UNEXPECTED {
            " (a pywebtransport 0.8.1 server does that to a framed close capsule: try \
             --capsule-framing unframed)"
        } else {
            ""
        };
        return Err(format!(
            "the server answered the close with {code} {reason:?}{hint}"
        ));
    }
    Ok(format!(
        "closed with code {}, reason {:?}",
        info.code, info.reason
    ))
}

/// Lets the close reach the server before the process exits: waits until the server has
/// acknowledged the close capsule, then closes the connection.
async fn finish(session: Session) {
    let conn = session.connection().clone();
    drop(session);
    conn.close_within(0, "", Duration::from_secs(1)).await;
}

/// Checks that the echo is what was sent, and says where it differs.
fn same(sent: &[u8], echo: &[u8]) -> Result<(), String> {
    if sent == echo {
        return Ok(());
    }
    if let Some(at) = sent.iter().zip(echo).position(|(a, b)| a != b) {
        return Err(format!("the echo differs from what was sent at byte {at}"));
    }
    Err(format!(
        "sent {} bytes but {} came back",
        sent.len(),
        echo.len()
    ))
}

fn pseudo_random_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 of the time and pid: distinct per run, no dependency needed.
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes from xorshift64*: incompressible enough to catch reordered or repeated
/// chunks, which a constant pattern would hide.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = pseudo_random_u64() | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Collects check results and prints each as it completes.
struct Report {
    json: bool,
    url: String,
    started: Instant,
    done: Vec<(&'static str, bool, String)>,
}

impl Report {
    fn new(json: bool, url: &str) -> Self {
        if !json {
            output::line(format!("Checking {url}\n"));
        }
        Report {
            json,
            url: url.to_owned(),
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    async fn timed(
        &mut self,
        name: &'static str,
        limit: Duration,
        check: impl std::future::Future<Output = Result<String, String>>,
    ) {
        let started = Instant::now();
        let result = tokio::time::timeout(limit, check)
            .await
            .unwrap_or_else(|_| Err(format!("no result within {}", secs(limit))));
        self.record(name, started.elapsed(), result);
    }

    fn record(&mut self, name: &'static str, elapsed: Duration, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.print(name, ok, output::millis(elapsed), &detail);
        self.done.push((name, ok, detail));
    }

    fn print(&self, name: &str, ok: bool, ms: f64, detail: &str) {
        if self.json {
            output::json_line(&[
                ("check", name.into()),
                ("ok", ok.into()),
                ("ms", ms.into()),
                ("detail", detail.into()),
            ]);
        } else {
            let status = if ok { "ok" } else { "FAIL" };
            output::line(format!("  {status:<4}  {name:<20} {ms:>8.1} ms  {detail}"));
        }
    }

    /// Prints the skipped checks and the summary; the exit status to return.
    fn summary(self) -> ExitCode {
        let skipped: Vec<&str> = CHECKS
            .iter()
            .copied()
            .filter(|c| !self.done.iter().any(|(name, ..)| name == c))
            .collect();
        for name in &skipped {
            if self.json {
                self.print(name, false, 0.0, "skipped: no session");
            } else {
                output::line(format!(
                    "  {:<4}  {name:<20} {:>11}  no session",
                    "skip", ""
                ));
            }
        }
        let passed = self.done.iter().filter(|(_, ok, _)| *ok).count();
        let failed = self.done.len() - passed;
        let total_ms = output::millis(self.started.elapsed());
        let all_ok = failed == 0 && skipped.is_empty();
        if self.json {
            output::json_line(&[
                ("summary", if all_ok { "pass" } else { "fail" }.into()),
                ("passed", passed.into()),
                ("failed", failed.into()),
                ("skipped", skipped.len().into()),
                ("ms", total_ms.into()),
                ("url", self.url.clone().into()),
            ]);
        } else {
            let mut text = format!("\n{passed} passed, {failed} failed");
            if !skipped.is_empty() {
                text += &format!(", {} skipped", skipped.len());
            }
            output::line(format!("{text} in {total_ms:.1} ms"));
        }
        if all_ok {
            return ExitCode::SUCCESS;
        }
        if let Some((name, _, detail)) = self.done.iter().find(|(_, ok, _)| !ok) {
            eprintln!("wt: error: check {name} failed: {detail}");
        }
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_located() {
        assert_eq!(same(b"abc", b"abc"), Ok(()));
        assert_eq!(
            same(b"abc", b"abd").unwrap_err(),
            "the echo differs from what was sent at byte 2"
        );
        assert_eq!(
            same(b"abc", b"ab").unwrap_err(),
            "sent 3 bytes but 2 came back"
        );
    }

    #[test]
    fn random_payload_has_the_length_asked_and_varies() {
        let data = pseudo_random(1001);
        assert_eq!(data.len(), 1001);
        assert_ne!(data[..8], data[8..16]);
    }

    #[test]
    fn arguments() {
        assert!(parse_secs("2.5").is_ok());
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_hash(&"AB:".repeat(31)).is_err());
        assert!(parse_hash(&"ab".repeat(32)).is_ok());
    }
}
