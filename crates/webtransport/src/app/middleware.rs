//! Middleware: checks run in order on every routed session request before the handler,
//! each able to reject it (a status and headers) or to pass values on. Built in: an
//! origin allow-list, an auth hook, a per-IP rate limit ([`super::RateLimit`]) and an
//! access log.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use webtransport_proto::qpack::HeaderField;

use super::context::RequestContext;

/// A boxed future, as middleware return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A refused session request: the HTTP status and headers the client gets, and a short
/// reason for the statistics (`rejected_total{reason}`) and the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status (a 2xx is sent as 400).
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Why, as a metric label: a short lowercase word.
    pub reason: Cow<'static, str>,
}

impl Rejection {
    /// A rejection with `status` for `reason`.
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            headers: Vec::new(),
            reason: reason.into(),
        }
    }

    /// With a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A check run before a session is accepted.
///
/// Implement it on a type, or pass a closure `|ctx| Box::pin(async move { ... })` taking
/// `&mut RequestContext` and returning `Result<(), Rejection>`.
pub trait Middleware: Send + Sync + 'static {
    /// Checks the request: `Err` refuses it (no later middleware and no handler run).
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>>;

    /// Told how the request ended (`status` 200 for an accepted session), for every
    /// middleware of the app, whether or not its own check ran.
    fn answered(&self, _ctx: &RequestContext, _status: u16, _reason: Option<&str>) {}
}

impl<F> Middleware for F
where
    F: for<'a> Fn(&'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>>
        + Send
        + Sync
        + 'static,
{
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        self(ctx)
    }
}

/// Browsers send the page's origin with every WebTransport request and rely on the server
/// to refuse origins it does not serve (the WebTransport analogue of CORS). Requests
/// from an origin not on the list get 403; requests without an `origin` header (not from
/// a browser) pass unless [`OriginAllowList::require_origin`] is set.
#[derive(Debug, Clone)]
pub struct OriginAllowList {
    allowed: Vec<String>,
    require: bool,
}

impl OriginAllowList {
    /// Allows exactly these origins (`https://example.com`, `http://localhost:8080`);
    /// `*` allows any origin.
    pub fn new<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        OriginAllowList {
            allowed: origins
                .into_iter()
                .map(|o| o.into().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            require: false,
        }
    }

    /// Refuses requests without an `origin` header too.
    pub fn require_origin(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// Whether `origin` (or its absence) passes.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => !self.require,
            Some(o) => {
                let o = o.trim_end_matches('/').to_ascii_lowercase();
                self.allowed.iter().any(|a| a == "*" || *a == o)
            }
        }
    }
}

impl Middleware for OriginAllowList {
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        let ok = self.allows(ctx.origin());
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(Rejection::new(403, "origin"))
            }
        })
    }
}

/// What an [`Auth`] hook sees of a request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The path without query.
    pub path: String,
    /// The query's parameters.
    pub query: Vec<(String, String)>,
    /// The request headers (without the pseudo-headers and `origin`).
    pub headers: Vec<HeaderField>,
    /// The `origin` header.
    pub origin: Option<String>,
    /// The client's address.
    pub remote: SocketAddr,
}

impl AuthRequest {
    /// The value of header `name` (lowercase), if sent and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.as_ref() == name.as_bytes())
            .and_then(|h| std::str::from_utf8(&h.value).ok())
    }
}

type AuthFn<T> = dyn Fn(AuthRequest) -> BoxFuture<'static, Result<T, Rejection>> + Send + Sync;

/// An async authentication hook. It sees the request's path, query, headers, origin and
/// the peer's address; `Ok(identity)` lets the request on and passes the identity to
/// later middleware and the handler ([`RequestContext::get`]); `Err` refuses it (use
/// [`Auth::unauthorized`] for a plain 401).
pub struct Auth<T> {
    hook: Arc<AuthFn<T>>,
}

impl<T> std::fmt::Debug for Auth<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

impl<T: Send + Sync + 'static> Auth<T> {
    /// An auth hook: `hook(request)` resolves to the identity or a rejection.
    pub fn new<F, Fut>(hook: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Rejection>> + Send + 'static,
    {
        Auth {
            hook: Arc::new(move |r| Box::pin(hook(r))),
        }
    }

    /// The usual refusal: 401 for reason `auth`.
    pub fn unauthorized() -> Rejection {
        Rejection::new(401, "auth")
    }
}

impl<T: Send + Sync + 'static> Middleware for Auth<T> {
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        let request = AuthRequest {
            path: ctx.path().to_owned(),
            query: ctx.query().to_vec(),
            headers: ctx.request().headers.clone(),
            origin: ctx.origin().map(str::to_owned),
            remote: ctx.remote_address(),
        };
        let fut = (self.hook)(request);
        Box::pin(async move {
            let identity = fut.await?;
            ctx.insert(identity);
            Ok(())
        })
    }
}

/// Logs every request's outcome as one structured `tracing` event at info level, target
/// `webtransport::access`: remote address, path, route, status, rejection reason and
/// the chosen subprotocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLog;

impl Middleware for AccessLog {
    fn check<'a>(&'a self, _ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async { Ok(()) })
    }

    fn answered(&self, ctx: &RequestContext, status: u16, reason: Option<&str>) {
        tracing::info!(
            target: "webtransport::access",
            remote = %ctx.remote_address(),
            path = ctx.path(),
            route = ctx.route().unwrap_or("-"),
            status,
            reason = reason.unwrap_or("-"),
            protocol = ctx.protocol().unwrap_or("-"),
            session = ctx.key().0,
            "session request"
        );
    }
}
