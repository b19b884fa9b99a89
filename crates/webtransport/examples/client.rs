//! A minimal WebTransport client: connects to a URL, pinning the server's certificate by
//! its SHA-256 hash, sends one message on a bidirectional stream, checks the echo, and
//! closes the session.
//!
//! ```text
//! cargo run -p webtransport --example client -- https://127.0.0.1:41234/ 3f2a...e9
//! ```
//!
//! (the URL and hash that the `echo_server` example prints). Exits with status 0 when the
//! echo matched.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context};
use webtransport::{tls, CertVerification, Client, ClientConfig};

const MESSAGE: &[u8] = b"hello from the client example";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, hash] = args.as_slice() else {
        eprintln!("usage: client URL CERT_SHA256   (as printed by the echo_server example)");
        return ExitCode::from(2);
    };
    match run(url, hash).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, hash: &str) -> anyhow::Result<()> {
    let hash = tls::parse_sha256_hex(hash).context("invalid certificate hash")?;
    let config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![hash]),
        ..ClientConfig::default()
    };
    let client = Client::new(config)?;
    let session = client
        .connect(url)
        .await
        .with_context(|| format!("cannot open a session at {url}"))?;
    println!("session open to {url}");

    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(MESSAGE).await?;
    send.finish()?;
    let echo = recv.read_to_end(64 * 1024).await?;
    ensure!(
        echo == MESSAGE,
        "the echo differs: {:?}",
        String::from_utf8_lossy(&echo)
    );
    println!("echo: {}", String::from_utf8_lossy(&echo));

    // Close the session and wait until the server has it, before the process exits.
    session
        .connection()
        .close_within(0, "client example done", Duration::from_secs(2))
        .await;
    Ok(())
}
