//! `wt serve`: a WebTransport server on the library's server framework (`ServerApp`):
//! built-in routes (echo, a chat room, Devious Baton), a demo page, a chat page and
//! Prometheus metrics over HTTP, and `--config FILE` for all of it.

mod config;
mod events;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use clap::Args;
use tracing::debug;
use webtransport::app::{AppHandle, OriginAllowList, ServerApp};
use webtransport::{tls, CertificateSource, Server, ServerConfig, ServerError};

use config::Listener;
pub use config::ServeFile;
use events::Events;

use crate::{demo, output};

pub const LONG_ABOUT: &str = "\
Run a WebTransport server on the library's server framework. Its routes, by default:
  /echo                         sends back everything it receives: bidirectional streams on
                                the same stream, unidirectional streams on a new stream,
                                datagrams as datagrams; accepts the first subprotocol offered
  /chat/{room}?name=NAME        a chat room: each unidirectional stream a member opens is a
                                message, sent to every member of the room on a stream
  /webtransport/devious-baton   the Devious Baton interop protocol (its query parameters)
Requests for any other path are refused with 404. --config FILE describes listeners,
certificate, limits, allowed origins and routes (to these handlers and a static `hello`)
in TOML; command-line options override the file.

Without a certificate it makes a fresh self-signed one that browsers accept when the page
pins its SHA-256 hash (printed at startup). It also serves pages on http://127.0.0.1: a
demo page at / that connects with that hash and shows the echoes live, a chat page at
/chat, and Prometheus metrics (OpenMetrics text) at /metrics.

Stop it with Ctrl-C (or SIGTERM): open sessions are closed with code 0 and the reason
\"wt serve is shutting down\", then the server exits with status 0.";

pub const AFTER_HELP: &str = "\
Examples:
  wt serve                                  127.0.0.1:4433 and [::1]:4433, pages on port 4434
  wt serve --port 0                         free ports, printed at startup
  wt serve --bind 0.0.0.0:4433 --cert cert.pem --key key.pem
  wt serve --config server.toml             everything from a file (docs/server.md)
  wt serve --print-config > server.toml     the defaults, as a file to edit
  wt serve --allow-origin https://app.example.com
  wt serve --json --bind 127.0.0.1:0        machine-readable events for scripts and tests

With --json, stdout carries one JSON object per line:
  {\"event\":\"listening\",\"addrs\":[\"127.0.0.1:4433\"],\"cert_sha256\":\"<64 hex digits>\"}
  {\"event\":\"http\",\"addr\":\"127.0.0.1:4434\"}   (with --http-port, or http_port in a config)
  {\"event\":\"session_opened\",\"session\":0,\"path\":\"/echo\",\"remote\":\"127.0.0.1:50000\",...}
  {\"event\":\"session_closed\",\"session\":0,\"code\":0,\"reason\":\"...\",\"remote\":true,...}
  {\"event\":\"session_rejected\",\"path\":\"/nope\",\"remote\":\"127.0.0.1:50000\",\"status\":404}";

const DEFAULT_PORT: u16 = 4433;

/// The address of a listener without one, and of `wt serve` without `--bind`.
pub fn default_bind() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))
}

const SHUTDOWN_REASON: &str = "wt serve is shutting down";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The server as a TOML file: listeners, certificate, limits, origins, routes,
    /// HTTP port and metrics address (see docs/server.md); the options below override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print the configuration in effect (the file with the options applied) as TOML,
    /// and exit
    #[arg(long)]
    print_config: bool,

    /// UDP address to listen on; repeat for several (replaces the file's listeners)
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

    /// Accept sessions only from pages of this origin (`scheme://host[:port]`); repeat
    /// for several. Others get 403. [default: any origin]
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,

    /// Print JSON lines on stdout (startup, sessions opened and closed) instead of text;
    /// no HTTP pages unless --http-port is given
    #[arg(long)]
    json: bool,

    /// Port of the HTTP pages on http://127.0.0.1 [default: the WebTransport port + 1]
    #[arg(long, value_name = "P", conflicts_with = "no_http")]
    http_port: Option<u16>,

    /// Do not serve the HTTP pages (demo, chat, metrics)
    #[arg(long)]
    no_http: bool,

    /// How capsules are written: `auto` (the default) frames them, as browsers need, unless
    /// a client shows it wants them bare (pywebtransport 0.8.1, which ends the connection
    /// on a framed close capsule); `framed` or `unframed` force either way
    #[arg(long, value_name = "MODE", value_parser = crate::connect::parse_framing)]
    capsule_framing: Option<webtransport::CapsuleFraming>,
}

/// The certificate listeners without one of their own use, and what to say about it.
struct CertInfo {
    source: CertificateSource,
    /// SHA-256 of the leaf certificate (DER).
    sha256: [u8; 32],
    /// When it expires, for a self-signed one made here.
    self_signed_until: Option<SystemTime>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = settings(&args)?;
    if args.print_config {
        print!("{}", file.to_toml_string()?);
        return Ok(ExitCode::SUCCESS);
    }
    // Signal handlers go in before anything is printed: a script that reads the
    // "listening" line and then sends SIGINT must hit them, not the default action.
    let mut stop = StopSignal::new()?;

    let cert = certificate(&file)?;
    let servers = bind_all(&args, &file, &cert).await?;
    // IPv4 first in what we print: it is the address to put in URLs (see `dial_addr`).
    let mut addrs: Vec<SocketAddr> = servers
        .iter()
        .flat_map(|s| s.local_addrs().to_vec())
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    let pinnable = servers[0].certificate_sha256().is_some();
    let hash = tls::sha256_hex(&cert.sha256);
    let primary = dial_addr(&addrs);

    let events = Events { json: args.json };
    let app = build_app(&file, events);
    let handle = app.handle();

    let pages = start_pages(&args, &file, primary, &hash, &handle).await?;
    let metrics = match file.metrics {
        Some(addr) => Some(
            demo::start(addr, demo::Site::metrics_only(handle.clone()))
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    if args.json {
        let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        output::json_line(&[
            ("event", "listening".into()),
            ("addrs", list.into()),
            ("cert_sha256", hash.clone().into()),
        ]);
        if let Some(page) = pages {
            output::json_line(&[("event", "http".into()), ("addr", page.to_string().into())]);
        }
        if let Some(m) = metrics {
            output::json_line(&[("event", "metrics".into()), ("addr", m.to_string().into())]);
        }
    } else {
        print_banner(&addrs, &file, &hash, &cert, pinnable, pages, metrics);
    }

    let mut serving = tokio::spawn(app.serve_all(servers.clone()));
    tokio::select! {
        done = &mut serving => {
            // The servers stopped by themselves (they do not, unless something broke).
            done.context("the server task failed")??;
            return Ok(ExitCode::SUCCESS);
        }
        _ = stop.wait() => {}
    }

    if !args.json {
        eprintln!("wt: shutting down (press Ctrl-C again to quit at once)");
    }
    let stopping = async {
        close_sessions(&handle);
        let drain = file.drain_timeout;
        futures_util::future::join_all(servers.iter().map(|s| s.shutdown(drain))).await;
        // Let each session's handler end and its close be reported.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut serving).await;
    };
    tokio::select! {
        _ = stopping => Ok(ExitCode::SUCCESS),
        _ = stop.wait() => Ok(ExitCode::from(130)),
    }
}

/// The configuration in effect: the file (or the defaults), then the options.
fn settings(args: &ServeArgs) -> anyhow::Result<ServeFile> {
    let mut file = match &args.config {
        Some(path) => ServeFile::from_toml_file(path)?,
        None => ServeFile::default(),
    };
    if !args.binds.is_empty() {
        file.listeners = vec![Listener {
            bind: args.binds.clone(),
            certificate: None,
        }];
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        file.certificate = Some(CertificateSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    file.allowed_origins
        .extend(args.allow_origins.iter().cloned());
    if let Some(framing) = args.capsule_framing {
        file.limits.capsule_framing = framing;
    }
    if args.no_http {
        file.http = false;
    }
    if args.http_port.is_some() {
        file.http_port = args.http_port;
    }
    let what = match &args.config {
        Some(path) => format!("invalid configuration in {}", path.display()),
        None => "invalid options".to_owned(),
    };
    file.validate().context(what)?;
    Ok(file)
}

/// The app: the file's routes on built-in handlers, behind the origin allow-list when
/// there is one, with session events reported.
fn build_app(file: &ServeFile, events: Events) -> ServerApp {
    let mut app = events.attach(ServerApp::with_limits(file.app.clone()));
    if !file.allowed_origins.is_empty() {
        app = app.middleware(OriginAllowList::new(file.allowed_origins.iter().cloned()));
    }
    for route in &file.routes {
        app = app.builtin(&route.path, route.builtin());
    }
    app
}

/// Closes every open session with code 0 and a reason, so clients (a browser's
/// `transport.closed`) learn why instead of seeing the connection drop.
fn close_sessions(app: &AppHandle) {
    let registry = app.registry();
    for key in registry.keys() {
        if let Some(session) = registry.get(key) {
            let _ = session.close(0, SHUTDOWN_REASON);
        }
    }
}

/// Serves the HTTP pages (demo, chat, metrics) unless turned off. Returns their address.
async fn start_pages(
    args: &ServeArgs,
    file: &ServeFile,
    primary: SocketAddr,
    hash: &str,
    handle: &AppHandle,
) -> anyhow::Result<Option<SocketAddr>> {
    // With --json, pages only when a port was asked for.
    if !file.http || (args.json && file.http_port.is_none()) {
        return Ok(None);
    }
    let port = file.http_port.unwrap_or(primary.port().wrapping_add(1));
    let site = demo::Site::new(&format!("https://{primary}"), hash, handle.clone());
    match demo::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), site).await {
        Ok(addr) => Ok(Some(addr)),
        // The port + 1 default is a guess that may be taken; an explicit port is what
        // the user asked for.
        Err(e) if file.http_port.is_some() => {
            Err(e).context(format!("cannot serve the HTTP pages on 127.0.0.1:{port}"))
        }
        Err(e) => {
            output::warn(format!(
                "no HTTP pages: cannot listen on 127.0.0.1:{port} ({e}); choose a port with \
                 --http-port"
            ));
            Ok(None)
        }
    }
}

/// The certificate of listeners without their own: the file's, or a fresh self-signed.
fn certificate(file: &ServeFile) -> anyhow::Result<CertInfo> {
    let chain = match &file.certificate {
        None => return self_signed(&crate::cert::DEFAULT_NAMES),
        Some(CertificateSource::SelfSigned { names }) => return self_signed(names),
        Some(CertificateSource::Files { cert, .. }) => tls::certificates_from_file(cert)
            .with_context(|| format!("cannot use the certificate {}", cert.display()))?,
        Some(CertificateSource::Pem { cert, .. }) => {
            tls::certificates_from_pem(cert, "certificate.pem.cert")?
        }
        Some(other) => return Err(anyhow!("unsupported certificate source {other:?}")),
    };
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("the certificate holds no certificate block"))?;
    Ok(CertInfo {
        sha256: tls::certificate_sha256(leaf),
        source: file.certificate.clone().unwrap_or_default(),
        self_signed_until: None,
    })
}

fn self_signed(names: &[impl AsRef<str>]) -> anyhow::Result<CertInfo> {
    let made =
        tls::generate_self_signed(names).context("cannot generate a self-signed certificate")?;
    Ok(CertInfo {
        sha256: made.sha256,
        source: made.to_certificate_source(),
        self_signed_until: Some(made.not_after),
    })
}

/// Binds every listener. Without listeners (neither --bind nor a file's), the default
/// pair: a `[::1]` that cannot be bound (IPv6 disabled, or the port taken there) is left
/// out with a warning as long as 127.0.0.1 works, and `--port 0` looks for one free port
/// for both addresses, so that `https://localhost:PORT` works whichever address a
/// browser tries.
async fn bind_all(
    args: &ServeArgs,
    file: &ServeFile,
    cert: &CertInfo,
) -> anyhow::Result<Vec<Arc<Server>>> {
    let mut servers = Vec::new();
    for listener in &file.listeners {
        let config = file.server_config(listener, &cert.source);
        let server = bind_addrs(config.bind.clone(), Ipv6Fallback::Never, &config).await?;
        servers.push(Arc::new(server));
    }
    if servers.is_empty() {
        let template = file.server_config(&Listener::default(), &cert.source);
        servers.push(Arc::new(bind_default(args.port, &template).await?));
    }
    Ok(servers)
}

async fn bind_default(port: Option<u16>, template: &ServerConfig) -> anyhow::Result<Server> {
    let port = port.unwrap_or(DEFAULT_PORT);
    if port != 0 {
        return bind_addrs(default_addrs(port), Ipv6Fallback::OnAnyError, template).await;
    }
    // A port free on 127.0.0.1 a moment ago may be taken on ::1, or taken again by the
    // time we bind: try a few, then settle for a free port on each address.
    for _ in 0..5 {
        let Some(port) = free_udp_port() else { break };
        match bind_addrs(default_addrs(port), Ipv6Fallback::UnlessPortTaken, template).await {
            Ok(server) => return Ok(server),
            Err(e) => debug!(port, error = %e, "port not free on both addresses; trying another"),
        }
    }
    bind_addrs(default_addrs(0), Ipv6Fallback::OnAnyError, template).await
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
    file: &ServeFile,
    hash: &str,
    cert: &CertInfo,
    pinnable: bool,
    page: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
) {
    let primary = dial_addr(addrs);
    let url = format!("https://{primary}/echo");
    let mut text = String::from("WebTransport server\n\n");
    for (i, addr) in addrs.iter().enumerate() {
        let label = if i == 0 { "Listening on" } else { "" };
        text += &format!("  {label:<13} https://{}\n", dial_addr(&[*addr]));
    }
    for (i, route) in file.routes.iter().enumerate() {
        let label = if i == 0 { "Routes" } else { "" };
        text += &format!(
            "  {label:<13} {:<30} {}\n",
            route.path,
            route.handler.describe()
        );
    }
    if !file.allowed_origins.is_empty() {
        text += &format!("  {:<13} {}\n", "Origins", file.allowed_origins.join(", "));
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
        text += &format!("  {:<13} http://{page}/chat\n", "Chat page");
        text += &format!("  {:<13} http://{page}/metrics\n", "Metrics");
    }
    if let Some(m) = metrics {
        text += &format!("  {:<13} http://{m}/metrics (metrics only)\n", "");
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
    for line in output::js_snippet(&url, hash).lines() {
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
