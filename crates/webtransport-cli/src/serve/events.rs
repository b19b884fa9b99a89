//! The lines `wt serve` prints about sessions: opened, refused, closed. They come from
//! the app's hooks and from a middleware that is told how each request was answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use webtransport::app::{
    BoxFuture, ClosedSession, Middleware, Rejection, RequestContext, ServerApp, SessionKey,
};
use webtransport::CloseInfo;

use crate::output;

/// Who a session is, for the lines printed about it.
#[derive(Debug, Clone)]
pub struct SessionLabel {
    /// The connection's id (session ids are only unique within a connection).
    pub connection: String,
    /// The session id (its CONNECT stream id).
    pub session: u64,
    /// The client's address.
    pub remote: SocketAddr,
}

/// Prints session events: JSON lines with `--json`, short sentences otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Events {
    pub json: bool,
}

impl Events {
    pub fn opened(&self, who: &SessionLabel, path: &str, protocol: Option<&str>) {
        if self.json {
            output::json_line(&[
                ("event", "session_opened".into()),
                ("session", who.session.into()),
                ("path", path.into()),
                ("remote", who.remote.to_string().into()),
                ("protocol", protocol.into()),
                ("connection", who.connection.clone().into()),
            ]);
        } else {
            let protocol = protocol
                .map(|p| format!(" (subprotocol {p:?})"))
                .unwrap_or_default();
            output::line(format!(
                "session {} from {}: opened on {path}{protocol}",
                who.session, who.remote
            ));
        }
    }

    pub fn rejected(&self, path: &str, remote: SocketAddr, status: u16, reason: &str) {
        if self.json {
            output::json_line(&[
                ("event", "session_rejected".into()),
                ("path", path.into()),
                ("remote", remote.to_string().into()),
                ("status", status.into()),
            ]);
        } else {
            output::line(format!(
                "request from {remote} for {path}: refused with {status} ({reason})"
            ));
        }
    }

    pub fn closed(&self, who: &SessionLabel, close: Option<&CloseInfo>) {
        // A session can also end with its connection (the client vanished, the idle
        // timeout): that is reported as code 0, by the client, with a reason saying so.
        let (code, reason, remote) = match close {
            Some(info) => (info.code, info.reason.clone(), info.remote),
            None => (0, "connection ended without a close".to_owned(), true),
        };
        if self.json {
            output::json_line(&[
                ("event", "session_closed".into()),
                ("session", who.session.into()),
                ("code", code.into()),
                ("reason", reason.into()),
                ("remote", remote.into()),
                ("connection", who.connection.clone().into()),
            ]);
        } else {
            let by = if remote { "the client" } else { "the server" };
            output::line(format!(
                "session {} from {}: closed by {by}, code {code}, reason {reason:?}",
                who.session, who.remote
            ));
        }
    }

    /// `app` with these events reported: sessions opened and closed through its hooks,
    /// refusals through a middleware that runs first and refuses nothing itself.
    pub fn attach(self, app: ServerApp) -> ServerApp {
        let labels: Arc<Mutex<HashMap<SessionKey, SessionLabel>>> = Arc::default();
        let on_open = labels.clone();
        app.middleware(Refusals(self))
            .on_session_open(move |session, ctx| {
                let who = SessionLabel {
                    connection: session.connection().connection_id().to_owned(),
                    session: session.id().stream_id(),
                    remote: ctx.remote_address(),
                };
                self.opened(&who, ctx.path(), ctx.protocol());
                on_open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ctx.key(), who);
            })
            .on_session_close(move |closed: &ClosedSession| {
                let who = labels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&closed.key);
                if let Some(who) = who {
                    self.closed(&who, closed.close.as_ref());
                }
            })
    }
}

/// Reports every refused request.
struct Refusals(Events);

impl Middleware for Refusals {
    fn check<'a>(&'a self, _ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async { Ok(()) })
    }

    fn answered(&self, ctx: &RequestContext, status: u16, reason: Option<&str>) {
        if status != 200 {
            let reason = reason.unwrap_or("refused");
            self.0
                .rejected(ctx.path(), ctx.remote_address(), status, reason);
        }
    }
}
