//! [`ServerStats`]: what an app counts (the seed's server statistics), kept in
//! `prometheus-client` metrics so that the same numbers are read by
//! [`ServerStats::diagnostics`] and scraped as Prometheus text by
//! [`ServerStats::prometheus_text`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::registry::BroadcastReport;
use crate::connection::{Connection, WeakConnection};
use crate::info::SessionStats;
use crate::server::Server;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Rejected {
    reason: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Failure {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Broadcast {
    kind: &'static str,
    outcome: &'static str,
}

/// The app's counters. Read them with [`AppHandle::diagnostics`](super::AppHandle::diagnostics); scrape them with
/// [`AppHandle::prometheus_text`](super::AppHandle::prometheus_text).
#[derive(Debug)]
pub struct ServerStats {
    registry: Registry,
    connections: Gauge,
    connections_accepted: Counter,
    connections_refused: Counter,
    sessions: Gauge,
    sessions_accepted: Counter,
    sessions_closed: Counter,
    requests: Counter,
    rejected: Labeled<Rejected>,
    routes: Labeled<Route>,
    handler_failures: Labeled<Failure>,
    bytes_sent: Counter,
    bytes_received: Counter,
    datagrams_sent: Counter,
    datagrams_dropped: Counter,
    broadcasts: Labeled<Broadcast>,
    /// Traffic of sessions and connections that ended, added to the live ones' at read.
    ended: Ended,
    /// Connections that carried a session of the app, until they end (then their bytes
    /// move to `ended`), by connection id. Also the lock that refreshes take.
    conns: Mutex<Conns>,
}

/// The tracked connections and when an accept next walks them to retire the ended ones.
#[derive(Debug, Default)]
struct Conns {
    map: HashMap<String, Tracked>,
    schedule: RetireSchedule,
}

/// When accepts walk the tracked connections: once the map has doubled since the last
/// walk (and holds at least [`RetireSchedule::MIN`]), so that each accept costs O(1)
/// amortised however many connections are live, while the map never holds more than
/// twice the live ones (or `MIN`) between scrapes.
#[derive(Debug)]
struct RetireSchedule {
    at: usize,
}

impl RetireSchedule {
    const MIN: usize = 1024;

    fn due(&self, len: usize) -> bool {
        len >= self.at
    }

    /// A walk left `len` connections tracked.
    fn walked(&mut self, len: usize) {
        self.at = len.saturating_mul(2).max(Self::MIN);
    }
}

impl Default for RetireSchedule {
    fn default() -> Self {
        RetireSchedule { at: Self::MIN }
    }
}

/// A connection whose traffic is counted: a weak handle, so that an ended connection's
/// state (QUIC, HTTP/3, buffers: tens of KB) is freed when the connection goes, not kept
/// until the next retire, and its bytes as last read (at its sessions' closes and at
/// refreshes), which are what counts once it is gone.
#[derive(Debug)]
struct Tracked {
    conn: WeakConnection,
    sent: u64,
    received: u64,
}

impl Tracked {
    /// Reads the connection's bytes if it still exists; returns whether it ended (or is
    /// gone).
    fn update(&mut self) -> bool {
        match self.conn.upgrade() {
            Some(c) => {
                let info = c.info();
                self.sent = self.sent.max(info.bytes_sent);
                self.received = self.received.max(info.bytes_received);
                c.is_closed()
            }
            None => true,
        }
    }
}

/// A family of counters and the label sets it has (the family cannot list them).
#[derive(Debug)]
struct Labeled<
    L: Clone + std::hash::Hash + Eq + Ord + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
> {
    family: Family<L, Counter>,
    seen: Mutex<std::collections::BTreeSet<L>>,
}

impl<
        L: Clone
            + std::hash::Hash
            + Eq
            + Ord
            + EncodeLabelSet
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    > Labeled<L>
{
    fn new() -> Self {
        Labeled {
            family: Family::default(),
            seen: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    fn inc_by(&self, labels: L, n: u64) {
        self.family.get_or_create(&labels).inc_by(n);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&labels) {
            seen.insert(labels);
        }
    }

    /// Every label set with its count, in label order.
    fn entries(&self) -> Vec<(L, u64)> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .map(|l| (l.clone(), self.family.get(l).map_or(0, |c| c.get())))
            .collect()
    }
}

/// Raises a counter that mirrors a monotonic number read elsewhere to that number.
fn advance(counter: &Counter, to: u64) {
    let now = counter.get();
    if to > now {
        counter.inc_by(to - now);
    }
}

#[derive(Debug, Default)]
struct Ended {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_dropped: AtomicU64,
}

/// A snapshot of [`ServerStats`] (pywebtransport's server diagnostics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerDiagnostics {
    /// QUIC connections open now.
    pub connections: u64,
    /// QUIC connections accepted since start.
    pub connections_accepted: u64,
    /// QUIC connections refused (over `max_connections`, or shutting down).
    pub connections_refused: u64,
    /// Sessions open now.
    pub sessions: u64,
    /// Sessions accepted since start.
    pub sessions_accepted: u64,
    /// Sessions that ended since start.
    pub sessions_closed: u64,
    /// Session requests since start.
    pub requests: u64,
    /// Requests refused, by `(reason, status)`, in order.
    pub rejected: Vec<(String, u16, u64)>,
    /// Sessions accepted per route pattern, in order.
    pub routes: Vec<(String, u64)>,
    /// Handlers that returned an error.
    pub handler_errors: u64,
    /// Handlers that panicked.
    pub handler_panics: u64,
    /// WebTransport-layer bytes sent on the app's connections.
    pub bytes_sent: u64,
    /// WebTransport-layer bytes received on them.
    pub bytes_received: u64,
    /// Datagrams the app's sessions sent.
    pub datagrams_sent: u64,
    /// Datagrams that arrived and were dropped unread (the session's queue was full).
    pub datagrams_dropped: u64,
    /// Broadcast deliveries: `(kind, outcome, count)`, kind `stream` or `datagram`,
    /// outcome `delivered`, `skipped` or `disconnected`.
    pub broadcasts: Vec<(String, String, u64)>,
}

impl ServerStats {
    pub(super) fn new() -> Self {
        let s = ServerStats {
            registry: Registry::with_prefix("webtransport"),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            sessions: Gauge::default(),
            sessions_accepted: Counter::default(),
            sessions_closed: Counter::default(),
            requests: Counter::default(),
            rejected: Labeled::new(),
            routes: Labeled::new(),
            handler_failures: Labeled::new(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            datagrams_sent: Counter::default(),
            datagrams_dropped: Counter::default(),
            broadcasts: Labeled::new(),
            ended: Ended::default(),
            conns: Mutex::new(Conns::default()),
        };
        let mut registry = Registry::with_prefix("webtransport");
        let r = &mut registry;
        r.register(
            "connections",
            "QUIC connections open",
            s.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "QUIC connections accepted",
            s.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "QUIC connections refused",
            s.connections_refused.clone(),
        );
        r.register("sessions", "sessions open", s.sessions.clone());
        r.register(
            "sessions_accepted",
            "sessions accepted",
            s.sessions_accepted.clone(),
        );
        r.register(
            "sessions_closed",
            "sessions ended",
            s.sessions_closed.clone(),
        );
        r.register("session_requests", "session requests", s.requests.clone());
        r.register(
            "sessions_rejected",
            "session requests refused, by reason and status",
            s.rejected.family.clone(),
        );
        r.register(
            "route_sessions",
            "sessions accepted, by route",
            s.routes.family.clone(),
        );
        r.register(
            "handler_failures",
            "handlers that returned an error or panicked",
            s.handler_failures.family.clone(),
        );
        r.register(
            "bytes_sent",
            "WebTransport-layer bytes sent",
            s.bytes_sent.clone(),
        );
        r.register(
            "bytes_received",
            "WebTransport-layer bytes received",
            s.bytes_received.clone(),
        );
        r.register("datagrams_sent", "datagrams sent", s.datagrams_sent.clone());
        r.register(
            "datagrams_dropped",
            "datagrams received and dropped unread",
            s.datagrams_dropped.clone(),
        );
        r.register(
            "broadcasts",
            "broadcast deliveries, by kind and outcome",
            s.broadcasts.family.clone(),
        );
        ServerStats { registry, ..s }
    }

    pub(super) fn request(&self) {
        self.requests.inc();
    }

    pub(super) fn rejected(&self, reason: &str, status: u16) {
        self.rejected.inc_by(
            Rejected {
                reason: reason.to_owned(),
                status,
            },
            1,
        );
    }

    pub(super) fn accepted(&self, route: &str, conn: &Connection) {
        self.sessions_accepted.inc();
        self.sessions.inc();
        self.routes.inc_by(
            Route {
                route: route.to_owned(),
            },
            1,
        );
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.schedule.due(conns.map.len()) {
            self.retire(&mut conns);
        }
        conns
            .map
            .entry(conn.connection_id().to_owned())
            .or_insert_with(|| Tracked {
                conn: conn.downgrade(),
                sent: 0,
                received: 0,
            });
    }

    /// A session on `conn` closed: its numbers are added, and the connection's bytes read
    /// while it surely exists (it may go with this session).
    pub(super) fn closed(&self, stats: &SessionStats, conn: &Connection) {
        if let Some(t) = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .get_mut(conn.connection_id())
        {
            let info = conn.info();
            t.sent = t.sent.max(info.bytes_sent);
            t.received = t.received.max(info.bytes_received);
        }
        self.sessions.dec();
        self.sessions_closed.inc();
        self.ended
            .datagrams_sent
            .fetch_add(stats.datagrams_sent, Ordering::Relaxed);
        self.ended
            .datagrams_dropped
            .fetch_add(stats.datagrams_dropped, Ordering::Relaxed);
    }

    pub(super) fn handler_failed(&self, panicked: bool) {
        let kind = if panicked { "panic" } else { "error" };
        self.handler_failures.inc_by(Failure { kind }, 1);
    }

    pub(super) fn broadcast(&self, r: &BroadcastReport, datagram: bool) {
        let kind = if datagram { "datagram" } else { "stream" };
        for (outcome, n) in [
            ("delivered", r.delivered),
            ("skipped", r.skipped),
            ("disconnected", r.disconnected),
        ] {
            if n > 0 {
                self.broadcasts
                    .inc_by(Broadcast { kind, outcome }, n as u64);
            }
        }
    }

    /// Reads the traffic of every tracked connection, and moves that of connections that
    /// ended (or are gone) into `ended`.
    fn retire(&self, conns: &mut Conns) {
        conns.map.retain(|_, t| {
            if !t.update() {
                return true;
            }
            self.ended.bytes_sent.fetch_add(t.sent, Ordering::Relaxed);
            self.ended
                .bytes_received
                .fetch_add(t.received, Ordering::Relaxed);
            false
        });
        let len = conns.map.len();
        conns.schedule.walked(len);
    }

    /// Brings the read-at-scrape numbers up to date: connections from `servers`, traffic
    /// from the connections and the `live` sessions' counters.
    pub(super) fn refresh(&self, servers: &[&Server], live: &[SessionStats]) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let open: usize = servers
            .iter()
            .map(|s| s.connections().iter().filter(|c| !c.is_closed()).count())
            .sum();
        self.connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        advance(
            &self.connections_accepted,
            servers.iter().map(|s| s.connections_accepted()).sum(),
        );
        advance(
            &self.connections_refused,
            servers.iter().map(|s| s.connections_refused()).sum(),
        );
        self.retire(&mut conns);
        let (sent, received) = conns
            .map
            .values()
            .fold((0, 0), |(s, r), t| (s + t.sent, r + t.received));
        advance(
            &self.bytes_sent,
            sent + self.ended.bytes_sent.load(Ordering::Relaxed),
        );
        advance(
            &self.bytes_received,
            received + self.ended.bytes_received.load(Ordering::Relaxed),
        );
        let (dg_sent, dg_dropped) = live.iter().fold((0, 0), |(s, d), st| {
            (s + st.datagrams_sent, d + st.datagrams_dropped)
        });
        advance(
            &self.datagrams_sent,
            dg_sent + self.ended.datagrams_sent.load(Ordering::Relaxed),
        );
        advance(
            &self.datagrams_dropped,
            dg_dropped + self.ended.datagrams_dropped.load(Ordering::Relaxed),
        );
    }

    /// The counters now (as of the last refresh for those read from connections).
    pub(super) fn snapshot(&self) -> ServerDiagnostics {
        let read = |g: &Gauge| u64::try_from(g.get()).unwrap_or(0);
        let mut failures = (0, 0);
        for (label, c) in self.handler_failures.entries() {
            match label.kind {
                "panic" => failures.1 += c,
                _ => failures.0 += c,
            }
        }
        ServerDiagnostics {
            connections: read(&self.connections),
            connections_accepted: self.connections_accepted.get(),
            connections_refused: self.connections_refused.get(),
            sessions: read(&self.sessions),
            sessions_accepted: self.sessions_accepted.get(),
            sessions_closed: self.sessions_closed.get(),
            requests: self.requests.get(),
            rejected: self
                .rejected
                .entries()
                .into_iter()
                .map(|(l, c)| (l.reason, l.status, c))
                .collect(),
            routes: self
                .routes
                .entries()
                .into_iter()
                .map(|(l, c)| (l.route, c))
                .collect(),
            handler_errors: failures.0,
            handler_panics: failures.1,
            bytes_sent: self.bytes_sent.get(),
            bytes_received: self.bytes_received.get(),
            datagrams_sent: self.datagrams_sent.get(),
            datagrams_dropped: self.datagrams_dropped.get(),
            broadcasts: self
                .broadcasts
                .entries()
                .into_iter()
                .map(|(l, c)| (l.kind.to_owned(), l.outcome.to_owned(), c))
                .collect(),
        }
    }

    /// The metrics in the Prometheus (OpenMetrics) text format, as of the last refresh.
    pub(super) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::RetireSchedule;

    /// Accepts `n` sessions on connections that all stay live, each walking the map when
    /// the schedule says so; returns how many entries the walks visited in all.
    fn visits_with_all_live(n: usize) -> usize {
        let mut schedule = RetireSchedule::default();
        let (mut len, mut visited) = (0, 0);
        for _ in 0..n {
            if schedule.due(len) {
                visited += len;
                schedule.walked(len);
            }
            len += 1;
        }
        visited
    }

    #[test]
    fn accepts_walk_the_tracked_connections_in_amortised_constant_time() {
        // With every connection live a walk retires nothing; a schedule that walked on
        // every accept past a fixed size made 10,000 held sessions cost ~9,000 walks of
        // thousands of entries each (wt bench's sessions scenario: 85 sessions/s).
        for n in [1_000, 10_000, 100_000] {
            let visited = visits_with_all_live(n);
            assert!(visited <= 2 * n, "{n} accepts visited {visited} entries");
        }
    }

    #[test]
    fn ended_connections_are_walked_before_the_map_doubles() {
        let mut schedule = RetireSchedule::default();
        assert!(!schedule.due(RetireSchedule::MIN - 1));
        assert!(schedule.due(RetireSchedule::MIN));
        schedule.walked(3_000);
        assert!(!schedule.due(5_999));
        assert!(schedule.due(6_000));
        // After a walk that retired most connections the bound comes back down.
        schedule.walked(10);
        assert!(schedule.due(RetireSchedule::MIN));
    }
}
