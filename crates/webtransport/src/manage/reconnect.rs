//! [`ReconnectingClient`]: keeps one session to a URL open, reconnecting with exponential
//! backoff — pywebtransport's `ReconnectingClient`.
//!
//! ```text
//!            ┌──────── connect ok ────────┐
//!            │                            ▼
//!   Connecting ◀── session lost ──── Connected       (events: Connected, Lost)
//!     │   ▲
//!     │   └── wait backoff_delay(n) ◀── attempt n failed, n <= max_retries   (AttemptFailed)
//!     └── attempt failed, n > max_retries or not retriable ──▶ GaveUp        (GaveUp)
//!   close() from any state ──▶ Closed
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::TaskCounter;
use crate::client::{Client, WebTransportUrl};
use crate::config::ClientConfig;
use crate::error::{ConnectError, SessionError};
use crate::session::{CloseInfo, Session};
use webtransport_proto::stream_header::SessionId;

/// The delay before retry number `failures` (1 for the first retry):
/// `retry_delay * retry_backoff^(failures - 1)`, at most `max_retry_delay`.
pub fn backoff_delay(config: &ClientConfig, failures: u32) -> Duration {
    let exp = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = config.retry_delay.as_secs_f64() * config.retry_backoff.powi(exp);
    let max = config.max_retry_delay;
    if secs.is_finite() && secs < max.as_secs_f64() {
        Duration::from_secs_f64(secs.max(0.0))
    } else {
        max
    }
}

/// What happened to a [`ReconnectingClient`]'s session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A session is open (first connect or a reconnect).
    Connected {
        /// Which attempt since the last loss (or start) succeeded, from 1.
        attempt: u32,
        /// The new session.
        session: SessionId,
    },
    /// The session ended; reconnecting starts at once.
    Lost {
        /// What [`Session::closed`] returned for it.
        closed: Result<CloseInfo, SessionError>,
    },
    /// A connect failed; the next one starts after `retry_in`.
    AttemptFailed {
        /// Consecutive failures so far, from 1.
        attempt: u32,
        /// Why it failed.
        error: ConnectError,
        /// The backoff delay before the next attempt.
        retry_in: Duration,
    },
    /// Reconnecting stopped: `max_retries` retries failed, or an error that retrying
    /// cannot fix (see [`ConnectError::is_retriable`]).
    GaveUp {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last error.
        last_error: ConnectError,
    },
}

/// Why [`ReconnectingClient::get_session`] returned no session.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReconnectError {
    /// No session became ready within the wait.
    #[error("no session within {0:?}")]
    Timeout(Duration),
    /// The client gave up reconnecting.
    #[error("gave up reconnecting: {0}")]
    GaveUp(ConnectError),
    /// [`ReconnectingClient::close`] was called.
    #[error("the reconnecting client is closed")]
    Closed,
}

#[derive(Debug, Clone)]
enum Link {
    Connecting,
    Connected(Session),
    GaveUp(ConnectError),
    Closed,
}

#[derive(Debug)]
struct Shared {
    link: watch::Sender<Link>,
    events: broadcast::Sender<ReconnectEvent>,
}

impl Shared {
    fn emit(&self, event: ReconnectEvent) {
        let _ = self.events.send(event);
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    url: String,
    task: Mutex<Option<JoinHandle<()>>>,
    tasks: TaskCounter,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Keeps one session to a URL open: connects at start, reconnects when the session ends,
/// and retries failed connects after [`backoff_delay`] — the retry delay, backoff factor,
/// maximum delay and maximum retries of the [`Client`]'s config. A loss is followed by an
/// immediate reconnect (no delay); the retry count starts over after every success.
/// Errors that retrying cannot fix (a 4xx answer, a certificate failure) stop it at once.
///
/// Cheap to clone; clones share the session. The reconnect task ends on
/// [`close`](Self::close) or when the last clone is dropped.
#[derive(Clone)]
pub struct ReconnectingClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("url", &self.inner.url)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl ReconnectingClient {
    /// Starts keeping a session to `url` open with `client`. Must be called inside a tokio
    /// runtime (it spawns the reconnect task); fails at once on a URL that does not parse.
    pub fn start(client: Client, url: &str) -> Result<ReconnectingClient, ConnectError> {
        url.parse::<WebTransportUrl>()?;
        if !super::have_runtime() {
            return Err(ConnectError::NoRuntime);
        }
        let shared = Arc::new(Shared {
            link: watch::Sender::new(Link::Connecting),
            events: broadcast::channel(64).0,
        });
        let tasks = TaskCounter::default();
        let task = tasks.spawn(run(client, url.to_owned(), shared.clone()));
        info!(%url, "reconnecting client started");
        Ok(ReconnectingClient {
            inner: Arc::new(Inner {
                shared,
                url: url.to_owned(),
                task: Mutex::new(Some(task)),
                tasks,
            }),
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether a session is open now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.shared.link.borrow(), Link::Connected(s) if !s.is_closed())
    }

    /// A receiver of this client's events from now on.
    pub fn events(&self) -> broadcast::Receiver<ReconnectEvent> {
        self.inner.shared.events.subscribe()
    }

    /// The open session, waiting up to `wait_timeout` for one while (re)connecting.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn get_session(&self, wait_timeout: Duration) -> Result<Session, ReconnectError> {
        let mut rx = self.inner.shared.link.subscribe();
        let wait = rx.wait_for(|l| match l {
            Link::Connected(s) => !s.is_closed(),
            Link::Connecting => false,
            Link::GaveUp(_) | Link::Closed => true,
        });
        let result = match tokio::time::timeout(wait_timeout, wait).await {
            Err(_) => Err(ReconnectError::Timeout(wait_timeout)),
            Ok(Err(_)) => Err(ReconnectError::Closed),
            Ok(Ok(link)) => match &*link {
                Link::Connected(s) => Ok(s.clone()),
                Link::GaveUp(e) => Err(ReconnectError::GaveUp(e.clone())),
                Link::Connecting | Link::Closed => Err(ReconnectError::Closed),
            },
        };
        result
    }

    /// Stops reconnecting (and waits for the task to end) and closes the session with
    /// code 0. Later [`get_session`](Self::get_session) calls fail with
    /// [`ReconnectError::Closed`].
    ///
    /// # Cancel safety
    /// Cancel safe: the task is aborted and the session closed before the first await.
    pub async fn close(&self) {
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = &task {
            task.abort();
        }
        if let Link::Connected(s) = self.inner.shared.link.send_replace(Link::Closed) {
            let _ = s.close(0, "");
        }
        if let Some(task) = task {
            let _ = task.await;
        }
        info!(url = %self.inner.url, "reconnecting client closed");
    }

    /// Background tasks still alive (the reconnect loop: 1 while running, 0 after
    /// `close` or after giving up).
    pub fn background_tasks(&self) -> usize {
        self.inner.tasks.live()
    }
}

async fn run(client: Client, url: String, shared: Arc<Shared>) {
    let config = client.config().clone();
    let mut failures: u32 = 0;
    loop {
        match client.connect(&url).await {
            Ok(session) => {
                let attempt = failures + 1;
                failures = 0;
                info!(%url, attempt, "reconnecting client: connected");
                let id = session.id();
                let kept = shared.link.send_if_modified(|l| {
                    if matches!(l, Link::Closed) {
                        return false;
                    }
                    *l = Link::Connected(session.clone());
                    true
                });
                if !kept {
                    let _ = session.close(0, "");
                    return;
                }
                shared.emit(ReconnectEvent::Connected {
                    attempt,
                    session: id,
                });
                let closed = session.closed().await;
                drop(session);
                let still_open = shared.link.send_if_modified(|l| {
                    if matches!(l, Link::Closed) {
                        return false;
                    }
                    *l = Link::Connecting;
                    true
                });
                if !still_open {
                    return;
                }
                warn!(%url, ?closed, "reconnecting client: session lost, reconnecting");
                shared.emit(ReconnectEvent::Lost { closed });
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures > config.max_retries || !e.is_retriable() {
                    warn!(%url, attempts = failures, error = %e, "reconnecting client: giving up");
                    shared.link.send_if_modified(|l| {
                        if matches!(l, Link::Closed) {
                            return false;
                        }
                        *l = Link::GaveUp(e.clone());
                        true
                    });
                    shared.emit(ReconnectEvent::GaveUp {
                        attempts: failures,
                        last_error: e,
                    });
                    return;
                }
                let delay = backoff_delay(&config, failures);
                warn!(%url, attempt = failures, ?delay, error = %e, "reconnecting client: connect failed, retrying");
                shared.emit(ReconnectEvent::AttemptFailed {
                    attempt: failures,
                    error: e,
                    retry_in: delay,
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let config = ClientConfig {
            retry_delay: Duration::from_millis(100),
            retry_backoff: 2.0,
            max_retry_delay: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let d: Vec<u128> = (1..=5)
            .map(|n| backoff_delay(&config, n).as_millis())
            .collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        assert_eq!(backoff_delay(&config, u32::MAX), Duration::from_millis(500));
    }
}
