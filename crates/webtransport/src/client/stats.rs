//! Connect statistics and diagnostics of a [`Client`](crate::Client) — pywebtransport's
//! `ClientStats` and `ClientDiagnostics`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::connection::{Connection, ConnectionState, WeakConnection};
use crate::weak_list::WeakList;

/// Connect counters of a client since it was created.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientStats {
    /// When the client was created.
    pub created_at: SystemTime,
    /// Time since then.
    pub uptime: Duration,
    /// Connects started (a URL that does not parse is not counted).
    pub connections_attempted: u64,
    /// Connects that ended with an open session.
    pub connections_successful: u64,
    /// Connects that failed, timed out, or were cancelled (their future dropped).
    pub connections_failed: u64,
    /// Sum of the successful connects' durations.
    pub total_connect_time: Duration,
    /// Fastest successful connect; `None` before the first.
    pub min_connect_time: Option<Duration>,
    /// Slowest successful connect (zero before the first).
    pub max_connect_time: Duration,
}

impl ClientStats {
    /// Mean duration of the successful connects (zero before the first).
    pub fn avg_connect_time(&self) -> Duration {
        match u32::try_from(self.connections_successful) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_connect_time / n,
            Err(_) => Duration::from_secs_f64(
                self.total_connect_time.as_secs_f64() / self.connections_successful as f64,
            ),
        }
    }

    /// Successful / attempted, 1.0 when nothing was attempted.
    pub fn success_rate(&self) -> f64 {
        if self.connections_attempted == 0 {
            1.0
        } else {
            self.connections_successful as f64 / self.connections_attempted as f64
        }
    }

    /// The counters of `self` and `other` together (for a fleet of clients): the earlier
    /// creation time, sums, and the extreme connect times.
    pub fn combine(&self, other: &ClientStats) -> ClientStats {
        let created_at = self.created_at.min(other.created_at);
        ClientStats {
            created_at,
            uptime: SystemTime::now()
                .duration_since(created_at)
                .unwrap_or_default(),
            connections_attempted: self.connections_attempted + other.connections_attempted,
            connections_successful: self.connections_successful + other.connections_successful,
            connections_failed: self.connections_failed + other.connections_failed,
            total_connect_time: self.total_connect_time + other.total_connect_time,
            min_connect_time: match (self.min_connect_time, other.min_connect_time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_connect_time: self.max_connect_time.max(other.max_connect_time),
        }
    }
}

/// A finding of [`ClientDiagnostics::issues`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "issue")]
#[non_exhaustive]
pub enum ClientIssue {
    /// More than 10 connects attempted and under 90 % succeeded.
    LowSuccessRate {
        /// Successful / attempted.
        rate: f64,
    },
    /// Successful connects took over 5 s on average.
    SlowConnect {
        /// The mean.
        avg: Duration,
    },
}

impl fmt::Display for ClientIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIssue::LowSuccessRate { rate } => {
                write!(f, "Low connection success rate: {:.2}%", rate * 100.0)
            }
            ClientIssue::SlowConnect { avg } => {
                write!(f, "Slow average connection time: {avg:?}")
            }
        }
    }
}

/// A snapshot of a client's health: its counters and the states of the connections it
/// made that still exist.
#[derive(Debug, Clone, Serialize)]
pub struct ClientDiagnostics {
    /// The counters.
    pub stats: ClientStats,
    /// How many of the client's connections are in each state (connections whose every
    /// handle was dropped are gone and not counted).
    pub connection_states: HashMap<ConnectionState, usize>,
}

impl ClientDiagnostics {
    /// Problems these numbers suggest.
    pub fn issues(&self) -> Vec<ClientIssue> {
        let mut out = Vec::new();
        let rate = self.stats.success_rate();
        if self.stats.connections_attempted > 10 && rate < 0.9 {
            out.push(ClientIssue::LowSuccessRate { rate });
        }
        let avg = self.stats.avg_connect_time();
        if avg > Duration::from_secs(5) {
            out.push(ClientIssue::SlowConnect { avg });
        }
        out
    }
}

#[derive(Debug, Default)]
struct Counters {
    attempted: u64,
    successful: u64,
    failed: u64,
    total: Duration,
    min: Option<Duration>,
    max: Duration,
}

/// What a [`Client`](crate::Client) records; shared by its clones.
#[derive(Debug)]
pub(crate) struct ClientRecorder {
    created_at: SystemTime,
    started: Instant,
    counters: Mutex<Counters>,
    connections: Mutex<WeakList<WeakConnection>>,
}

impl Default for ClientRecorder {
    fn default() -> Self {
        ClientRecorder {
            created_at: SystemTime::now(),
            started: Instant::now(),
            counters: Mutex::default(),
            connections: Mutex::default(),
        }
    }
}

impl ClientRecorder {
    /// Counts an attempt; the returned guard counts it failed unless
    /// [`Attempt::succeeded`] is called.
    pub(crate) fn start(self: &Arc<Self>) -> Attempt {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attempted += 1;
        Attempt {
            recorder: self.clone(),
            started: Instant::now(),
            done: false,
        }
    }

    pub(crate) fn snapshot(&self) -> ClientStats {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        ClientStats {
            created_at: self.created_at,
            uptime: self.started.elapsed(),
            connections_attempted: c.attempted,
            connections_successful: c.successful,
            connections_failed: c.failed,
            total_connect_time: c.total,
            min_connect_time: c.min,
            max_connect_time: c.max,
        }
    }

    pub(crate) fn diagnostics(&self) -> ClientDiagnostics {
        let mut states = HashMap::new();
        let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for conn in list.prune().iter().filter_map(WeakConnection::upgrade) {
            *states.entry(conn.state()).or_insert(0) += 1;
        }
        drop(list);
        ClientDiagnostics {
            stats: self.snapshot(),
            connection_states: states,
        }
    }
}

/// One connect in progress; counted failed if dropped without [`Attempt::succeeded`].
#[derive(Debug)]
pub(crate) struct Attempt {
    recorder: Arc<ClientRecorder>,
    started: Instant,
    done: bool,
}

impl Attempt {
    pub(crate) fn succeeded(mut self, conn: &Connection) {
        self.done = true;
        let took = self.started.elapsed();
        {
            let mut c = self
                .recorder
                .counters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.successful += 1;
            c.total += took;
            c.min = Some(c.min.map_or(took, |m| m.min(took)));
            c.max = c.max.max(took);
        }
        self.recorder
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.downgrade());
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.recorder
                .counters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(attempted: u64, ok: u64, avg_ms: u64) -> ClientStats {
        ClientStats {
            created_at: SystemTime::now(),
            uptime: Duration::ZERO,
            connections_attempted: attempted,
            connections_successful: ok,
            connections_failed: attempted - ok,
            total_connect_time: Duration::from_millis(avg_ms * ok),
            min_connect_time: (ok > 0).then(|| Duration::from_millis(avg_ms)),
            max_connect_time: Duration::from_millis(avg_ms),
        }
    }

    #[test]
    fn rates_and_issues() {
        let s = stats(0, 0, 0);
        assert_eq!(s.success_rate(), 1.0);
        assert_eq!(s.avg_connect_time(), Duration::ZERO);
        let d = ClientDiagnostics {
            stats: stats(20, 10, 6000),
            connection_states: HashMap::new(),
        };
        assert_eq!(
            d.issues(),
            [
                ClientIssue::LowSuccessRate { rate: 0.5 },
                ClientIssue::SlowConnect {
                    avg: Duration::from_secs(6)
                }
            ]
        );
        let both = stats(4, 2, 10).combine(&stats(6, 6, 20));
        assert_eq!(both.connections_attempted, 10);
        assert_eq!(both.connections_failed, 2);
        assert_eq!(both.min_connect_time, Some(Duration::from_millis(10)));
        assert_eq!(both.max_connect_time, Duration::from_millis(20));
    }
}
