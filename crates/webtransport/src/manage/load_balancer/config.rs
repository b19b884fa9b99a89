//! The balancer's public types: its settings and hooks, the strategies, its errors and its
//! numbers.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

#[cfg(doc)]
use super::{connect_probe, LoadBalancer};
use crate::client::Client;
use crate::config::ClientConfig;
use crate::connection::Connection;
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

/// The default connection factory: [`Client::open_connection`] through one [`Client`]
/// per factory (made again if the config it is given changes), so that reconnecting to a
/// target resumes its TLS session and every connection shares one UDP endpoint.
pub fn default_connection_factory() -> ConnectionFactory {
    let shared: Arc<Mutex<Option<Client>>> = Arc::default();
    Arc::new(move |config, host, port, path| {
        let client = {
            let mut slot = shared.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(c) if *c.config() == config => Ok(c.clone()),
                _ => Client::new(config).inspect(|c| *slot = Some(c.clone())),
            }
        };
        Box::pin(async move { client?.open_connection(&host, port, &path).await })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
