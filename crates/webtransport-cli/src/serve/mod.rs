//! `wt serve`: a WebTransport echo server, with a demo page for browsers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use clap::Args;
use tokio::task::JoinSet;
use tracing::debug;
use webtransport::{
    tls, CertificateSource, Server, ServerConfig, ServerError, Session, SessionRequest,
};

use crate::echo::{self, Events, SessionLabel};
use crate::{demo, output};

pub const LONG_ABOUT: &str = "\
Run a WebTransport echo server. On the path /echo it sends back everything it receives:
bidirectional streams on the same stream, unidirectional streams on a new stream it opens,
datagrams as datagrams. Requests for any other path are refused with 404. When the client
offers subprotocols, the server accepts the first one.

Without --cert/--key it makes a fresh self-signed certificate that browsers accept when the
page pins its SHA-256 hash (printed at startup). It also serves a demo page on
http://127.0.0.1 that connects with that hash and shows the echoes live.

Stop it with Ctrl-C (or SIGTERM): open sessions are closed with code 0 and the reason
\"wt serve is shutting down\", then the server exits with status 0.";

pub const AFTER_HELP: &str = "\
Examples:
  wt serve                                  127.0.0.1:4433 and [::1]:4433, page on port 4434
  wt serve --port 0                         free ports, printed at startup
  wt serve --bind 0.0.0.0:4433 --cert cert.pem --key key.pem
  wt serve --json --bind 127.0.0.1:0        machine-readable events for scripts and tests

With --json, stdout carries one JSON object per line:
  {\"event\":\"listening\",\"addrs\":[\"127.0.0.1:4433\"],\"cert_sha256\":\"<64 hex digits>\"}
  {\"event\":\"session_opened\",\"session\":0,\"path\":\"/echo\",\"remote\":\"127.0.0.1:50000\",...}
  {\"event\":\"session_closed\",\"session\":0,\"code\":0,\"reason\":\"...\",\"remote\":true,...}
  {\"event\":\"session_rejected\",\"path\":\"/nope\",\"remote\":\"127.0.0.1:50000\",\"status\":404}";

const DEFAULT_PORT: u16 = 4433;

/// How long open sessions get to close by themselves after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
const SHUTDOWN_REASON: &str = "wt serve is shutting down";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// UDP address to listen on; repeat for several
    /// [default: 127.0.0.1:4433 and ::1 port 4433]
    #[arg(long = "bind", value_name = "ADDR", conflicts_with = "port")]
    binds: Vec<SocketAddr>,

    /// Port for the two default addresses; 0 picks free ports (printed at startup)
    #[arg(long, value_name = "P")]
    port: Option<u16>,

    /// Certificate chain to use (PEM, leaf first) instead of a fresh self-signed one
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key of --cert (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Print JSON lines on stdout (startup, sessions opened and closed) instead of text;
    /// no demo page unless --http-port is given
    #[arg(long)]
    json: bool,

    /// Port of the demo page on http://127.0.0.1 [default: the WebTransport port + 1]
    #[arg(long, value_name = "P", conflicts_with = "no_http")]
    http_port: Option<u16>,

    /// Do not serve the demo page
    #[arg(long)]
    no_http: bool,

    /// How capsules are written: `auto` (the default) frames them, as browsers need, unless
    /// a client shows it wants them bare (pywebtransport 0.8.1, which ends the connection
    /// on a framed close capsule); `framed` or `unframed` force either way
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = crate::connect::parse_framing)]
    capsule_framing: webtransport::CapsuleFraming,
}

/// The certificate in use and what to say about it.
struct CertInfo {
    source: CertificateSource,
    /// SHA-256 of the leaf certificate (DER).
    sha256: [u8; 32],
    /// When it expires, for a self-signed one made here.
    self_signed_until: Option<SystemTime>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Signal handlers go in before anything is printed: a script that reads the
    // "listening" line and then sends SIGINT must hit them, not the default action.
    let mut stop = StopSignal::new()?;

    let cert = certificate(&args)?;
    let server = bind(&args, &cert).await?;
    // IPv4 first in what we print: it is the address to put in URLs (see `dial_addr`).
    let mut addrs = server.local_addrs().to_vec();
    addrs.sort_by_key(|a| a.is_ipv6());
    let pinnable = server.certificate_sha256().is_some();
    let hash = tls::sha256_hex(&cert.sha256);
    let primary = dial_addr(&addrs);
    let url = format!("https://{primary}/echo");

    let http_port = if args.no_http || (args.json && args.http_port.is_none()) {
        None
    } else {
        Some(args.http_port.unwrap_or(primary.port().wrapping_add(1)))
    };
    let page = match http_port {
        Some(port) => {
            let html = demo::render(&url, &hash);
            match demo::start(port, html).await {
                Ok(addr) => Some(addr),
                // The port + 1 default is a guess that may be taken; an explicit port is
                // what the user asked for.
                Err(e) if args.http_port.is_some() => {
                    return Err(e)
                        .context(format!("cannot serve the demo page on 127.0.0.1:{port}"))
                }
                Err(e) => {
                    output::warn(format!(
                        "no demo page: cannot listen on 127.0.0.1:{port} ({e}); choose a \
                         port with --http-port"
                    ));
                    None
                }
            }
        }
        None => None,
    };

    if args.json {
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        output::json_line(&[
            ("event", "listening".into()),
            ("addrs", addrs.into()),
            ("cert_sha256", hash.clone().into()),
        ]);
    } else {
        print_banner(&addrs, &url, &hash, &cert, pinnable, page);
    }

    let events = Events { json: args.json };
    let mut sessions = JoinSet::new();
    // Handles of the sessions, to close them with a reason at shutdown.
    let mut open: Vec<Session> = Vec::new();
    loop {
        tokio::select! {
            request = server.accept() => match request {
                Some(request) => {
                    open.retain(|s| !s.is_closed());
                    open.extend(answer(request, events, &mut sessions));
                }
                None => break,
            },
            _ = stop.wait() => break,
            // Reap finished session tasks as they end.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }

    if !args.json {
        eprintln!("wt: shutting down (press Ctrl-C again to quit at once)");
    }
    let stopping = async {
        close_sessions(&open).await;
        server.shutdown(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = stopping => {}
        _ = stop.wait() => return Ok(ExitCode::from(130)),
    }
    // Let each session task report how its session ended.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    Ok(ExitCode::SUCCESS)
}

/// Closes every open session with code 0 and a reason, so clients (a browser's
/// `transport.closed`) learn why instead of seeing the connection drop.
///
/// An echo has no work in flight worth draining, so the sessions are closed at once;
/// `Server::shutdown` then waits for the closes to be delivered.
async fn close_sessions(open: &[Session]) {
    for session in open.iter().filter(|s| !s.is_closed()) {
        let _ = session.close(0, SHUTDOWN_REASON);
    }
}

/// Accepts `/echo` (with the first subprotocol the client offers) and refuses the rest.
/// Returns the session accepted.
fn answer(request: SessionRequest, events: Events, sessions: &mut JoinSet<()>) -> Option<Session> {
    let path = request.path().to_owned();
    let remote = request.remote_address();
    let route = path.split('?').next().unwrap_or_default();
    if route != "/echo" {
        events.rejected(&path, remote, 404);
        request.reject(404);
        return None;
    }
    let protocol = request.protocols().first().cloned();
    let who = SessionLabel {
        connection: request.connection().connection_id().to_owned(),
        session: request.session_id().stream_id(),
        remote,
    };
    match request.accept_with(protocol.clone(), Vec::new()) {
        Ok(session) => {
            events.opened(&who, &path, protocol.as_deref());
            sessions.spawn(echo::run(session.clone(), who, events));
            Some(session)
        }
        // The client went away between asking and our answer.
        Err(e) => {
            debug!(%remote, error = %e, "session could not be accepted");
            None
        }
    }
}

fn certificate(args: &ServeArgs) -> anyhow::Result<CertInfo> {
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = tls::certificates_from_file(cert)
                .with_context(|| format!("cannot use the certificate {}", cert.display()))?;
            let leaf = chain
                .first()
                .ok_or_else(|| anyhow!("{} holds no certificate", cert.display()))?;
            Ok(CertInfo {
                sha256: tls::certificate_sha256(leaf),
                source: CertificateSource::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                self_signed_until: None,
            })
        }
        _ => {
            let made = tls::generate_self_signed(&crate::cert::DEFAULT_NAMES)
                .context("cannot generate a self-signed certificate")?;
            Ok(CertInfo {
                sha256: made.sha256,
                source: made.to_certificate_source(),
                self_signed_until: Some(made.not_after),
            })
        }
    }
}

/// Binds the requested addresses. With the defaults, a `[::1]` that cannot be bound
/// (IPv6 disabled, or the port taken there) is left out with a warning as long as
/// 127.0.0.1 works, and `--port 0` looks for one free port for both addresses, so that
/// `https://localhost:PORT` works whichever address a browser tries.
async fn bind(args: &ServeArgs, cert: &CertInfo) -> anyhow::Result<Server> {
    let mut template = ServerConfig {
        certificate: cert.source.clone(),
        ..ServerConfig::default()
    };
    template.limits.capsule_framing = args.capsule_framing;
    if !args.binds.is_empty() {
        return bind_addrs(args.binds.clone(), Ipv6Fallback::Never, &template).await;
    }
    let port = args.port.unwrap_or(DEFAULT_PORT);
    if port != 0 {
        return bind_addrs(default_addrs(port), Ipv6Fallback::OnAnyError, &template).await;
    }
    // A port free on 127.0.0.1 a moment ago may be taken on ::1, or taken again by the
    // time we bind: try a few, then settle for a free port on each address.
    for _ in 0..5 {
        let Some(port) = free_udp_port() else { break };
        match bind_addrs(
            default_addrs(port),
            Ipv6Fallback::UnlessPortTaken,
            &template,
        )
        .await
        {
            Ok(server) => return Ok(server),
            Err(e) => debug!(port, error = %e, "port not free on both addresses; trying another"),
        }
    }
    bind_addrs(default_addrs(0), Ipv6Fallback::OnAnyError, &template).await
}

/// When a failing IPv6 address of the default pair may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ipv6Fallback {
    /// Addresses the user named: every one must bind.
    Never,
    /// Not when the port is taken there (the caller then tries another port).
    UnlessPortTaken,
    OnAnyError,
}

fn default_addrs(port: u16) -> Vec<SocketAddr> {
    // `Server::bind` binds in order and gives up at the first failure; IPv6 goes first so
    // that when it fails nothing else is bound yet and the retry cannot trip over a socket
    // of the failed attempt that is still closing.
    vec![
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ]
}

fn free_udp_port() -> Option<u16> {
    let probe = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    probe.local_addr().ok().map(|a| a.port())
}

async fn bind_addrs(
    mut addrs: Vec<SocketAddr>,
    fallback: Ipv6Fallback,
    template: &ServerConfig,
) -> anyhow::Result<Server> {
    // Said only once the rest is bound: if nothing binds, the error says it all.
    let mut warnings = Vec::new();
    loop {
        let config = ServerConfig {
            bind: addrs.clone(),
            ..template.clone()
        };
        match Server::bind(config).await {
            Ok(server) => {
                warnings.into_iter().for_each(output::warn);
                return Ok(server);
            }
            Err(ServerError::Bind { addr, source })
                if addr.is_ipv6()
                    && addrs.len() > 1
                    && (fallback == Ipv6Fallback::OnAnyError
                        || (fallback == Ipv6Fallback::UnlessPortTaken
                            && source.kind() != std::io::ErrorKind::AddrInUse)) =>
            {
                addrs.retain(|a| *a != addr);
                let why = if source.kind() == std::io::ErrorKind::AddrInUse {
                    "the port is taken there"
                } else {
                    "is IPv6 disabled?"
                };
                warnings.push(format!(
                    "not listening on {addr}: {source} ({why}); continuing on {}. Browsers \
                     try ::1 first for `localhost`, so use 127.0.0.1 in URLs",
                    list(&addrs)
                ));
            }
            Err(ServerError::Bind { addr, source }) => {
                let hint = if source.kind() == std::io::ErrorKind::AddrInUse {
                    "; another program uses this port: pick another with --port or --bind \
                     (port 0 picks a free one)"
                } else {
                    ""
                };
                return Err(anyhow!("cannot listen on {addr}: {source}{hint}"));
            }
            Err(e) => return Err(e).context("cannot start the server"),
        }
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The address a local client should dial: the first IPv4 address if any (browsers
/// resolve `localhost` to ::1 first, so URLs use an IP), with a wildcard turned into
/// loopback.
fn dial_addr(addrs: &[SocketAddr]) -> SocketAddr {
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)));
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn print_banner(
    addrs: &[SocketAddr],
    url: &str,
    hash: &str,
    cert: &CertInfo,
    pinnable: bool,
    page: Option<SocketAddr>,
) {
    let mut text = String::from("WebTransport echo server\n\n");
    for (i, addr) in addrs.iter().enumerate() {
        let label = if i == 0 { "Listening on" } else { "" };
        text += &format!("  {label:<13} https://{}/echo\n", dial_addr(&[*addr]));
    }
    text += &format!("  {:<13} {hash}\n", "Cert SHA-256");
    match cert.self_signed_until {
        Some(until) => {
            text += &format!(
                "  {:<13} self-signed, made now, valid until {}\n",
                "",
                output::utc_date(until)
            )
        }
        None if !pinnable => {
            text += &format!(
                "  {:<13} browsers cannot pin this certificate by hash (that needs ECDSA \
                 P-256 valid for at most 14 days): they must trust it through a CA\n",
                ""
            )
        }
        None => {}
    }
    if let Some(page) = page {
        text += &format!(
            "  {:<13} http://{page}/  (open it in Chrome, Edge or Firefox)\n",
            "Demo page"
        );
    }
    text += &format!(
        "\nCheck it from a terminal:\n  wt connect {url} --cert-hash {hash}\n\n\
         Or paste into the JavaScript console of a page on http://127.0.0.1 or \
         http://localhost{}:\n",
        if page.is_some() {
            " (the demo page will do)"
        } else {
            ""
        }
    );
    for line in output::js_snippet(url, hash).lines() {
        text += &format!("  {line}\n");
    }
    text += "\nPress Ctrl-C to stop.";
    output::line(text);
}

/// Ctrl-C, and SIGTERM on Unix. The handlers are installed when this is created, so a
/// signal that arrives before the first `wait` is not lost.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    _private: (),
}

impl StopSignal {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignal {
                // The same signal `tokio::signal::ctrl_c` listens for, registered now.
                interrupt: signal(SignalKind::interrupt())
                    .context("cannot install the Ctrl-C handler")?,
                terminate: signal(SignalKind::terminate())
                    .context("cannot install the SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal { _private: () })
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_address_prefers_ipv4_and_loopback() {
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(dial_addr(&[v6, v4]), v4);
        assert_eq!(dial_addr(&[v6]), v6);
        let any: SocketAddr = "0.0.0.0:7".parse().unwrap();
        assert_eq!(dial_addr(&[any]), "127.0.0.1:7".parse().unwrap());
        let any6: SocketAddr = "[::]:7".parse().unwrap();
        assert_eq!(dial_addr(&[any6]), "[::1]:7".parse().unwrap());
    }
}
