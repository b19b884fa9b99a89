//! An echo server with its statistics: [`AppHandle::prometheus_text`] served at
//! `http://127.0.0.1:9464/metrics` for Prometheus to scrape, and the same numbers
//! printed as [`ServerDiagnostics`](webtransport::app::ServerDiagnostics) JSON every 10 s.
//!
//! ```text
//! cargo run -p webtransport --example metrics_server
//! curl http://127.0.0.1:9464/metrics
//! ```

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use webtransport::app::{handlers, AppHandle, ServerApp};
use webtransport::{tls, ServerConfig};

/// Answers every HTTP request on `listener` with the metrics (a scrape endpoint needs
/// nothing more; a real deployment would put this behind its HTTP server).
async fn serve_metrics(listener: TcpListener, app: AppHandle) {
    while let Ok((mut conn, _)) = listener.accept().await {
        let app = app.clone();
        tokio::spawn(async move {
            // The request itself does not matter; read what came and answer.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
            let body = app.prometheus_text();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let cert = webtransport::generate_self_signed(&["localhost", "127.0.0.1"])?;
    println!("https://127.0.0.1:4433/echo");
    println!("cert_sha256 {}", tls::sha256_hex(&cert.sha256));
    println!("metrics on http://127.0.0.1:9464/metrics");
    let app = ServerApp::new().route("/echo", handlers::echo());
    let handle = app.handle();
    tokio::spawn(serve_metrics(
        TcpListener::bind("127.0.0.1:9464").await?,
        handle.clone(),
    ));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if let Ok(json) = serde_json::to_string(&handle.diagnostics()) {
                println!("{json}");
            }
        }
    });
    app.run(ServerConfig {
        bind: vec!["127.0.0.1:4433".parse()?],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::development()
    })
    .await?;
    Ok(())
}
