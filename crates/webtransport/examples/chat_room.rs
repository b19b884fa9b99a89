//! A chat server on [`ServerApp`]: `/chat/{room}?name=NAME` runs the built-in chat
//! handler (`handlers::chat`: each session joins the group named by the path, every
//! message a member sends on a unidirectional stream reaches every member of its room on
//! a stream of its own, a member that stops reading is skipped, never slowing the room,
//! and members leave their room when their session closes). Beside it, a task of the
//! app's own uses the same registry: every five seconds it tells each room how many
//! members it has, by datagram, through `broadcast_datagram`.
//!
//! ```text
//! cargo run -p webtransport --example chat_room
//! ```
//!
//! It prints the port and the certificate hash for `wt connect` or a browser page; `wt
//! serve` serves the same room with a browser page at `http://127.0.0.1:4434/chat`.

use std::time::Duration;

use webtransport::app::{handlers, AppHandle, ServerApp};
use webtransport::{tls, Server, ServerConfig};

/// Tells every room its size, by datagram, every `every`.
async fn announce(app: AppHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let registry = app.registry();
        for room in registry.groups() {
            let text = format!("* {} in {room}", registry.members(&room).len());
            registry.broadcast_datagram(&room, text.as_bytes());
        }
    }
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
    let app = ServerApp::new().route("/chat/{room}", handlers::chat());
    let announcer = tokio::spawn(announce(app.handle(), Duration::from_secs(5)));
    let serving = tokio::spawn(app.serve(server.clone()));
    tokio::signal::ctrl_c().await?;
    server.shutdown(std::time::Duration::from_secs(2)).await;
    serving.await??;
    announcer.abort();
    Ok(())
}
