//! A minimal WebTransport echo server: every bidirectional stream is sent back on itself,
//! every datagram as a datagram.
//!
//! It listens on a free port of 127.0.0.1 with a fresh self-signed certificate and prints
//! three lines that a script (or a person) needs to connect:
//!
//! ```text
//! listening on https://127.0.0.1:41234/
//! port 41234
//! cert_sha256 3f2a...e9
//! ```
//!
//! Run it until Ctrl-C:
//!
//! ```text
//! cargo run -p webtransport --example echo_server
//! ```
//!
//! or let it serve a fixed number of sessions and exit, as CI does (`--once` is
//! `--sessions 1`; the `WT_EXAMPLE_SESSIONS` environment variable does the same):
//!
//! ```text
//! cargo run -p webtransport --example echo_server -- --once
//! ```
//!
//! Then connect with the `client` example, `wt connect`, or a browser page that passes the
//! hash in `serverCertificateHashes`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::task::JoinSet;
use webtransport::{tls, Server, ServerConfig, Session};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let limit = session_limit()?;

    // The development preset makes a self-signed certificate that browsers accept by hash.
    let config = ServerConfig {
        bind: vec!["127.0.0.1:0".parse()?],
        ..ServerConfig::development()
    };
    let server = Server::bind(config).await?;
    let addr = server.local_addrs()[0];
    let hash = server
        .certificate_sha256()
        .context("the self-signed certificate should be pinnable")?;
    println!("listening on https://{addr}/");
    println!("port {}", addr.port());
    println!("cert_sha256 {}", tls::sha256_hex(&hash));
    std::io::stdout().flush()?;

    let mut sessions = JoinSet::new();
    let mut accepted = 0;
    while limit.is_none_or(|n| accepted < n) {
        let request = tokio::select! {
            request = server.accept() => request,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(request) = request else { break };
        let path = request.path().to_owned();
        let session = request.accept()?;
        accepted += 1;
        println!("session {} opened on {path}", session.id());
        sessions.spawn(echo(session));
    }
    // With a limit, let the last sessions finish before leaving.
    tokio::select! {
        _ = async { while sessions.join_next().await.is_some() {} } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// `--once`, `--sessions N`, or `WT_EXAMPLE_SESSIONS=N`; `None` means until Ctrl-C.
fn session_limit() -> anyhow::Result<Option<usize>> {
    let mut limit = match std::env::var("WT_EXAMPLE_SESSIONS") {
        Ok(n) => Some(n.parse().context("WT_EXAMPLE_SESSIONS must be a number")?),
        Err(_) => None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => limit = Some(1),
            "--sessions" => {
                let n = args.next().context("--sessions needs a number")?;
                limit = Some(n.parse().context("--sessions needs a number")?);
            }
            other => bail!("unknown argument {other:?} (expected --once or --sessions N)"),
        }
    }
    Ok(limit)
}

/// Echoes one session until it closes.
async fn echo(session: Session) {
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = session.accept_bi() => {
                let Ok((mut send, mut recv)) = stream else { break };
                streams.spawn(async move {
                    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024).await {
                        if send.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
            datagram = session.read_datagram() => {
                let Ok(datagram) = datagram else { break };
                let _ = session.send_datagram(&datagram);
            }
        }
    }
    match session.closed().await {
        Ok(info) => println!(
            "session {} closed: code {}, reason {:?}",
            session.id(),
            info.code,
            info.reason
        ),
        Err(e) => println!("session {} ended: {e}", session.id()),
    }
}
