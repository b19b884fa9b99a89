//! Support for the interop tests: a server with the routes every peer's checks use, and
//! helpers to run external peers ([`browser`] for headless browsers).
//!
//! The route server is a [`ServerApp`]. Routes (each accepts the first subprotocol the
//! client offers, [`RouteOptions::accept_first_offered`]):
//! - `/echo`: [`handlers::echo()`]: bidi streams echoed then finished; each uni stream's
//!   bytes sent back on a new uni stream; datagrams echoed.
//! - `/server-bidi`: the server opens a bidi stream, sends `hello from server`, reads the
//!   reply, then closes the session with code 1 and the reply as reason.
//! - `/close-watch`: records the close code and reason the peer sends.
//! - `/close-by-server`: closes at once with code 4000, reason `server bye`.
//! - `/codes`: the stream reset / stop-sending choreography of the page (see
//!   `pages/browser.html`), then closes with the codes it saw as the reason.
//! - anything else: 404 (the framework's).
//!
//! Every handler returns only once its session has ended, so the close the peer sees is
//! the route's own (or the peer's): the framework's close with code 0 after a handler
//! returns finds the session already closed and sends nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use webtransport::app::{
    handlers, AppLimits, BoxFuture, HandlerResult, Middleware, Rejection, RequestContext,
    RouteOptions, ServerApp,
};
use webtransport::{Server, ServerConfig, Session};
use webtransport_relay::{Relay, RelayConfig};

pub mod browser;

/// How long `/codes` still waits for the peer's STOP_SENDING once the peer has said (by
/// opening a uni stream) that it stopped our stream. A STOP_SENDING the peer sent before
/// that stream arrives within a round trip or two; loopback round trips are well under
/// a millisecond.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// What the server saw, for the test to assert.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// (path, code, reason, remote) of every session close.
    pub closes: Vec<(String, u32, String, bool)>,
    /// Stream reset code the server read on `/codes` stream 1.
    pub reset_seen: Option<Option<u32>>,
    /// Stop code the server's uni stream saw on `/codes`: `Some(None)` when the peer said
    /// it had stopped the stream but no STOP_SENDING came within [`STOP_GRACE`].
    pub stop_seen: Option<Option<u32>>,
    /// Paths requested (with any query), in order, refused ones too.
    pub paths: Vec<String>,
    /// Subprotocols offered (`wt-available-protocols`) with each request, in order.
    pub offered: Vec<Vec<String>>,
    /// For each request, the draft chosen for its connection and the peer's SETTINGS.
    pub peers: Vec<(String, String)>,
    /// (path, error) of every session that ended without a close (connection lost).
    pub lost: Vec<(String, String)>,
}

/// The path of the `*_through_loss` tests: 2 % of the packets lost each way, replayable
/// from its seed.
pub fn lossy_path() -> RelayConfig {
    RelayConfig {
        seed: 2,
        ..RelayConfig::lossy(0.02)
    }
}

/// The port at which to reach a server on 127.0.0.1:`port`: its own, or that of an
/// impairment relay started in front of it with `path`, which the caller keeps alive as
/// long as it uses the port.
pub fn via(port: u16, path: Option<RelayConfig>) -> (u16, Option<Relay>) {
    match path {
        None => (port, None),
        Some(cfg) => {
            let relay = Relay::start(([127, 0, 0, 1], port).into(), cfg).expect("relay");
            (relay.addr().port(), Some(relay))
        }
    }
}

/// A running route server.
pub struct RouteServer {
    /// The server.
    pub server: Arc<Server>,
    /// What it saw.
    pub observed: Arc<Mutex<Observed>>,
    /// Its port.
    pub port: u16,
    /// SHA-256 of its certificate, hex.
    pub hash_hex: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RouteServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the route server on 127.0.0.1:0 with a browser-acceptable certificate.
pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> RouteServer {
    let cert = webtransport::generate_self_signed(&["localhost", "127.0.0.1", "::1"]).unwrap();
    let mut cfg = ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    let server = Arc::new(Server::bind(cfg).await.expect("bind"));
    let port = server.local_addrs()[0].port();
    let observed: Arc<Mutex<Observed>> = Arc::default();
    let serving = app(observed.clone()).serve(server.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "route server failed");
        }
    });
    RouteServer {
        server,
        observed,
        port,
        hash_hex: cert.sha256_hex(),
        task,
    }
}

/// The routes, recording into `observed`.
fn app(observed: Arc<Mutex<Observed>>) -> ServerApp {
    // The tests open as many sessions as they like: no session limits of the framework's.
    let limits = AppLimits {
        max_sessions: usize::MAX,
        max_sessions_per_ip: usize::MAX,
        ..AppLimits::default()
    };
    let options = || RouteOptions::new().accept_first_offered();
    let watched = observed.clone();
    let codes_seen = observed.clone();
    ServerApp::with_limits(limits)
        .middleware(Record(observed))
        // Watched from the open rather than by an on_session_close hook: that hook sees a
        // lost session as `close: None`, without the error `lost` records.
        .on_session_open(move |session, ctx| {
            tokio::spawn(watch(
                session.clone(),
                ctx.request().path.clone(),
                watched.clone(),
            ));
        })
        .route_with("/echo", options(), handlers::echo())
        .route_with("/server-bidi", options(), server_bidi)
        .route_with("/close-watch", options(), close_watch)
        .route_with("/close-by-server", options(), close_by_server)
        .route_with(
            "/codes",
            options(),
            move |session: Session, _: RequestContext| {
                let observed = codes_seen.clone();
                async move {
                    codes(&session, observed).await;
                    ended(&session).await
                }
            },
        )
}

/// Records every request before it is answered: routed ones when their middleware run
/// (before the route accepts them), refused ones (404) when the app answers them.
struct Record(Arc<Mutex<Observed>>);

/// Marks a request [`Record`] has recorded.
struct Recorded;

impl Record {
    fn record(&self, ctx: &RequestContext) {
        let request = ctx.request();
        tracing::debug!(?request, "session request");
        let protocol = ctx.connection().protocol();
        let mut seen = self.0.lock().unwrap();
        seen.paths.push(request.path.clone());
        seen.offered.push(request.available_protocols.clone());
        seen.peers.push((
            protocol
                .draft
                .map(|d| d.name().to_owned())
                .unwrap_or_default(),
            protocol
                .peer_settings
                .map(|s| s.to_string())
                .unwrap_or_default(),
        ));
    }
}

impl Middleware for Record {
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        self.record(ctx);
        ctx.insert(Recorded);
        Box::pin(async { Ok(()) })
    }

    fn answered(&self, ctx: &RequestContext, _status: u16, _reason: Option<&str>) {
        if ctx.get::<Recorded>().is_none() {
            self.record(ctx);
        }
    }
}

/// Records how the session at `path` ended: its close, or the error it was lost with.
async fn watch(session: Session, path: String, observed: Arc<Mutex<Observed>>) {
    match session.closed().await {
        Ok(c) => observed
            .lock()
            .unwrap()
            .closes
            .push((path, c.code, c.reason, c.remote)),
        Err(e) => {
            tracing::warn!(%path, error = %e, "session ended without a close");
            observed.lock().unwrap().lost.push((path, e.to_string()));
        }
    }
}

/// A handler's end: once the session has ended, however it ended (closed by the route,
/// by the peer, or lost; [`watch`] records which).
async fn ended(session: &Session) -> HandlerResult {
    let _ = session.closed().await;
    Ok(())
}

async fn server_bidi(session: Session, _ctx: RequestContext) -> HandlerResult {
    if let Ok((mut send, mut recv)) = session.open_bi().await {
        let _ = send.write_all(b"hello from server").await;
        let _ = send.finish();
        let reply = recv.read_to_end(1 << 16).await.unwrap_or_default();
        let _ = session.close(1, &String::from_utf8_lossy(&reply));
    }
    ended(&session).await
}

async fn close_watch(session: Session, _ctx: RequestContext) -> HandlerResult {
    ended(&session).await
}

async fn close_by_server(session: Session, _ctx: RequestContext) -> HandlerResult {
    let _ = session.close(4000, "server bye");
    ended(&session).await
}

/// The `/echo` behaviour: the library's echo service, also what `wt serve` runs.
pub async fn echo(session: Session) {
    let _ = webtransport::app::handlers::echo::serve(session).await;
}

async fn codes(session: &Session, observed: Arc<Mutex<Observed>>) {
    let step = async {
        // 1. The peer resets stream 1 after we acknowledge its first bytes.
        let (mut send, mut recv) = session.accept_bi().await.ok()?;
        let mut first = [0u8; 3];
        recv.read_exact(&mut first).await.ok()?;
        send.write_all(b"k").await.ok()?;
        let reset = match recv.read_to_end(1 << 20).await {
            Err(webtransport::ReadError::Reset(code)) => Some(code),
            _ => None,
        };
        observed.lock().unwrap().reset_seen = reset;
        // 2. We stop the peer's stream 2 with 8.
        let (_send2, mut recv2) = session.accept_bi().await.ok()?;
        let mut b = [0u8; 3];
        recv2.read_exact(&mut b).await.ok()?;
        recv2.stop(8).ok()?;
        // 3. We reset our own stream with 9 after the peer acknowledges a byte.
        let (mut send3, mut recv3) = session.open_bi().await.ok()?;
        send3.write_all(b"x").await.ok()?;
        let mut ack = [0u8; 1];
        recv3.read_exact(&mut ack).await.ok()?;
        send3.reset(9).ok()?;
        // 4. The peer stops our uni stream with 10, then opens a uni stream of its own to
        //    say it has done so; a STOP_SENDING still missing STOP_GRACE after that is
        //    one the peer never sent.
        let mut send4 = session.open_uni().await.ok()?;
        send4.write_all(b"y").await.ok()?;
        let stop = send4.stopped();
        let marker = async {
            let mut marker = session.accept_uni().await.ok()?;
            marker.read_to_end(64).await.ok()
        };
        tokio::pin!(stop, marker);
        let stopped = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                stopped = &mut stop => {
                    // Read the marker all the same: a page stream we stopped or reset
                    // would fail the page's write.
                    let _ = (&mut marker).await;
                    stopped.ok().flatten()
                }
                _ = &mut marker => tokio::time::timeout(STOP_GRACE, &mut stop)
                    .await
                    .ok()
                    .and_then(|stopped| stopped.ok())
                    .flatten(),
            }
        })
        .await
        .ok()?;
        observed.lock().unwrap().stop_seen = Some(stopped);
        Some((reset, stopped))
    };
    let seen = step.await;
    let reason = match seen {
        Some((reset, stopped)) => format!("reset={reset:?} stopped={stopped:?}"),
        None => "choreography failed".into(),
    };
    let _ = session.close(0, &reason);
}

/// Logs for interop runs: our side's SETTINGS and draft lines at info, the rest at warn,
/// unless RUST_LOG says otherwise.
pub fn init_log() {
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,webtransport::engine=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}
