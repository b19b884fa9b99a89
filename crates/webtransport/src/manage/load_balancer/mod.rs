//! [`LoadBalancer`]: spreads client connections over a list of `(host, port)` targets and
//! brings failed targets back when a health check passes — pywebtransport's
//! `ConnectionLoadBalancer`.
//!
//! # How a call picks and connects
//!
//! ```text
//! get_connection(config, path, strategy)
//!   loop:
//!     pick a target among those not failed and not yet tried in this call   (none → NoTargetsAvailable)
//!     live cached connection to it?        → return it            (reuse_connections)
//!     a connect to it already in flight?   → wait for that one    (coalescing)
//!     else connect (factory), at most the config's connect_timeout
//!                                          → ok: cache, return
//!                                          → the target's fault (or past the timeout):
//!                                            mark the target failed, try the next
//!                                          → not the target's fault: return the error
//! ```
//!
//! # Reuse semantics
//!
//! Every call runs the strategy, so the strategy decides which *target* serves each call
//! whether or not connections are reused:
//!
//! * With [`LoadBalancerConfig::reuse_connections`] on (the default, as in the seed), the
//!   balancer keeps at most one connection per target and returns it while its state is
//!   [`ConnectionState::Connected`]; a connection that is closing, closed or draining
//!   (the server sent GOAWAY) is forgotten and replaced by a new connect. Callers share
//!   the returned [`Connection`]; it stays open until [`LoadBalancer::close_all_connections`],
//!   [`LoadBalancer::shutdown`], the peer, or the drop of the balancer and every clone.
//! * With it off, every call that does not join a connect already in flight makes a new
//!   connection and the balancer keeps none: the caller owns it (dropping it closes it).
//!   Calls that arrive while a connect to the same target is in flight still share its
//!   result.
//!
//! # Health checks
//!
//! Only targets marked failed are checked. Every
//! [`health_check_interval`](LoadBalancerConfig::health_check_interval) the task checks
//! them all concurrently, each for at most
//! [`health_check_timeout`](LoadBalancerConfig::health_check_timeout), and waits for the
//! round to finish before the next tick; so a target that comes back is in rotation again
//! within one interval plus one timeout. A target put back has its latency forgotten, so
//! [`Strategy::LeastLatency`] measures it again.
//!
//! # Time limit
//!
//! Each connect the call starts has the whole `connect_timeout` of the [`ClientConfig`] it
//! is given: the factory gets that config unchanged, and the balancer also stops waiting
//! for the factory when the timeout has passed. A target is marked failed only by its own
//! connect: one that fails with an error that is the target's
//! ([`ConnectError::is_target_fault`]), or one that runs past its `connect_timeout`
//! ([`ConnectError::Timeout`]). A healthy target that is merely slow is never marked failed
//! for the time other targets took.
//!
//! The call as a whole has no limit of its own: trying `n` targets that do not answer takes
//! up to `n` connect timeouts. A caller who wants a limit on the whole call wraps the
//! future in [`tokio::time::timeout`]. When that limit runs out the future is dropped, and
//! dropping it marks no target failed: the connect in flight is abandoned, and calls that
//! had joined it start their own.
//!
//! A call that finds a connect to its target already in flight waits for that connect,
//! which is bounded by the `connect_timeout` of the call that started it, and ignores its
//! own `connect_timeout`.

mod config;
mod health;
mod pick;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use webtransport_proto::Code;

use super::TaskCounter;
use crate::config::ClientConfig;
use crate::connection::Connection;
#[cfg(doc)]
use crate::connection::ConnectionState;
use crate::error::ConnectError;
use health::health_loop;
use pick::{ConnectResult, Pending, State, Target};

pub use config::{
    default_connection_factory, ConnectionFactory, HealthChecker, LoadBalancerConfig,
    LoadBalancerError, LoadBalancerStats, Strategy, TargetStats,
};
pub use health::connect_probe;

struct Inner {
    state: Mutex<State>,
    factory: ConnectionFactory,
    checker: Option<HealthChecker>,
    reuse: bool,
    tasks: TaskCounter,
    health_task: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .health_task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Clears a target's in-flight marker if the connect that set it is abandoned (its
/// caller's future dropped), so that calls waiting on it start their own.
struct PendingGuard<'a> {
    inner: &'a Inner,
    idx: usize,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.lock();
            if let Some(t) = st.targets.get_mut(self.idx) {
                if t.pending.as_ref().is_some_and(|p| p.id == self.id) {
                    t.pending = None;
                }
            }
        }
    }
}

enum Step {
    Join(usize, watch::Receiver<ConnectResult>),
    Connect {
        idx: usize,
        id: u64,
        tx: watch::Sender<ConnectResult>,
        host: String,
        port: u16,
    },
}

/// Spreads client connections over `(host, port)` targets with a pluggable connection
/// factory and health check (pywebtransport's `ConnectionLoadBalancer`). Cheap to clone;
/// clones share everything.
///
/// A background task checks failed targets every
/// [`health_check_interval`](LoadBalancerConfig::health_check_interval) and puts back
/// those that pass. It ends on [`shutdown`](LoadBalancer::shutdown) or when the last clone
/// is dropped.
///
/// See the [module docs](self) for how a target is picked, when connections are reused,
/// and the time limit of a call.
#[derive(Clone)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
}

impl fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("stats", &self.get_load_balancer_stats())
            .field("reuse_connections", &self.inner.reuse)
            .finish()
    }
}

impl LoadBalancer {
    /// A balancer over `targets` (duplicates dropped, order kept), all weights 1.0. Starts
    /// the health-check task, so it must be called inside a tokio runtime.
    pub fn new(
        targets: impl IntoIterator<Item = (String, u16)>,
        config: LoadBalancerConfig,
    ) -> Result<LoadBalancer, LoadBalancerError> {
        let mut seen = HashSet::new();
        let targets: Vec<Target> = targets
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .map(|(host, port)| Target::new(host, port))
            .collect();
        if targets.is_empty() {
            return Err(LoadBalancerError::NoTargets);
        }
        if !super::have_runtime() {
            return Err(LoadBalancerError::NoRuntime);
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(targets)),
            factory: config
                .connection_factory
                .clone()
                .unwrap_or_else(default_connection_factory),
            checker: config.health_checker.clone(),
            reuse: config.reuse_connections,
            tasks: TaskCounter::default(),
            health_task: Mutex::new(None),
        });
        let task = inner.tasks.spawn(health_loop(
            Arc::downgrade(&inner),
            config.health_check_interval,
            config.health_check_timeout,
        ));
        *inner.health_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(LoadBalancer { inner })
    }

    /// The targets, in order.
    pub fn targets(&self) -> Vec<(String, u16)> {
        self.inner
            .lock()
            .targets
            .iter()
            .map(|t| (t.host.clone(), t.port))
            .collect()
    }

    /// A connection to a target picked by `strategy`, opened with `config` and a session
    /// on `path`: the target's cached connection when it is live, the result of a connect
    /// already in flight to it, or a new connect.
    ///
    /// A new connect gets `config` unchanged and at most `config.connect_timeout`. When it
    /// fails with an error that is the target's ([`ConnectError::is_target_fault`]) or runs
    /// past that timeout, the target is marked failed and the call goes on with the next
    /// pick; when no target is left it returns [`LoadBalancerError::NoTargetsAvailable`]. An
    /// error that is not the target's ends the call with [`LoadBalancerError::Connect`] and
    /// marks nothing. A call that joins a connect already in flight waits for it (it is
    /// bounded by the timeout of the call that started it).
    ///
    /// The call has no overall limit: each target it tries may take its whole
    /// `connect_timeout`. Wrap it in [`tokio::time::timeout`] to bound the whole call; see
    /// the [module docs](self#time-limit).
    ///
    /// # Cancel safety
    /// Cancel safe in that dropping the future leaves the balancer consistent and marks no
    /// target failed: a connect it had started is abandoned (that connection is not made),
    /// and calls that were waiting for it start their own.
    pub async fn get_connection(
        &self,
        config: &ClientConfig,
        path: &str,
        strategy: Strategy,
    ) -> Result<Connection, LoadBalancerError> {
        let inner = &*self.inner;
        let mut tried: HashSet<usize> = HashSet::new();
        let mut last_error: Option<ConnectError> = None;
        {
            let mut st = inner.lock();
            if st.shut_down {
                return Err(LoadBalancerError::ShutDown);
            }
            st.probe = Some((config.clone(), path.to_owned()));
        }
        loop {
            let step = {
                let mut st = inner.lock();
                if st.shut_down {
                    return Err(LoadBalancerError::ShutDown);
                }
                let Some(idx) = st.pick(strategy, &tried) else {
                    return Err(LoadBalancerError::NoTargetsAvailable {
                        total: st.targets.len(),
                        last_error,
                    });
                };
                let next_attempt = st.next_attempt;
                let t = &mut st.targets[idx];
                if let Some(c) = t.live_conn() {
                    return Ok(c.clone());
                }
                t.conn = None;
                if let Some(p) = &t.pending {
                    Step::Join(idx, p.rx.clone())
                } else {
                    let (tx, rx) = watch::channel(None);
                    t.pending = Some(Pending {
                        id: next_attempt,
                        rx,
                    });
                    t.connect_attempts += 1;
                    let (host, port) = (t.host.clone(), t.port);
                    st.next_attempt += 1;
                    Step::Connect {
                        idx,
                        id: next_attempt,
                        tx,
                        host,
                        port,
                    }
                }
            };
            let (idx, result) = match step {
                Step::Join(idx, mut rx) => match rx.wait_for(Option::is_some).await {
                    // The connect was abandoned: pick again.
                    Err(_) => continue,
                    Ok(r) => match r.clone() {
                        Some(r) => (idx, r),
                        None => continue,
                    },
                },
                Step::Connect {
                    idx,
                    id,
                    tx,
                    host,
                    port,
                } => {
                    let mut guard = PendingGuard {
                        inner,
                        idx,
                        id,
                        armed: true,
                    };
                    let limit = config.connect_timeout;
                    debug!(%host, port, ?limit, "load balancer: connecting");
                    let started = Instant::now();
                    let fut = (inner.factory)(config.clone(), host.clone(), port, path.to_owned());
                    // The default factory keeps to the timeout itself; this also bounds a
                    // custom one that does not.
                    let r = match tokio::time::timeout(limit, fut).await {
                        Ok(r) => r,
                        Err(_) => Err(ConnectError::Timeout(limit)),
                    };
                    let latency = started.elapsed();
                    let shut_down = {
                        let mut st = inner.lock();
                        guard.armed = false;
                        let shut_down = st.shut_down;
                        if let Some(t) = st.targets.get_mut(idx) {
                            if t.pending.as_ref().is_some_and(|p| p.id == id) {
                                t.pending = None;
                            }
                            match &r {
                                Ok(c) if !shut_down => {
                                    t.latency = Some(latency);
                                    t.failed = false;
                                    if inner.reuse {
                                        t.conn = Some(c.clone());
                                    }
                                }
                                Ok(_) => {}
                                Err(e) if e.is_target_fault() => {
                                    t.failed = true;
                                    t.conn = None;
                                    t.connect_failures += 1;
                                }
                                Err(_) => {}
                            }
                        }
                        shut_down
                    };
                    if shut_down {
                        if let Ok(c) = &r {
                            c.abort(Code::H3_NO_ERROR, "load balancer shut down");
                        }
                        // Dropping `tx` unsent makes waiters pick again and see the shutdown.
                        return Err(LoadBalancerError::ShutDown);
                    }
                    match &r {
                        Ok(_) => info!(%host, port, ?latency, "load balancer: connected"),
                        Err(e) => warn!(%host, port, error = %e, "load balancer: connect failed"),
                    }
                    tx.send_replace(Some(r.clone()));
                    (idx, r)
                }
            };
            match result {
                Ok(c) => return Ok(c),
                Err(e) if !e.is_target_fault() => return Err(LoadBalancerError::Connect(e)),
                Err(e) => {
                    tried.insert(idx);
                    last_error = Some(e);
                }
            }
        }
    }

    /// Balancer-wide numbers: targets, failed, cached live connections, available.
    pub fn get_load_balancer_stats(&self) -> LoadBalancerStats {
        let st = self.inner.lock();
        let failed = st.targets.iter().filter(|t| t.failed).count();
        LoadBalancerStats {
            total_targets: st.targets.len(),
            failed_targets: failed,
            active_connections: st
                .targets
                .iter()
                .filter(|t| t.live_conn().is_some())
                .count(),
            available_targets: st.targets.len() - failed,
        }
    }

    /// Every target's numbers, in target order.
    pub fn get_target_stats(&self) -> Vec<TargetStats> {
        self.inner
            .lock()
            .targets
            .iter()
            .map(|t| TargetStats {
                host: t.host.clone(),
                port: t.port,
                weight: t.weight,
                latency: t.latency,
                failed: t.failed,
                connected: t.live_conn().is_some(),
                connect_attempts: t.connect_attempts,
                connect_failures: t.connect_failures,
            })
            .collect()
    }

    /// Sets the weight [`Strategy::Weighted`] uses for a target (negative and NaN become
    /// 0: never picked while another target has weight). The weighted rotation restarts
    /// so the new proportions hold from the next pick.
    pub fn update_target_weight(
        &self,
        host: &str,
        port: u16,
        weight: f64,
    ) -> Result<(), LoadBalancerError> {
        let mut st = self.inner.lock();
        let Some(i) = st
            .targets
            .iter()
            .position(|t| t.host == host && t.port == port)
        else {
            return Err(LoadBalancerError::UnknownTarget {
                host: host.to_owned(),
                port,
            });
        };
        st.targets[i].weight = if weight > 0.0 && weight.is_finite() {
            weight
        } else {
            0.0
        };
        for t in &mut st.targets {
            t.current = 0.0;
        }
        debug!(%host, port, weight, "load balancer: weight updated");
        Ok(())
    }

    /// Closes every cached connection (H3_NO_ERROR) and waits, up to 1 s each, for them
    /// to be closed. Targets keep their failed/healthy status; the next `get_connection`
    /// connects again.
    ///
    /// # Cancel safety
    /// Cancel safe: the connections are closed before the first await.
    pub async fn close_all_connections(&self) {
        let conns: Vec<Connection> = self
            .inner
            .lock()
            .targets
            .iter_mut()
            .filter_map(|t| t.conn.take())
            .collect();
        if conns.is_empty() {
            return;
        }
        info!(count = conns.len(), "load balancer: closing connections");
        futures_util::future::join_all(conns.iter().map(|c| {
            c.close_within(
                0,
                "load balancer closing connections",
                Duration::from_secs(1),
            )
        }))
        .await;
    }

    /// Stops the health-check task (and waits for it to end), closes every cached
    /// connection, and makes later `get_connection` calls fail with
    /// [`LoadBalancerError::ShutDown`]. A connect in flight in another call is closed
    /// when it completes.
    ///
    /// # Cancel safety
    /// Cancel safe: the balancer is marked shut down and the task aborted before the
    /// first await.
    pub async fn shutdown(&self) {
        self.inner.lock().shut_down = true;
        let task = self
            .inner
            .health_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.close_all_connections().await;
        info!("load balancer shut down");
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.lock().shut_down
    }

    /// Background tasks of this balancer still alive (the health-check loop: 1 while
    /// running, 0 after `shutdown`).
    pub fn background_tasks(&self) -> usize {
        self.inner.tasks.live()
    }
}
