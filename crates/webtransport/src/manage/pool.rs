//! [`Pool`]: reusable connections or sessions with a maximum size, idle expiry and a
//! health check on checkout — pywebtransport's `ConnectionPool` and `SessionPool`.
//!
//! ```text
//! acquire ── wait for one of max_size slots ──▶ newest idle object that is neither expired
//!                                               nor unhealthy (others are closed)
//!                                               else a new one from the factory
//! drop(Pooled) ── healthy and pool open ──▶ back to idle, else closed
//! ```
//!
//! `max_size` bounds the objects checked out plus those being created; idle objects do not
//! hold a slot, and at most `max_size` of them are kept. Expired idle objects are closed
//! whenever the pool is used (acquire, return) and by [`Pool::evict_expired`]; there is no
//! timer task.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use webtransport_proto::Code;

use crate::client::{Client, WebTransportUrl};
use crate::config::ClientConfig;
use crate::connection::{Connection, ConnectionState};
use crate::error::ConnectError;
use crate::session::Session;

/// Something a [`Pool`] can hold.
pub trait Poolable: Send + Sync + 'static {
    /// Whether it can still be used; checked on checkout and on return.
    fn is_healthy(&self) -> bool;
    /// Closes it (the pool drops it afterwards).
    fn close(&self);
}

impl Poolable for Connection {
    /// Connected (not draining after GOAWAY, not closing or closed).
    fn is_healthy(&self) -> bool {
        self.state() == ConnectionState::Connected
    }

    /// Closes gracefully in the background (at once without a runtime).
    fn close(&self) {
        if super::have_runtime() {
            let conn = self.clone();
            tokio::spawn(async move { conn.close(0, "pool closing connection").await });
        } else {
            self.abort(Code::H3_NO_ERROR, "pool closing connection");
        }
    }
}

impl Poolable for Session {
    /// Open, not asked to drain, on a connection that is connected.
    fn is_healthy(&self) -> bool {
        !self.is_closed()
            && !self.is_draining()
            && self.connection().state() == ConnectionState::Connected
    }

    fn close(&self) {
        let _ = Session::close(self, 0, "");
    }
}

/// Makes a new pooled object.
pub type PoolFactory<T> =
    Arc<dyn Fn() -> BoxFuture<'static, Result<T, ConnectError>> + Send + Sync>;

/// Settings of a [`Pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Objects checked out (or being created) at most; `acquire` waits beyond. Must be at
    /// least 1. Default 10.
    pub max_size: usize,
    /// An idle object unused for longer is closed instead of handed out; `None` keeps
    /// them. Default 60 s.
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 10,
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Why a pool could not hand out an object.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// [`Pool::close`] was called.
    #[error("the pool is closed")]
    Closed,
    /// `max_size` is 0.
    #[error("a pool's max_size must be at least 1")]
    ZeroSize,
    /// The factory failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Counters of a [`Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// The configured maximum.
    pub max_size: usize,
    /// Objects waiting in the pool.
    pub idle: usize,
    /// Objects checked out or being created.
    pub in_use: usize,
    /// Objects the factory made.
    pub created: u64,
    /// Checkouts served from the idle list.
    pub reused: u64,
    /// Idle objects closed because they idled past `idle_timeout`.
    pub expired: u64,
    /// Objects closed because they failed the health check (on checkout or return).
    pub unhealthy: u64,
}

struct Idle<T> {
    value: T,
    since: Instant,
}

struct PoolInner<T> {
    factory: PoolFactory<T>,
    config: PoolConfig,
    idle: Mutex<VecDeque<Idle<T>>>,
    slots: Arc<Semaphore>,
    closed: AtomicBool,
    created: AtomicU64,
    reused: AtomicU64,
    expired: AtomicU64,
    unhealthy: AtomicU64,
}

impl<T: Poolable> PoolInner<T> {
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle<T>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes idle objects past the idle timeout; returns how many.
    fn evict_expired(&self, idle: &mut VecDeque<Idle<T>>, now: Instant) -> usize {
        let Some(limit) = self.config.idle_timeout else {
            return 0;
        };
        let before = idle.len();
        idle.retain(|i| {
            let keep = now.saturating_duration_since(i.since) <= limit;
            if !keep {
                i.value.close();
            }
            keep
        });
        let n = before - idle.len();
        self.expired.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn put_back(&self, value: T) {
        if self.closed.load(Ordering::SeqCst) {
            value.close();
            return;
        }
        if !value.is_healthy() {
            self.unhealthy.fetch_add(1, Ordering::Relaxed);
            value.close();
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        self.evict_expired(&mut idle, now);
        idle.push_back(Idle { value, since: now });
        while idle.len() > self.config.max_size {
            if let Some(old) = idle.pop_front() {
                old.value.close();
            }
        }
    }
}

/// A pool of connections or sessions (see the [module docs](self)). Cheap to clone;
/// clones share the pool.
pub struct Pool<T: Poolable> {
    inner: Arc<PoolInner<T>>,
}

impl<T: Poolable> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Poolable> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A pool of [`Connection`]s to one target.
pub type ConnectionPool = Pool<Connection>;
/// A pool of [`Session`]s to one URL.
pub type SessionPool = Pool<Session>;

impl<T: Poolable> Pool<T> {
    /// A pool that makes objects with `factory`.
    pub fn new(config: PoolConfig, factory: PoolFactory<T>) -> Result<Pool<T>, PoolError> {
        if config.max_size == 0 {
            return Err(PoolError::ZeroSize);
        }
        Ok(Pool {
            inner: Arc::new(PoolInner {
                factory,
                slots: Arc::new(Semaphore::new(config.max_size)),
                config,
                idle: Mutex::new(VecDeque::new()),
                closed: AtomicBool::new(false),
                created: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                expired: AtomicU64::new(0),
                unhealthy: AtomicU64::new(0),
            }),
        })
    }

    /// An object: the most recently returned idle one that is not expired and passes the
    /// health check, or a new one. Waits while `max_size` objects are checked out. The
    /// object goes back to the pool when the [`Pooled`] guard is dropped.
    ///
    /// # Cancel safety
    /// Cancel safe: while waiting for a slot nothing is taken; an object being created
    /// is dropped (closed) and its slot freed.
    pub async fn acquire(&self) -> Result<Pooled<T>, PoolError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(PoolError::Closed);
        }
        let permit = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Closed)?;
        let reused = {
            let mut idle = self.inner.idle();
            self.inner.evict_expired(&mut idle, Instant::now());
            let mut found = None;
            while let Some(i) = idle.pop_back() {
                if i.value.is_healthy() {
                    found = Some(i.value);
                    break;
                }
                self.inner.unhealthy.fetch_add(1, Ordering::Relaxed);
                i.value.close();
            }
            found
        };
        let value = match reused {
            Some(v) => {
                self.inner.reused.fetch_add(1, Ordering::Relaxed);
                v
            }
            None => {
                let v = (self.inner.factory)().await?;
                self.inner.created.fetch_add(1, Ordering::Relaxed);
                v
            }
        };
        Ok(Pooled {
            value: Some(value),
            pool: self.inner.clone(),
            _slot: permit,
        })
    }

    /// Closes idle objects past the idle timeout now; returns how many.
    pub fn evict_expired(&self) -> usize {
        let mut idle = self.inner.idle();
        self.inner.evict_expired(&mut idle, Instant::now())
    }

    /// Closes every idle object and the pool: `acquire` fails from now on, and objects
    /// checked out are closed when returned.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.slots.close();
        for i in self.inner.idle().drain(..) {
            i.value.close();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let max = self.inner.config.max_size;
        PoolStats {
            max_size: max,
            idle: self.inner.idle().len(),
            in_use: if self.is_closed() {
                0
            } else {
                max.saturating_sub(self.inner.slots.available_permits())
            },
            created: self.inner.created.load(Ordering::Relaxed),
            reused: self.inner.reused.load(Ordering::Relaxed),
            expired: self.inner.expired.load(Ordering::Relaxed),
            unhealthy: self.inner.unhealthy.load(Ordering::Relaxed),
        }
    }
}

impl Pool<Connection> {
    /// A pool of connections to `host:port`, each opened with a session on `path`
    /// ([`Client::open_connection`], one client for the pool, so that new connections
    /// resume the TLS session of earlier ones).
    pub fn for_target(
        config: ClientConfig,
        host: &str,
        port: u16,
        path: &str,
        pool: PoolConfig,
    ) -> Result<ConnectionPool, PoolError> {
        let client = Client::new(config)?;
        let (host, path) = (host.to_owned(), path.to_owned());
        Pool::new(
            pool,
            Arc::new(move || {
                let (client, host, path) = (client.clone(), host.clone(), path.clone());
                Box::pin(async move { client.open_connection(&host, port, &path).await })
            }),
        )
    }
}

impl Pool<Session> {
    /// A pool of sessions to `url`, each opened by `client` (and counted in its
    /// [`stats`](Client::stats)).
    pub fn for_url(client: Client, url: &str, pool: PoolConfig) -> Result<SessionPool, PoolError> {
        url.parse::<WebTransportUrl>()?;
        let url = url.to_owned();
        Pool::new(
            pool,
            Arc::new(move || {
                let (client, url) = (client.clone(), url.clone());
                Box::pin(async move { client.connect(&url).await })
            }),
        )
    }
}

/// An object checked out of a [`Pool`]; dereferences to it. Dropping it returns it to the
/// pool if it is healthy and the pool is open, and closes it otherwise.
pub struct Pooled<T: Poolable> {
    value: Option<T>,
    pool: Arc<PoolInner<T>>,
    _slot: OwnedSemaphorePermit,
}

impl<T: Poolable> Pooled<T> {
    /// Takes the object out of the pool for good: it is not returned, and its slot is
    /// freed.
    pub fn detach(mut self) -> T {
        self.value
            .take()
            .expect("a Pooled holds its value until dropped")
    }

    /// Closes the object instead of returning it.
    pub fn discard(mut self) {
        if let Some(v) = self.value.take() {
            v.close();
        }
    }
}

impl<T: Poolable> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
            .as_ref()
            .expect("a Pooled holds its value until dropped")
    }
}

impl<T: Poolable + fmt::Debug> fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pooled").field(&self.value).finish()
    }
}

impl<T: Poolable> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            self.pool.put_back(v);
        }
    }
}
