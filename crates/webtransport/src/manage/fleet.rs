//! [`ClientFleet`]: many [`Client`]s used together — pywebtransport's `ClientFleet`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};

use crate::client::stats::ClientStats;
use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::ConnectError;
use crate::session::Session;

/// Why a fleet could not be made or used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A fleet needs at least one client.
    #[error("a client fleet needs at least one client")]
    Empty,
    /// [`ClientFleet::close_all`] was called.
    #[error("the client fleet is closed")]
    Closed,
    /// The shared configuration is invalid.
    #[error(transparent)]
    Config(ConnectError),
}

/// Several [`Client`]s: connect them all to one URL at once, hand them out in turn, close
/// everything they opened together.
///
/// The sessions [`connect_all`](Self::connect_all) opens are also kept by the fleet until
/// [`close_all`](Self::close_all), so dropping the returned handles does not close them.
#[derive(Debug)]
pub struct ClientFleet {
    clients: Vec<Client>,
    next: AtomicUsize,
    sessions: Mutex<Vec<Session>>,
    closed: AtomicBool,
}

impl ClientFleet {
    /// A fleet of these clients.
    pub fn new(clients: Vec<Client>) -> Result<ClientFleet, FleetError> {
        if clients.is_empty() {
            return Err(FleetError::Empty);
        }
        Ok(ClientFleet {
            clients,
            next: AtomicUsize::new(0),
            sessions: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// A fleet of `size` clients with the same configuration (each with its own
    /// counters).
    pub fn with_config(config: ClientConfig, size: usize) -> Result<ClientFleet, FleetError> {
        let clients = (0..size)
            .map(|_| Client::new(config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(FleetError::Config)?;
        Self::new(clients)
    }

    /// How many clients the fleet has.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The clients, in order.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The next client in turn (round robin).
    pub fn get_client(&self) -> Result<Client, FleetError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(FleetError::Closed);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        Ok(self.clients[i].clone())
    }

    /// Connects every client to `url` concurrently; one result per client, in client
    /// order. The fleet keeps the sessions that opened (see the type docs).
    ///
    /// # Cancel safety
    /// Not cancel safe: connects under way are abandoned and sessions already open are
    /// neither returned nor kept (dropping them closes them).
    pub async fn connect_all(
        &self,
        url: &str,
    ) -> Result<Vec<Result<Session, ConnectError>>, FleetError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(FleetError::Closed);
        }
        let results =
            futures_util::future::join_all(self.clients.iter().map(|c| c.connect(url))).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            warn!(%url, failed, of = results.len(), "fleet: some clients failed to connect");
        }
        let mut kept = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            // `close_all` ran while these connected: they are not the fleet's to keep.
            for s in results.iter().filter_map(|r| r.as_ref().ok()) {
                let _ = s.close(0, "");
            }
            return Err(FleetError::Closed);
        }
        kept.retain(|s| !s.is_closed());
        kept.extend(results.iter().filter_map(|r| r.as_ref().ok().cloned()));
        Ok(results)
    }

    /// Sessions opened by `connect_all` that are still open.
    pub fn open_sessions(&self) -> usize {
        let mut kept = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|s| !s.is_closed());
        kept.len()
    }

    /// The counters of all clients together.
    pub fn stats(&self) -> ClientStats {
        let mut all = self.clients.iter().map(Client::stats);
        let first = all.next().expect("a fleet has at least one client");
        all.fold(first, |acc, s| acc.combine(&s))
    }

    /// Closes every session `connect_all` opened (code 0), waits up to 1 s for each to
    /// end, and closes the fleet: later calls fail.
    ///
    /// # Cancel safety
    /// Cancel safe: every session is closed before the first await.
    pub async fn close_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let sessions: Vec<Session> =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|e| e.into_inner()));
        info!(count = sessions.len(), "fleet: closing sessions");
        for s in &sessions {
            let _ = s.close(0, "");
        }
        futures_util::future::join_all(
            sessions
                .iter()
                .map(|s| tokio::time::timeout(Duration::from_secs(1), s.closed())),
        )
        .await;
    }
}
