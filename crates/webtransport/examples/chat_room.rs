//! A chat server on [`ServerApp`]: `/chat/{room}` puts each session in the group named by
//! the path, and every message a member sends on a unidirectional stream goes to every
//! member of its room on a stream of their own (a member that stops reading is skipped,
//! never slowing the room). Members leave their room when their session closes.
//!
//! ```text
//! cargo run -p webtransport --example chat_room
//! ```
//!
//! It prints the port and the certificate hash for `wt connect` or a browser page.

use bytes::Bytes;
use webtransport::app::{HandlerError, RequestContext, ServerApp};
use webtransport::{tls, Server, ServerConfig, Session};

/// Longest message taken from a member.
const MAX_MESSAGE: usize = 64 * 1024;

async fn chat(session: Session, ctx: RequestContext) -> Result<(), HandlerError> {
    let room = ctx.param("room").unwrap_or("lobby").to_owned();
    let registry = ctx.app().registry();
    registry.join(&room, ctx.key())?;
    let hello = format!("{} joined {room}", ctx.key());
    registry.broadcast_stream(&room, Bytes::from(hello));
    while let Ok(mut recv) = session.accept_uni().await {
        let Ok(text) = recv.read_to_end(MAX_MESSAGE).await else {
            continue;
        };
        let mut line = format!("{}: ", ctx.key()).into_bytes();
        line.extend_from_slice(&text);
        let report = registry.broadcast_stream(&room, Bytes::from(line));
        if report.skipped > 0 {
            tracing::debug!(%room, skipped = report.skipped, "slow members skipped");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let server = Server::bind(ServerConfig {
        bind: vec!["127.0.0.1:0".parse()?],
        ..ServerConfig::development()
    })
    .await?;
    println!("chat on https://{}/chat/<room>", server.local_addrs()[0]);
    if let Some(hash) = server.certificate_sha256() {
        println!("cert_sha256 {}", tls::sha256_hex(&hash));
    }
    let server = std::sync::Arc::new(server);
    let app = ServerApp::new().route("/chat/{room}", chat);
    let serving = tokio::spawn(app.serve(server.clone()));
    tokio::signal::ctrl_c().await?;
    server.shutdown(std::time::Duration::from_secs(2)).await;
    serving.await??;
    Ok(())
}
