//! Built-in handlers: [`echo()`], a static [`hello`], a [`chat()`] room, and the Devious
//! Baton interop protocol ([`baton()`], on [`crate::baton`]), each usable as a route of a
//! [`ServerApp`](super::ServerApp) and by name ([`Builtin`], what `wt serve --config`
//! maps route names to).

pub mod chat;
pub mod echo;

use std::sync::Arc;

use super::context::RequestContext;
use super::middleware::{BoxFuture, Middleware, Rejection};
use super::{Handler, HandlerResult, RouteOptions};
use crate::baton::{self, BatonParams};
use crate::session::Session;

/// Echoes everything back ([`echo::serve`]) until the session closes. A session that
/// ends because its peer vanished or reset it is a normal end of an echo, not a handler
/// failure: there is nothing the handler did wrong.
pub fn echo() -> impl Handler {
    |session: Session, _ctx: RequestContext| async move {
        if let Err(e) = echo::serve(session.clone()).await {
            tracing::debug!(session = %session.id(), error = %e, "echo session ended abnormally");
        }
        HandlerResult::Ok(())
    }
}

/// Sends `text` on a unidirectional stream (and as a datagram, when it fits) and keeps
/// the session until the client closes it.
pub fn hello(text: impl Into<String>) -> impl Handler {
    let text: Arc<str> = Arc::from(text.into());
    move |session: Session, _ctx: RequestContext| {
        let text = text.clone();
        async move {
            let mut s = session.open_uni().await?;
            s.write_all(text.as_bytes()).await?;
            s.finish()?;
            // Datagrams are best effort: one that does not fit is simply not sent.
            let _ = session.send_datagram(text.as_bytes());
            // How the client ends the session (even by vanishing) is its business.
            let _ = session.closed().await;
            HandlerResult::Ok(())
        }
    }
}

/// A chat room per `{room}` parameter of the route, on the registry's groups and
/// broadcast (see [`chat`](mod@chat) for what goes over the wire).
pub fn chat() -> impl Handler {
    chat::serve
}

/// The Devious Baton server: [`baton_options`] parses and checks the query before the
/// session is accepted (400 for bad parameters, as the draft asks), this runs it.
pub fn baton() -> impl Handler {
    |session: Session, ctx: RequestContext| async move {
        let params = ctx.get::<BatonParams>().cloned().unwrap_or_default();
        baton::serve(session, params).await?;
        HandlerResult::Ok(())
    }
}

/// The route options of [`baton()`]: a route middleware that parses the query into
/// [`BatonParams`].
pub fn baton_options() -> RouteOptions {
    RouteOptions::new().middleware(BatonQuery)
}

#[derive(Debug)]
struct BatonQuery;

impl Middleware for BatonQuery {
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        let parsed = BatonParams::default().with_query(ctx.raw_query());
        Box::pin(async move {
            match parsed {
                Ok(p) => {
                    ctx.insert(p);
                    Ok(())
                }
                Err(e) => Err(Rejection::new(
                    e.http_status().unwrap_or(400),
                    "baton_query",
                )),
            }
        })
    }
}

/// A built-in handler, for [`ServerApp::builtin`](super::ServerApp::builtin).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Builtin {
    /// [`echo()`], accepting the first subprotocol the client offers.
    Echo,
    /// [`baton()`] (with [`baton_options`]).
    DeviousBaton,
    /// [`chat()`].
    Chat,
    /// [`hello`] with this text.
    Hello {
        /// What to send.
        text: String,
    },
}
