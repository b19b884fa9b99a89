//! `wt`: a command-line tool for WebTransport over HTTP/3.
//!
//! - `wt serve` runs an echo server that a browser or `wt connect` can talk to;
//! - `wt connect` checks a server end to end (streams both ways, datagrams, close);
//! - `wt cert` makes a self-signed certificate that browsers accept by its hash;
//! - `wt bench` measures the stack against raw quinn;
//! - `wt soak` opens and closes sessions for a long time (or holds many idle ones) and
//!   watches the server's memory.
//!
//! Errors are one line on stderr (`wt: error: ...`) and a non-zero exit status; logs go to
//! stderr through `tracing`, filtered by `RUST_LOG` (default `warn`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cert;
mod child;
mod connect;
mod demo;
mod output;
mod rss;
mod serve;
mod soak;

const ABOUT: &str = "WebTransport over HTTP/3: an echo server, a client that checks a server, \
and certificates browsers accept";

const LONG_ABOUT: &str = "\
WebTransport lets web pages exchange streams and datagrams with a server over HTTP/3 (QUIC).
This tool runs an echo server for trying it out, checks any echo server end to end, and makes
the short-lived self-signed certificates that browsers accept when a page pins their hash.";

const AFTER_HELP: &str = "\
Examples:
  wt serve                          echo server on https://127.0.0.1:4433/echo and [::1]:4433,
                                    with a demo page on http://127.0.0.1:4434/
  wt connect https://127.0.0.1:4433/echo --cert-hash <HASH printed by wt serve>
  wt cert --out ./certs             write certs/cert.pem and certs/key.pem
  wt soak --cycles 100000           open and close 100,000 sessions against a wt serve
                                    child, sampling its memory

Logging: set RUST_LOG (for example RUST_LOG=debug or RUST_LOG=webtransport=trace); logs go to
stderr. The default shows warnings only.

Exit status: 0 on success, 1 when something failed (an error, or a failed check of
`wt connect`), 2 for invalid command-line arguments.";

#[derive(Debug, Parser)]
#[command(
    name = "wt",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WebTransport echo server (with a browser demo page)
    #[command(
        long_about = serve::LONG_ABOUT,
        after_help = serve::AFTER_HELP
    )]
    Serve(serve::ServeArgs),
    /// Check a WebTransport echo server: streams both ways, datagrams, close
    #[command(
        long_about = connect::LONG_ABOUT,
        after_help = connect::AFTER_HELP
    )]
    Connect(connect::ConnectArgs),
    /// Write a self-signed certificate that browsers accept by its SHA-256 hash
    #[command(long_about = cert::LONG_ABOUT, after_help = cert::AFTER_HELP)]
    Cert(cert::CertArgs),
    /// Benchmark the stack against raw quinn: throughput, streams, latency, datagrams,
    /// handshakes, memory per session
    #[command(long_about = bench::LONG_ABOUT, after_help = bench::AFTER_HELP)]
    Bench(bench::BenchArgs),
    /// Open and close sessions for a long time, or hold many idle ones, and watch the
    /// server's memory
    #[command(long_about = soak::LONG_ABOUT, after_help = soak::AFTER_HELP)]
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // A bug must still end in one readable line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("wt: internal error (please report it): {info}");
    }));

    let result = match cli.command {
        // Writing two files needs no runtime.
        Command::Cert(args) => cert::run(args),
        Command::Serve(args) => block_on(serve::run(args)),
        Command::Connect(args) => block_on(connect::run(args)),
        Command::Bench(args) => block_on(bench::run(args)),
        Command::Soak(args) => block_on(soak::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&e);
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(f);
    // Tasks still running (connections winding down, the demo page server) are not
    // waited for: the process is about to exit.
    runtime.shutdown_background();
    result
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
