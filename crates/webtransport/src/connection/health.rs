//! Health monitoring (pywebtransport's `monitor_health`): a probe the peer's QUIC stack
//! must answer, timed.
//!
//! quinn has no PING to send on demand, so the probe is a tiny unidirectional stream of a
//! reserved HTTP/3 stream type (RFC 9114 §6.2.3: the receiver ignores or stops it). The
//! probe is answered when the peer's QUIC stack acknowledges the stream's data or its
//! HTTP/3 layer stops it, whichever comes first; either needs a live peer, and the time
//! it took is a round trip plus the peer's ACK delay. A peer that stops answering (a dead
//! host, a path that drops everything) leaves the probe unanswered.

use std::time::Duration;

use tokio::time::Instant;
use webtransport_proto::varint;

use super::Connection;
use crate::events::ConnectionEvent;
use crate::lifecycle::ConnectionState;

/// The probe's stream type: a reserved (GREASE) value `0x1f * N + 0x21`.
const PROBE_STREAM_TYPE: u64 = 0x1f * 9 + 0x21;

/// How a probe went.
enum Probe {
    Answered(Duration),
    Unanswered,
    Closed,
}

impl Connection {
    /// Checks health every `check_interval` until the connection closes, then returns.
    /// Each check sends a probe (see the module docs) and waits up to `rtt_timeout` for
    /// the peer to answer: an answer is sent as [`ConnectionEvent::HealthCheckPassed`]
    /// with the time it took, a miss is logged and sent as
    /// [`ConnectionEvent::HealthCheckFailed`]. A connection still connecting is waited
    /// for first. Durations under 1 ms count as 1 ms.
    ///
    /// # Cancel safety
    /// Cancel safe: cancelling stops the monitoring.
    pub async fn monitor_health(&self, check_interval: Duration, rtt_timeout: Duration) {
        let interval = check_interval.max(Duration::from_millis(1));
        let rtt_timeout = rtt_timeout.max(Duration::from_millis(1));
        let state = self
            .engine()
            .lifecycle()
            .wait_for(|s| s >= ConnectionState::Connected)
            .await;
        let up = !state.is_final() && state != ConnectionState::Closing;
        let Some(link) = self.engine().link().filter(|_| up) else {
            return;
        };
        let quic = link.quic.clone();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = quic.closed() => return,
            }
            match probe(&quic, rtt_timeout).await {
                Probe::Answered(rtt) => {
                    tracing::trace!(conn = %self.connection_id(), ?rtt, "health check answered");
                    self.engine()
                        .events()
                        .emit(ConnectionEvent::HealthCheckPassed { rtt });
                }
                Probe::Unanswered => {
                    tracing::warn!(conn = %self.connection_id(), waited = ?rtt_timeout, "health check: no answer from peer");
                    self.engine()
                        .events()
                        .emit(ConnectionEvent::HealthCheckFailed {
                            waited: rtt_timeout,
                        });
                }
                Probe::Closed => return,
            }
        }
    }
}

async fn probe(quic: &quinn::Connection, timeout: Duration) -> Probe {
    let start = Instant::now();
    let answered = tokio::time::timeout(timeout, async {
        let mut stream = quic.open_uni().await.ok()?;
        let mut header = Vec::with_capacity(8);
        varint::encode(PROBE_STREAM_TYPE, &mut header);
        stream.write_all(&header).await.ok()?;
        stream.finish().ok()?;
        // Ok(None): all acknowledged; Ok(Some(code)): the peer stopped it. Either way
        // the peer answered.
        stream.stopped().await.ok()
    })
    .await;
    match answered {
        Ok(Some(_)) => Probe::Answered(start.elapsed()),
        Ok(None) => Probe::Closed,
        Err(_) if quic.close_reason().is_some() => Probe::Closed,
        Err(_) => Probe::Unanswered,
    }
}
