//! A chat room: the built-in handler behind [`chat()`](super::chat()).
//!
//! The route's `{room}` parameter names the group the session joins (`lobby` when the
//! route has none); the query's `name` is how its messages are signed (`guest-N`
//! otherwise). Each unidirectional stream a member opens is one message, of at most
//! [`MAX_MESSAGE`] bytes of UTF-8; every member of the room, the sender included, gets it
//! as `NAME: TEXT` on a unidirectional stream of its own, through the registry's
//! broadcast (a member that stops reading is handled by the app's slow-member policy and
//! never slows the room). Joining and leaving are announced as `* NAME joined` and
//! `* NAME left`.

use bytes::Bytes;

use crate::app::{HandlerResult, RequestContext};
use crate::session::Session;

/// The longest message a member may send; a longer stream is stopped and dropped.
pub const MAX_MESSAGE: usize = 4096;
/// The longest name kept from the query; a longer one is cut at a character boundary.
pub const MAX_NAME: usize = 32;
/// The room of a route without a `{room}` parameter.
pub const DEFAULT_ROOM: &str = "lobby";

/// Runs one member of a room until its session ends.
pub async fn serve(session: Session, ctx: RequestContext) -> HandlerResult {
    let room = ctx.param("room").unwrap_or(DEFAULT_ROOM).to_owned();
    let name = member_name(ctx.query_param("name"), &ctx);
    let registry = ctx.app().registry();
    registry.join(&room, ctx.key())?;
    registry.broadcast_stream(&room, Bytes::from(format!("* {name} joined")));
    while let Ok(mut recv) = session.accept_uni().await {
        // A message too long or not text is dropped; the member stays.
        let Ok(text) = recv.read_to_end(MAX_MESSAGE).await else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(&text) else {
            continue;
        };
        registry.broadcast_stream(&room, Bytes::from(format!("{name}: {text}")));
    }
    // The registry would drop the member with its session; leaving first keeps the
    // farewell from being queued for the member that is going.
    registry.leave(&room, ctx.key());
    registry.broadcast_stream(&room, Bytes::from(format!("* {name} left")));
    Ok(())
}

/// The name a member signs with: the query's `name` without control characters, cut to
/// [`MAX_NAME`] bytes, or `guest-N` (N the session key) when that leaves nothing.
fn member_name(asked: Option<&str>, ctx: &RequestContext) -> String {
    let mut name = String::new();
    for c in asked
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
    {
        if name.len() + c.len_utf8() > MAX_NAME {
            break;
        }
        name.push(c);
    }
    if name.is_empty() {
        name = format!("guest-{}", ctx.key().0);
    }
    name
}
