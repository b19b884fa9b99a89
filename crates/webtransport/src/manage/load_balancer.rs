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

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use webtransport_proto::Code;

use super::TaskCounter;
use crate::config::ClientConfig;
use crate::connection::{Connection, ConnectionState};
use crate::error::ConnectError;

/// Makes a connection: `(config, host, port, path)` → a [`Connection`] with its session on
/// `path` open. The default is [`default_connection_factory`].
pub type ConnectionFactory = Arc<
    dyn Fn(
            ClientConfig,
            String,
            u16,
            String,
        ) -> BoxFuture<'static, Result<Connection, ConnectError>>
        + Send
        + Sync,
>;

/// Says whether a failed target is back: `(host, port, timeout)` → healthy. The balancer
/// also stops waiting for it after the timeout and counts that as unhealthy.
pub type HealthChecker =
    Arc<dyn Fn(String, u16, Duration) -> BoxFuture<'static, bool> + Send + Sync>;

/// The default connection factory: [`Connection::connect`].
pub fn default_connection_factory() -> ConnectionFactory {
    Arc::new(|config, host, port, path| {
        Box::pin(async move { Connection::connect(&config, &host, port, &path).await })
    })
}

/// A health check that opens a real connection and a session on `path` with `config`
/// (QUIC handshake, HTTP/3 SETTINGS, extended CONNECT answered with 2xx) within the
/// check's timeout. The target is healthy once the session is up; the connection is then
/// closed gracefully in the background, and the check does not wait for the peer to
/// acknowledge that close.
///
/// Without an explicit [`LoadBalancerConfig::health_checker`], the balancer uses this
/// probe with the config and path of the latest [`LoadBalancer::get_connection`] call — a
/// target is only ever marked failed by such a call, so the probe checks exactly what
/// failed.
pub fn connect_probe(config: ClientConfig, path: String) -> HealthChecker {
    Arc::new(move |host, port, timeout| {
        let config = config.clone();
        let path = path.clone();
        Box::pin(probe(config, host, port, path, timeout))
    })
}

async fn probe(
    mut config: ClientConfig,
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
) -> bool {
    if timeout.is_zero() {
        return false;
    }
    config.connect_timeout = timeout;
    match tokio::time::timeout(timeout, Connection::connect(&config, &host, port, &path)).await {
        Ok(Ok(conn)) => {
            // How long the peer takes to acknowledge the close says nothing about whether
            // it serves sessions, and waiting for it here would count against the check's
            // timeout. The close is bounded by the config's `close_timeout`.
            tokio::spawn(async move { conn.close(0, "health check").await });
            true
        }
        Ok(Err(e)) => {
            debug!(%host, port, error = %e, "health check failed");
            false
        }
        Err(_) => {
            debug!(%host, port, ?timeout, "health check timed out");
            false
        }
    }
}

/// How [`LoadBalancer::get_connection`] picks a target among those not marked failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each call takes the next target in list order.
    #[default]
    RoundRobin,
    /// Calls are spread in proportion to the targets' weights (default 1.0, changed with
    /// [`LoadBalancer::update_target_weight`]). The seed draws at random; this is smooth
    /// weighted round robin, which is deterministic and keeps every window of
    /// `sum(weights)` picks in exact proportion (for integer weights). When every
    /// available weight is 0 it falls back to round robin.
    Weighted,
    /// The target whose last connect was fastest (time from the factory call to the
    /// session being ready). A target not measured yet counts as 0, so each one is tried
    /// once before the fastest wins; a target put back by a health check is measured
    /// afresh.
    LeastLatency,
}

impl Strategy {
    /// The seed's name: `round_robin`, `weighted` or `least_latency`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least_latency",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = LoadBalancerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(Strategy::RoundRobin),
            "weighted" => Ok(Strategy::Weighted),
            "least_latency" => Ok(Strategy::LeastLatency),
            other => Err(LoadBalancerError::UnknownStrategy(other.to_owned())),
        }
    }
}

/// Why the balancer could not hand out a connection or do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadBalancerError {
    /// The target list was empty.
    #[error("a load balancer needs at least one target")]
    NoTargets,
    /// Every target is marked failed (now or by this call). Failed targets come back when
    /// a health check passes.
    #[error("no targets available: all {total} targets have failed{}", last_error_suffix(.last_error))]
    NoTargetsAvailable {
        /// How many targets are configured.
        total: usize,
        /// The error of the last connect this call made or waited for, if any.
        last_error: Option<ConnectError>,
    },
    /// The connect failed for a reason that is not the target's
    /// ([`ConnectError::is_target_fault`] is false: invalid configuration, TLS setup, no
    /// local socket); no target was marked failed.
    #[error(transparent)]
    Connect(ConnectError),
    /// No target with this host and port.
    #[error("unknown target {host}:{port}")]
    UnknownTarget {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// The strategy name is not one of `round_robin`, `weighted`, `least_latency`.
    #[error("unknown load balancing strategy {0:?}")]
    UnknownStrategy(String),
    /// [`LoadBalancer::shutdown`] was called.
    #[error("the load balancer is shut down")]
    ShutDown,
    /// [`LoadBalancer::new`] was called outside a tokio runtime.
    #[error("a load balancer must be created inside a tokio runtime")]
    NoRuntime,
}

fn last_error_suffix(e: &Option<ConnectError>) -> String {
    match e {
        Some(e) => format!("; last error: {e}"),
        None => String::new(),
    }
}

/// Settings of a [`LoadBalancer`].
#[derive(Clone)]
pub struct LoadBalancerConfig {
    /// How often failed targets are checked. Default 30 s.
    pub health_check_interval: Duration,
    /// How long one check may take. Default 5 s.
    pub health_check_timeout: Duration,
    /// Keep one connection per target and hand it out again while it is connected (see
    /// the module docs). Default `true`.
    pub reuse_connections: bool,
    /// Makes connections. `None`: [`default_connection_factory`].
    pub connection_factory: Option<ConnectionFactory>,
    /// Checks failed targets. `None`: [`connect_probe`] with the config and path of the
    /// latest `get_connection` call.
    pub health_checker: Option<HealthChecker>,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        LoadBalancerConfig {
            health_check_interval: Duration::from_secs(30),
            health_check_timeout: Duration::from_secs(5),
            reuse_connections: true,
            connection_factory: None,
            health_checker: None,
        }
    }
}

impl fmt::Debug for LoadBalancerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let custom = |set: bool| if set { "custom" } else { "default" };
        f.debug_struct("LoadBalancerConfig")
            .field("health_check_interval", &self.health_check_interval)
            .field("health_check_timeout", &self.health_check_timeout)
            .field("reuse_connections", &self.reuse_connections)
            .field(
                "connection_factory",
                &custom(self.connection_factory.is_some()),
            )
            .field("health_checker", &custom(self.health_checker.is_some()))
            .finish()
    }
}

/// Balancer-wide numbers ([`LoadBalancer::get_load_balancer_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadBalancerStats {
    /// Targets configured.
    pub total_targets: usize,
    /// Targets marked failed.
    pub failed_targets: usize,
    /// Cached connections that are connected.
    pub active_connections: usize,
    /// Targets not marked failed.
    pub available_targets: usize,
}

/// One target's numbers ([`LoadBalancer::get_target_stats`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStats {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight for [`Strategy::Weighted`].
    pub weight: f64,
    /// Duration of the last successful connect; `None` until measured (and again after a
    /// health check put the target back).
    pub latency: Option<Duration>,
    /// Marked failed: skipped until a health check passes.
    pub failed: bool,
    /// Has a cached connection that is connected.
    pub connected: bool,
    /// Connects started to this target (joined calls not counted).
    pub connect_attempts: u64,
    /// Connects to this target that failed.
    pub connect_failures: u64,
}

type ConnectResult = Option<Result<Connection, ConnectError>>;

#[derive(Debug)]
struct Pending {
    id: u64,
    rx: watch::Receiver<ConnectResult>,
}

#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    weight: f64,
    /// Running weight of smooth weighted round robin.
    current: f64,
    latency: Option<Duration>,
    failed: bool,
    conn: Option<Connection>,
    pending: Option<Pending>,
    connect_attempts: u64,
    connect_failures: u64,
}

impl Target {
    /// A target with weight 1, never connected.
    fn new(host: String, port: u16) -> Self {
        Target {
            host,
            port,
            weight: 1.0,
            current: 0.0,
            latency: None,
            failed: false,
            conn: None,
            pending: None,
            connect_attempts: 0,
            connect_failures: 0,
        }
    }

    fn live_conn(&self) -> Option<&Connection> {
        self.conn
            .as_ref()
            .filter(|c| c.state() == ConnectionState::Connected)
    }
}

#[derive(Debug)]
struct State {
    targets: Vec<Target>,
    rr_next: usize,
    next_attempt: u64,
    /// Config and path of the latest `get_connection`, for the default health check.
    probe: Option<(ClientConfig, String)>,
    shut_down: bool,
}

impl State {
    /// Picks a target among those not failed and not in `skip`, advancing the strategy.
    fn pick(&mut self, strategy: Strategy, skip: &HashSet<usize>) -> Option<usize> {
        let avail: Vec<usize> = (0..self.targets.len())
            .filter(|i| !skip.contains(i) && self.targets.get(*i).is_some_and(|t| !t.failed))
            .collect();
        if avail.is_empty() {
            return None;
        }
        match strategy {
            Strategy::RoundRobin => Some(self.round_robin(&avail)),
            Strategy::Weighted => {
                let total: f64 = avail.iter().map(|&i| self.targets[i].weight).sum();
                if total <= 0.0 {
                    return Some(self.round_robin(&avail));
                }
                // Smooth weighted round robin: every candidate gains its weight, the
                // richest is picked and pays the total back.
                let mut best = avail[0];
                for &i in &avail {
                    self.targets[i].current += self.targets[i].weight;
                    if self.targets[i].current > self.targets[best].current {
                        best = i;
                    }
                }
                self.targets[best].current -= total;
                Some(best)
            }
            Strategy::LeastLatency => avail
                .iter()
                .copied()
                .min_by_key(|&i| self.targets[i].latency.unwrap_or(Duration::ZERO)),
        }
    }

    fn round_robin(&mut self, avail: &[usize]) -> usize {
        let i = avail[self.rr_next % avail.len()];
        self.rr_next = self.rr_next.wrapping_add(1);
        i
    }
}

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
            state: Mutex::new(State {
                targets,
                rr_next: 0,
                next_attempt: 0,
                probe: None,
                shut_down: false,
            }),
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

/// Every `interval`, checks the failed targets concurrently and puts back those that pass.
async fn health_loop(inner: Weak<Inner>, interval: Duration, timeout: Duration) {
    let interval = interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (failed, checker) = {
            let st = inner.lock();
            if st.shut_down {
                return;
            }
            let failed: Vec<(usize, String, u16)> = st
                .targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.failed)
                .map(|(i, t)| (i, t.host.clone(), t.port))
                .collect();
            let checker = inner.checker.clone().or_else(|| {
                st.probe
                    .as_ref()
                    .map(|(config, path)| connect_probe(config.clone(), path.clone()))
            });
            (failed, checker)
        };
        let Some(checker) = checker else { continue };
        if failed.is_empty() {
            continue;
        }
        let checks = failed.into_iter().map(|(idx, host, port)| {
            let check = checker(host, port, timeout);
            async move {
                let ok = tokio::time::timeout(timeout, check).await.unwrap_or(false);
                (idx, ok)
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let mut st = inner.lock();
        for (idx, ok) in results {
            if let Some(t) = st.targets.get_mut(idx).filter(|t| ok && t.failed) {
                t.failed = false;
                t.latency = None;
                t.current = 0.0;
                info!(host = %t.host, port = t.port, "load balancer: target is back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> State {
        State {
            targets: (0..n).map(|i| Target::new("h".into(), i as u16)).collect(),
            rr_next: 0,
            next_attempt: 0,
            probe: None,
            shut_down: false,
        }
    }

    fn counts(st: &mut State, strategy: Strategy, n: usize) -> Vec<usize> {
        let mut c = vec![0; st.targets.len()];
        for _ in 0..n {
            c[st.pick(strategy, &HashSet::new()).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_skips_failed_targets() {
        let mut st = state(3);
        assert_eq!(counts(&mut st, Strategy::RoundRobin, 300), [100, 100, 100]);
        st.targets[1].failed = true;
        assert_eq!(counts(&mut st, Strategy::RoundRobin, 100), [50, 0, 50]);
        let skip: HashSet<usize> = [0, 2].into();
        assert_eq!(st.pick(Strategy::RoundRobin, &skip), None);
    }

    #[test]
    fn smooth_weighted_is_exact_per_cycle() {
        let mut st = state(3);
        for (t, w) in st.targets.iter_mut().zip([5.0, 3.0, 2.0]) {
            t.weight = w;
        }
        assert_eq!(counts(&mut st, Strategy::Weighted, 10), [5, 3, 2]);
        assert_eq!(counts(&mut st, Strategy::Weighted, 1000), [500, 300, 200]);
        // All weights 0: round robin.
        for t in &mut st.targets {
            t.weight = 0.0;
        }
        assert_eq!(counts(&mut st, Strategy::Weighted, 30), [10, 10, 10]);
    }

    #[test]
    fn least_latency_explores_then_prefers_the_fastest() {
        let mut st = state(3);
        st.targets[0].latency = Some(Duration::from_millis(50));
        assert_eq!(st.pick(Strategy::LeastLatency, &HashSet::new()), Some(1));
        st.targets[1].latency = Some(Duration::from_millis(40));
        st.targets[2].latency = Some(Duration::from_millis(3));
        assert_eq!(st.pick(Strategy::LeastLatency, &HashSet::new()), Some(2));
        st.targets[2].failed = true;
        assert_eq!(st.pick(Strategy::LeastLatency, &HashSet::new()), Some(1));
    }

    #[test]
    fn strategy_names() {
        for s in [
            Strategy::RoundRobin,
            Strategy::Weighted,
            Strategy::LeastLatency,
        ] {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        assert!(matches!(
            "random".parse::<Strategy>(),
            Err(LoadBalancerError::UnknownStrategy(_))
        ));
    }
}
