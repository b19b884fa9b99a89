//! Health checks: the default probe, and the loop that checks failed targets and puts back
//! those that pass.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::{HealthChecker, Inner};
#[cfg(doc)]
use super::{LoadBalancer, LoadBalancerConfig};
use crate::config::ClientConfig;
use crate::connection::Connection;

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

/// Every `interval`, checks the failed targets concurrently and puts back those that pass.
pub(super) async fn health_loop(inner: Weak<Inner>, interval: Duration, timeout: Duration) {
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
