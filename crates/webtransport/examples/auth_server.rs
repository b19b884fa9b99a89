//! An authenticated route: an [`Auth`] middleware checks a bearer token (here a fixed
//! table; in practice a database or a token service, which is why the hook is async) and
//! passes the user to the handler; browsers from other origins are refused by an
//! [`OriginAllowList`], and each address may open 10 sessions a minute.
//!
//! ```text
//! cargo run -p webtransport --example auth_server
//! ```
//!
//! A client sends its token as a request header (`ConnectOptions::headers`:
//! `authorization: Bearer alice-token`) and reads "hello, alice" on a stream.

use std::time::Duration;

use webtransport::app::{
    AccessLog, Auth, AuthRequest, HandlerError, OriginAllowList, RateLimit, RequestContext,
    ServerApp,
};
use webtransport::{tls, ServerConfig, Session};

/// Who a request is from, once its token checked out.
#[derive(Debug, Clone)]
struct User(&'static str);

async fn check_token(req: AuthRequest) -> Result<User, webtransport::app::Rejection> {
    match req.header("authorization") {
        Some("Bearer alice-token") => Ok(User("alice")),
        Some("Bearer bob-token") => Ok(User("bob")),
        _ => Err(Auth::<User>::unauthorized()),
    }
}

async fn whoami(session: Session, ctx: RequestContext) -> Result<(), HandlerError> {
    let user = ctx.get::<User>().map_or("nobody", |u| u.0);
    let mut s = session.open_uni().await?;
    s.write_all(format!("hello, {user}\n").as_bytes()).await?;
    s.finish()?;
    session.closed().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();
    let cert = webtransport::generate_self_signed(&["localhost", "127.0.0.1"])?;
    println!("https://127.0.0.1:4433/whoami");
    println!("cert_sha256 {}", tls::sha256_hex(&cert.sha256));
    let config = ServerConfig {
        bind: vec!["127.0.0.1:4433".parse()?],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::development()
    };
    ServerApp::new()
        .middleware(AccessLog)
        .middleware(OriginAllowList::new(["https://localhost:8443"]))
        .middleware(RateLimit::per_ip(10, Duration::from_secs(60)))
        .middleware(Auth::new(check_token))
        .route("/whoami", whoami)
        .run(config)
        .await?;
    Ok(())
}
