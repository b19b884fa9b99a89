//! The server framework: [`ServerApp`] routes session requests to handlers, runs
//! middleware before accepting them, calls lifecycle hooks, enforces session limits,
//! keeps every live session in a [`SessionRegistry`] (with groups and broadcast), and
//! counts what happens in [`ServerStats`] (also as Prometheus text).
//!
//! Built on the public [`Server`] and [`SessionRequest`] API only.
//!
//! ```no_run
//! use webtransport::app::{handlers, ServerApp};
//! use webtransport::{generate_self_signed, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cert = generate_self_signed(&["localhost"])?;
//! let config = ServerConfig {
//!     bind: vec!["[::]:4433".parse()?],
//!     certificate: cert.to_certificate_source(),
//!     ..ServerConfig::default()
//! };
//! ServerApp::new()
//!     .route("/echo", handlers::echo())
//!     .route("/rooms/{id}", |session: webtransport::Session, ctx: webtransport::app::RequestContext| async move {
//!         let room = ctx.param("id").unwrap_or_default().to_owned();
//!         ctx.app().registry().join(&room, ctx.key())?;
//!         session.closed().await?;
//!         Ok::<_, webtransport::app::HandlerError>(())
//!     })
//!     .run(config)
//!     .await?;
//! # Ok(()) }
//! ```

mod context;
pub mod handlers;
mod middleware;
mod rate_limit;
mod registry;
mod router;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::{debug, warn};

pub use context::RequestContext;
pub use middleware::{
    AccessLog, Auth, AuthRequest, BoxFuture, Middleware, OriginAllowList, Rejection,
};
pub use rate_limit::RateLimit;
pub use registry::{
    BroadcastReport, GroupError, SessionKey, SessionRegistry, SlowMemberPolicy, SLOW_MEMBER_CODE,
};
pub use router::{Params, RouteError};
pub use stats::{ServerDiagnostics, ServerStats};

use crate::config::ServerConfig;
use crate::info::CloseInfo;
use crate::server::{Server, ServerError, SessionRequest};
use crate::session::Session;
use registry::LimitHit;
use router::Router;

/// What a handler may fail with: any error (it is logged and counted).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

/// The session close code when a session's handler returned an error or panicked.
pub const HANDLER_FAILED_CODE: u32 = 0x5100;
/// The session close code for a session idle past `idle_session_timeout`.
pub const IDLE_CODE: u32 = 0x5101;

/// A route's handler: an async function of the accepted session and its request. It runs
/// in a task of its own; the session lives as long as it does (closed with code 0 when it
/// returns `Ok`, [`HANDLER_FAILED_CODE`] when it fails or panics).
pub trait Handler: Send + Sync + 'static {
    /// Runs the session.
    fn call(&self, session: Session, ctx: RequestContext) -> BoxFuture<'static, HandlerResult>;
}

impl<F, Fut, E> Handler for F
where
    F: Fn(Session, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn call(&self, session: Session, ctx: RequestContext) -> BoxFuture<'static, HandlerResult> {
        let fut = self(session, ctx);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Per-route settings: subprotocols and middleware of its own.
#[derive(Default)]
pub struct RouteOptions {
    protocols: Vec<String>,
    first_offered: bool,
    require_protocol: bool,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl std::fmt::Debug for RouteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteOptions")
            .field("protocols", &self.protocols)
            .field("first_offered", &self.first_offered)
            .field("require_protocol", &self.require_protocol)
            .field("middleware", &self.middleware.len())
            .finish()
    }
}

impl RouteOptions {
    /// No subprotocols, no middleware of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// The subprotocols this route speaks, in the server's preference: the first of them
    /// the client offers (`wt-available-protocols`) is chosen and sent as `wt-protocol`.
    /// Replaces [`RouteOptions::accept_first_offered`].
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self.first_offered = false;
        self
    }

    /// Accepts whatever subprotocol the client offers first (`wt-available-protocols`
    /// is in the client's preference), sent back as `wt-protocol`: for routes that speak
    /// any protocol, such as an echo that lets a client test its negotiation. Replaces
    /// [`RouteOptions::protocols`].
    pub fn accept_first_offered(mut self) -> Self {
        self.protocols.clear();
        self.first_offered = true;
        self
    }

    /// Refuse (400, reason `protocol`) a client that offers none of the route's
    /// subprotocols (with [`RouteOptions::accept_first_offered`]: none at all); by
    /// default such a client gets the session without one.
    pub fn require_protocol(mut self, require: bool) -> Self {
        self.require_protocol = require;
        self
    }

    /// A middleware run for this route only, after the app's.
    pub fn middleware(mut self, m: impl Middleware) -> Self {
        self.middleware.push(Arc::new(m));
        self
    }

    fn negotiate(&self, offered: &[String]) -> Result<Option<String>, Rejection> {
        let chosen = if self.first_offered {
            offered.first()
        } else if self.protocols.is_empty() {
            return Ok(None);
        } else {
            self.protocols.iter().find(|p| offered.contains(p))
        };
        match chosen {
            Some(p) => Ok(Some(p.clone())),
            None if self.require_protocol => Err(Rejection::new(400, "protocol")),
            None => Ok(None),
        }
    }
}

/// An app's session limits. Connection limits are the server's
/// (`ServerConfig::max_connections`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppLimits {
    /// Sessions at once (accepted, or admitted and in middleware); over it: 503.
    /// Default 10,000.
    pub max_sessions: usize,
    /// Sessions at once from one IP address; over it: 429. Default 100.
    pub max_sessions_per_ip: usize,
    /// Close a session (code [`IDLE_CODE`]) when its connection has been idle this long
    /// at the WebTransport layer (no stream bytes, datagrams or session activity).
    /// Default: none.
    #[serde(with = "crate::config::opt_duration_serde")]
    pub idle_session_timeout: Option<Duration>,
    /// Broadcast messages queued per group member before the slow-member policy applies.
    /// Default 64.
    pub broadcast_queue: usize,
    /// What happens to a member whose broadcast queue is full. Default: skip it.
    pub slow_member: SlowMemberPolicy,
    /// How long shutdown waits for handlers to end after their sessions were closed.
    /// Default 5 s.
    #[serde(with = "crate::config::duration_serde")]
    pub shutdown_grace: Duration,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            max_sessions: 10_000,
            max_sessions_per_ip: 100,
            idle_session_timeout: None,
            broadcast_queue: 64,
            slow_member: SlowMemberPolicy::Skip,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why an app could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A route pattern is invalid or registered twice.
    #[error("invalid route")]
    Route(#[from] RouteError),
    /// The server could not start.
    #[error("server")]
    Server(#[from] ServerError),
    /// Waiting for Ctrl-C / SIGTERM failed.
    #[error("signal handler")]
    Signal(#[source] std::io::Error),
}

/// A session that ended, as [`ServerApp::on_session_close`] hooks see it.
#[derive(Debug, Clone)]
pub struct ClosedSession {
    /// Its key.
    pub key: SessionKey,
    /// The route pattern it was accepted on.
    pub route: String,
    /// The client's address.
    pub remote: SocketAddr,
    /// How it closed (`None`: the connection failed under it).
    pub close: Option<CloseInfo>,
}

type StartHook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;
type OpenHook = Box<dyn Fn(&Session, &RequestContext) + Send + Sync>;
type CloseHook = Box<dyn Fn(&ClosedSession) + Send + Sync>;

#[derive(Default)]
struct Hooks {
    startup: Vec<StartHook>,
    shutdown: Vec<StartHook>,
    open: Vec<OpenHook>,
    close: Vec<CloseHook>,
}

struct RouteEntry {
    options: RouteOptions,
    handler: Box<dyn Handler>,
}

/// What handlers and middleware reach of their app: its registry and statistics.
#[derive(Debug, Clone)]
pub struct AppHandle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    registry: Arc<SessionRegistry>,
    stats: Arc<ServerStats>,
    servers: Mutex<Vec<Weak<Server>>>,
    next_key: AtomicU64,
}

impl AppHandle {
    /// Every live session, and the groups.
    pub fn registry(&self) -> &SessionRegistry {
        &self.0.registry
    }

    /// The counters.
    pub fn stats(&self) -> &ServerStats {
        &self.0.stats
    }

    /// The counters now, connections and traffic read from the servers the app serves.
    pub fn diagnostics(&self) -> ServerDiagnostics {
        self.refresh();
        self.0.stats.snapshot()
    }

    /// The counters in the Prometheus text format (OpenMetrics), as a `/metrics`
    /// endpoint serves them (content type `application/openmetrics-text;
    /// version=1.0.0; charset=utf-8`).
    pub fn prometheus_text(&self) -> String {
        self.refresh();
        self.0.stats.encode()
    }

    fn refresh(&self) {
        let servers: Vec<Arc<Server>> = {
            let mut list = self.0.servers.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let live: Vec<_> = self
            .0
            .registry
            .keys()
            .into_iter()
            .filter_map(|k| self.0.registry.get(k))
            .map(|s| s.stats())
            .collect();
        let refs: Vec<&Server> = servers.iter().map(Arc::as_ref).collect();
        self.0.stats.refresh(&refs, &live);
    }
}

/// The server framework. Build it with routes, middleware, hooks and limits, then
/// [`ServerApp::run`] it (bind, serve until Ctrl-C or SIGTERM, shut down gracefully) or
/// [`ServerApp::serve`] it on servers of your own.
pub struct ServerApp {
    router: Router<RouteEntry>,
    errors: Vec<RouteError>,
    middleware: Vec<Arc<dyn Middleware>>,
    hooks: Hooks,
    limits: AppLimits,
    handle: AppHandle,
}

impl std::fmt::Debug for ServerApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerApp")
            .field("routes", &self.router.patterns().collect::<Vec<_>>())
            .field("middleware", &self.middleware.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for ServerApp {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerApp {
    /// An app with no routes and the default limits.
    pub fn new() -> Self {
        Self::with_limits(AppLimits::default())
    }

    /// An app with these limits.
    pub fn with_limits(limits: AppLimits) -> Self {
        let stats = Arc::new(ServerStats::new());
        let registry = Arc::new(SessionRegistry::new(
            limits.broadcast_queue,
            limits.slow_member,
            stats.clone(),
        ));
        ServerApp {
            router: Router::default(),
            errors: Vec::new(),
            middleware: Vec::new(),
            hooks: Hooks::default(),
            limits,
            handle: AppHandle(Arc::new(Shared {
                registry,
                stats,
                servers: Mutex::new(Vec::new()),
                next_key: AtomicU64::new(1),
            })),
        }
    }

    /// Routes `pattern` (an exact path like `/echo`, or with named segments like
    /// `/rooms/{id}`) to `handler`. An invalid or repeated pattern makes `serve` and
    /// `run` fail with [`AppError::Route`].
    pub fn route(self, pattern: &str, handler: impl Handler) -> Self {
        self.route_with(pattern, RouteOptions::new(), handler)
    }

    /// [`ServerApp::route`] with subprotocols and middleware of the route's own.
    pub fn route_with(
        mut self,
        pattern: &str,
        options: RouteOptions,
        handler: impl Handler,
    ) -> Self {
        let entry = RouteEntry {
            options,
            handler: Box::new(handler),
        };
        if let Err(e) = self.router.add(pattern, entry) {
            self.errors.push(e);
        }
        self
    }

    /// Routes `pattern` to a built-in handler.
    pub fn builtin(self, pattern: &str, builtin: handlers::Builtin) -> Self {
        match builtin {
            // An echo speaks whatever the client speaks.
            handlers::Builtin::Echo => self.route_with(
                pattern,
                RouteOptions::new().accept_first_offered(),
                handlers::echo(),
            ),
            handlers::Builtin::DeviousBaton => {
                self.route_with(pattern, handlers::baton_options(), handlers::baton())
            }
            handlers::Builtin::Chat => self.route(pattern, handlers::chat()),
            handlers::Builtin::Hello { text } => self.route(pattern, handlers::hello(text)),
        }
    }

    /// Adds a middleware, run on every routed request after those added before it.
    pub fn middleware(mut self, m: impl Middleware) -> Self {
        self.middleware.push(Arc::new(m));
        self
    }

    /// Runs `hook` once before the app starts accepting.
    pub fn on_startup<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.startup.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Runs `hook` once after the app stopped accepting and its handlers ended.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.shutdown.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Calls `hook` for every accepted session, before its handler starts.
    pub fn on_session_open(
        mut self,
        hook: impl Fn(&Session, &RequestContext) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.open.push(Box::new(hook));
        self
    }

    /// Calls `hook` for every accepted session once it has ended (after its handler).
    pub fn on_session_close(
        mut self,
        hook: impl Fn(&ClosedSession) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.close.push(Box::new(hook));
        self
    }

    /// The app's registry and statistics, for use outside handlers (a metrics endpoint).
    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Binds a [`Server`] with `config`, serves until Ctrl-C or SIGTERM, then shuts down
    /// gracefully (GOAWAY and DRAIN, sessions closed with a reason, handlers awaited).
    pub async fn run(self, config: ServerConfig) -> Result<(), AppError> {
        let server = Arc::new(Server::bind(config).await?);
        let grace = self.limits.shutdown_grace;
        let serving = self.serve_all(vec![server.clone()]);
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => return r,
            r = shutdown_signal() => r.map_err(AppError::Signal)?,
        }
        server.shutdown(grace).await;
        serving.await
    }

    /// Serves session requests from `server` until it is shut down
    /// ([`Server::shutdown`]), then waits for the handlers and runs the shutdown hooks.
    pub async fn serve(self, server: Arc<Server>) -> Result<(), AppError> {
        self.serve_all(vec![server]).await
    }

    /// [`ServerApp::serve`] on several servers at once (different addresses or
    /// certificates), with one registry and one set of statistics: the seed's
    /// `ServerCluster`. Returns once every server is shut down.
    pub async fn serve_all(mut self, servers: Vec<Arc<Server>>) -> Result<(), AppError> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(AppError::Route(e));
        }
        {
            let mut list = self
                .handle
                .0
                .servers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            list.extend(servers.iter().map(Arc::downgrade));
        }
        for hook in &self.hooks.startup {
            hook().await;
        }
        let grace = self.limits.shutdown_grace;
        let shutdown = std::mem::take(&mut self.hooks.shutdown);
        let app = Arc::new(self);
        let mut sessions = JoinSet::new();
        let mut accepting = JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SessionRequest>(64);
        for server in servers {
            let tx = tx.clone();
            accepting.spawn(async move {
                while let Some(req) = server.accept().await {
                    if tx.send(req).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while let Some(req) = rx.recv().await {
            sessions.spawn(app.clone().handle_request(req));
            while sessions.try_join_next().is_some() {}
        }
        while accepting.join_next().await.is_some() {}
        // Sessions were closed by the servers' shutdown; their handlers end with them.
        let ended = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if ended.is_err() {
            warn!(
                left = sessions.len(),
                "handlers still running after the shutdown grace: aborted"
            );
            sessions.abort_all();
        }
        for hook in &shutdown {
            hook().await;
        }
        Ok(())
    }

    /// One session request, from routing to the end of its session.
    async fn handle_request(self: Arc<Self>, req: SessionRequest) {
        let stats = &self.handle.0.stats;
        stats.request();
        let key = SessionKey(self.handle.0.next_key.fetch_add(1, Ordering::Relaxed));
        let remote = req.remote_address();
        let mut ctx = RequestContext::new(
            key,
            req.request().clone(),
            remote,
            req.connection().clone(),
            self.handle.clone(),
        );
        let decided = self.decide(&mut ctx).await;
        let (route, admission) = match decided {
            Ok(ok) => ok,
            Err(rej) => {
                stats.rejected(&rej.reason, rej.status);
                self.answered(&ctx, rej.status, Some(&rej.reason));
                let mut headers = ctx.take_response_headers();
                headers.extend(rej.headers);
                req.reject_with(rej.status, headers);
                return;
            }
        };
        let headers = ctx.take_response_headers();
        let session = match req.accept_with(ctx.protocol().map(str::to_owned), headers) {
            Ok(s) => s,
            Err(e) => {
                // The client went away while middleware ran.
                debug!(session = %key, error = %e, "session ended before it was accepted");
                return;
            }
        };
        let pattern = ctx.route().unwrap_or_default().to_owned();
        let registry = &self.handle.0.registry;
        registry.insert(key, session.clone(), Some(pattern.clone()));
        stats.accepted(&pattern, session.connection());
        self.answered(&ctx, 200, None);
        for hook in &self.hooks.open {
            hook(&session, &ctx);
        }
        let failed = self.run_handler(route, &session, ctx).await;
        if failed {
            let _ = session.close(HANDLER_FAILED_CODE, "handler failed");
        } else {
            let _ = session.close(0, "");
        }
        let close = tokio::time::timeout(Duration::from_secs(5), session.closed())
            .await
            .ok()
            .and_then(Result::ok);
        registry.remove(key);
        stats.closed(&session.stats(), session.connection());
        drop(admission);
        let closed = ClosedSession {
            key,
            route: pattern,
            remote,
            close,
        };
        for hook in &self.hooks.close {
            hook(&closed);
        }
    }

    /// Routes and checks a request: the route and the session's admission, or why not.
    async fn decide(
        &self,
        ctx: &mut RequestContext,
    ) -> Result<(&RouteEntry, registry::Admission), Rejection> {
        let (pattern, entry, params) = self
            .router
            .find(ctx.path())
            .ok_or_else(|| Rejection::new(404, "not_found"))?;
        ctx.set_route(pattern.as_str(), params);
        let admission = self
            .handle
            .0
            .registry
            .admit(
                ctx.remote_address().ip(),
                self.limits.max_sessions,
                self.limits.max_sessions_per_ip,
            )
            .map_err(|hit| match hit {
                LimitHit::Total => Rejection::new(503, "max_sessions"),
                LimitHit::PerIp => Rejection::new(429, "max_sessions_per_ip"),
            })?;
        for m in self.middleware.iter().chain(&entry.options.middleware) {
            m.check(ctx).await?;
        }
        let protocol = entry
            .options
            .negotiate(&ctx.request().available_protocols)?;
        ctx.set_protocol(protocol);
        Ok((entry, admission))
    }

    fn answered(&self, ctx: &RequestContext, status: u16, reason: Option<&str>) {
        for m in &self.middleware {
            m.answered(ctx, status, reason);
        }
    }

    /// Runs the route's handler for `session`, catching a panic and enforcing the idle
    /// timeout. Returns whether it failed (counted and logged here).
    async fn run_handler(
        &self,
        route: &RouteEntry,
        session: &Session,
        ctx: RequestContext,
    ) -> bool {
        let key = ctx.key();
        let run =
            std::panic::AssertUnwindSafe(route.handler.call(session.clone(), ctx)).catch_unwind();
        let outcome = match self.limits.idle_session_timeout {
            None => Some(run.await),
            Some(limit) => tokio::select! {
                r = run => Some(r),
                () = idle(session, limit) => None,
            },
        };
        let stats = &self.handle.0.stats;
        match outcome {
            Some(Ok(Ok(()))) => false,
            Some(Ok(Err(e))) => {
                warn!(session = %key, error = %e, "session handler failed");
                stats.handler_failed(false);
                true
            }
            Some(Err(_panic)) => {
                warn!(session = %key, "session handler panicked");
                stats.handler_failed(true);
                true
            }
            None => {
                debug!(session = %key, "idle session closed");
                let _ = session.close(IDLE_CODE, "idle");
                false
            }
        }
    }
}

/// Resolves once `session`'s connection has been idle for `limit`.
async fn idle(session: &Session, limit: Duration) {
    loop {
        let idle = session.connection().idle_time();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
