//! `wt serve`'s `/echo` route (the library's echo service) and the lines it reports about
//! sessions opening and closing.

use std::net::SocketAddr;
use webtransport::{Session, SessionError};

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

    pub fn rejected(&self, path: &str, remote: SocketAddr, status: u16) {
        if self.json {
            output::json_line(&[
                ("event", "session_rejected".into()),
                ("path", path.into()),
                ("remote", remote.to_string().into()),
                ("status", status.into()),
            ]);
        } else {
            output::line(format!(
                "request from {remote} for {path}: refused with {status} (only /echo exists)"
            ));
        }
    }

    pub fn closed(&self, who: &SessionLabel, how: &Result<webtransport::CloseInfo, SessionError>) {
        // A session can also end with its connection (the client vanished, the idle
        // timeout, the server shutting down); that is reported as code 0 with the
        // connection's error as the reason.
        let (code, reason, remote) = match how {
            Ok(info) => (info.code, info.reason.clone(), info.remote),
            Err(SessionError::Connection(e)) => (
                0,
                format!("connection ended: {e}"),
                !matches!(e, webtransport::ConnectionError::LocallyClosed),
            ),
            Err(e) => (0, e.to_string(), false),
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
}

/// Serves one session as an echo (`webtransport::echo`) until it closes, and reports the
/// close through `events`.
pub async fn run(session: Session, who: SessionLabel, events: Events) {
    let how = webtransport::app::handlers::echo::serve(session).await;
    events.closed(&who, &how);
}
