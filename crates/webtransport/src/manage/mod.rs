//! Managing many connections and sessions: the client-side tools pywebtransport puts
//! around its connection and client classes.
//!
//! | pywebtransport 0.8.1 | here |
//! |---|---|
//! | `ConnectionLoadBalancer` | [`LoadBalancer`] |
//! | `ReconnectingClient` | [`ReconnectingClient`] |
//! | `ClientFleet` | [`ClientFleet`] |
//! | `ConnectionPool`, `SessionPool` | [`ConnectionPool`], [`SessionPool`] (a [`Pool`] with idle expiry and a health check on checkout) |
//! | `ClientStats`, `ClientDiagnostics` | [`ClientStats`], [`ClientDiagnostics`] from [`Client::stats`](crate::Client::stats) |
//!
//! Every type here that runs a background task counts its live tasks
//! (`background_tasks()`), so a caller (and the tests) can see that closing or shutting it
//! down left nothing running.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

pub mod fleet;
pub mod load_balancer;
pub mod pool;
pub mod reconnect;

pub use crate::client::stats::{ClientDiagnostics, ClientIssue, ClientStats};
pub use fleet::{ClientFleet, FleetError};
pub use load_balancer::{
    connect_probe, default_connection_factory, ConnectionFactory, HealthChecker, LoadBalancer,
    LoadBalancerConfig, LoadBalancerError, LoadBalancerStats, Strategy, TargetStats,
};
pub use pool::{
    ConnectionPool, Pool, PoolConfig, PoolError, PoolFactory, PoolStats, Poolable, Pooled,
    SessionPool,
};
pub use reconnect::{backoff_delay, ReconnectError, ReconnectEvent, ReconnectingClient};

/// Counts the live tasks one owner spawned. A task counts from `spawn` until its future
/// is dropped — when it returns, or when it is aborted — so a zero after an owner's
/// shutdown means none of its tasks can still run.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskCounter(Arc<AtomicUsize>);

impl TaskCounter {
    /// Spawns `fut` on the current runtime, counted. Panics outside a tokio runtime, like
    /// `tokio::spawn`; callers check for one first.
    pub(crate) fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.fetch_add(1, Ordering::SeqCst);
        let guard = TaskGuard(self.0.clone());
        tokio::spawn(async move {
            let _guard = guard;
            fut.await
        })
    }

    /// Tasks spawned through this counter whose future has not been dropped yet.
    pub(crate) fn live(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Decrements the counter when the task's future is dropped.
#[derive(Debug)]
struct TaskGuard(Arc<AtomicUsize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether there is a tokio runtime to spawn on.
pub(crate) fn have_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}
