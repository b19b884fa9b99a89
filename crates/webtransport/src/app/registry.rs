//! [`SessionRegistry`]: every live session of an app by its [`SessionKey`], named groups
//! (rooms) of them, and broadcast to a group with a queue per member, so that a member
//! that stops reading never holds up the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::debug;

use super::stats::ServerStats;
use crate::session::Session;

/// An app-wide name for one session (session ids are only unique per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey(pub u64);

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What happens to a group member whose broadcast queue is full (it reads slower than
/// the group sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowMemberPolicy {
    /// The message is not delivered to it (counted as skipped); it stays a member.
    #[default]
    Skip,
    /// Its session is closed with [`SLOW_MEMBER_CODE`].
    Disconnect,
}

/// The session close code for a member dropped under [`SlowMemberPolicy::Disconnect`].
pub const SLOW_MEMBER_CODE: u32 = 0x5107;

/// What a broadcast did, member by member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Members the message was handed to (queued for a stream, or given to QUIC as a
    /// datagram).
    pub delivered: usize,
    /// Members it was not delivered to: a full queue under [`SlowMemberPolicy::Skip`], or
    /// a datagram QUIC refused.
    pub skipped: usize,
    /// Members disconnected under [`SlowMemberPolicy::Disconnect`].
    pub disconnected: usize,
}

/// A live session as the registry holds it.
#[derive(Debug)]
struct Entry {
    session: Session,
    route: Option<String>,
    groups: BTreeSet<String>,
    /// Its broadcast queue and the task that writes it, once it joined a group.
    outbox: Option<Outbox>,
}

#[derive(Debug)]
struct Outbox {
    tx: mpsc::Sender<Bytes>,
    task: AbortHandle,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Inner {
    sessions: BTreeMap<SessionKey, Entry>,
    groups: BTreeMap<String, BTreeSet<SessionKey>>,
    /// Admitted sessions (see [`Admission`]), in all and per address.
    admitted: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which session limit a request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitHit {
    /// `max_sessions`.
    Total,
    /// `max_sessions_per_ip`.
    PerIp,
}

/// A session's place under the app's session limits, from admission until its end.
#[derive(Debug)]
pub(super) struct Admission {
    registry: Arc<SessionRegistry>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.admitted -= 1;
        if let Some(n) = inner.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Every live session of an app, findable by key, and its groups.
#[derive(Debug)]
pub struct SessionRegistry {
    inner: Mutex<Inner>,
    queue: usize,
    policy: SlowMemberPolicy,
    stats: Arc<ServerStats>,
}

/// Why a session could not join a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No live session has this key (it closed).
    #[error("no live session {0}")]
    NoSession(SessionKey),
}

impl SessionRegistry {
    pub(super) fn new(queue: usize, policy: SlowMemberPolicy, stats: Arc<ServerStats>) -> Self {
        SessionRegistry {
            inner: Mutex::new(Inner::default()),
            queue: queue.max(1),
            policy,
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions from `ip` now (accepted, or admitted and not yet answered).
    pub fn sessions_from(&self, ip: IpAddr) -> usize {
        self.lock().per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Admits one more session from `ip` if that keeps within `max_total` and
    /// `max_per_ip`; the slot is held until the [`Admission`] is dropped.
    pub(super) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Admission, LimitHit> {
        let mut inner = self.lock();
        if inner.admitted >= max_total {
            return Err(LimitHit::Total);
        }
        let n = inner.per_ip.entry(ip).or_default();
        if *n >= max_per_ip {
            if *n == 0 {
                inner.per_ip.remove(&ip);
            }
            return Err(LimitHit::PerIp);
        }
        *n += 1;
        inner.admitted += 1;
        Ok(Admission {
            registry: self.clone(),
            ip,
        })
    }

    pub(super) fn insert(&self, key: SessionKey, session: Session, route: Option<String>) {
        self.lock().sessions.insert(
            key,
            Entry {
                session,
                route,
                groups: BTreeSet::new(),
                outbox: None,
            },
        );
    }

    /// Forgets a session that ended: it leaves its groups.
    pub(super) fn remove(&self, key: SessionKey) {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.remove(&key) else {
            return;
        };
        for g in &entry.groups {
            leave_group(&mut inner.groups, g, key);
        }
    }

    /// The live session with this key.
    pub fn get(&self, key: SessionKey) -> Option<Session> {
        self.lock().sessions.get(&key).map(|e| e.session.clone())
    }

    /// Live sessions now.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of every live session, in order.
    pub fn keys(&self) -> Vec<SessionKey> {
        self.lock().sessions.keys().copied().collect()
    }

    /// The keys of the live sessions on `route` (a pattern as registered).
    pub fn keys_on_route(&self, route: &str) -> Vec<SessionKey> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, e)| e.route.as_deref() == Some(route))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Puts a live session in group `name` (made on first use). It leaves every group
    /// by itself when it ends.
    pub fn join(&self, name: &str, key: SessionKey) -> Result<(), GroupError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let entry = inner
            .sessions
            .get_mut(&key)
            .ok_or(GroupError::NoSession(key))?;
        entry.groups.insert(name.to_owned());
        if entry.outbox.is_none() {
            entry.outbox = Some(self.outbox(entry.session.clone()));
        }
        inner.groups.entry(name.to_owned()).or_default().insert(key);
        Ok(())
    }

    /// Takes a session out of group `name` (a group with no member left is forgotten).
    pub fn leave(&self, name: &str, key: SessionKey) {
        let mut inner = self.lock();
        if let Some(e) = inner.sessions.get_mut(&key) {
            e.groups.remove(name);
        }
        leave_group(&mut inner.groups, name, key);
    }

    /// The members of group `name`, in key order.
    pub fn members(&self, name: &str) -> Vec<SessionKey> {
        self.lock()
            .groups
            .get(name)
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The groups with at least one member, in name order.
    pub fn groups(&self) -> Vec<String> {
        self.lock().groups.keys().cloned().collect()
    }

    /// Sends `payload` as a datagram to every member of group `name`. Datagrams never
    /// wait: one that QUIC refuses (too large, send buffer full) is skipped.
    pub fn broadcast_datagram(&self, name: &str, payload: &[u8]) -> BroadcastReport {
        let sessions = self.member_sessions(name);
        let mut report = BroadcastReport::default();
        for s in sessions {
            match s.send_datagram(payload) {
                Ok(()) => report.delivered += 1,
                Err(_) => report.skipped += 1,
            }
        }
        self.stats.broadcast(&report, true);
        report
    }

    /// Sends `payload` to every member of group `name`, each on a new unidirectional
    /// stream of its own. The message goes into each member's queue (`broadcast_queue`
    /// messages) and a task per member writes it: a member whose queue is full is handled
    /// by the app's [`SlowMemberPolicy`], and never slows the others.
    pub fn broadcast_stream(&self, name: &str, payload: Bytes) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        let mut slow = Vec::new();
        {
            let inner = self.lock();
            let Some(group) = inner.groups.get(name) else {
                return report;
            };
            for key in group {
                let Some(outbox) = inner.sessions.get(key).and_then(|e| e.outbox.as_ref()) else {
                    continue;
                };
                match outbox.tx.try_send(payload.clone()) {
                    Ok(()) => report.delivered += 1,
                    Err(_) => match self.policy {
                        SlowMemberPolicy::Skip => report.skipped += 1,
                        SlowMemberPolicy::Disconnect => {
                            report.disconnected += 1;
                            slow.push(*key);
                        }
                    },
                }
            }
        }
        for key in slow {
            if let Some(s) = self.get(key) {
                debug!(session = %key, "broadcast queue full: disconnecting a slow member");
                let _ = s.close(SLOW_MEMBER_CODE, "too slow for its group");
            }
        }
        self.stats.broadcast(&report, false);
        report
    }

    fn member_sessions(&self, name: &str) -> Vec<Session> {
        let inner = self.lock();
        inner
            .groups
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.sessions.get(k).map(|e| e.session.clone()))
            .collect()
    }

    /// A member's queue and the task writing it, one stream per message.
    fn outbox(&self, session: Session) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<Bytes>(self.queue);
        let task = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let sent = async {
                    let mut s = session.open_uni().await.ok()?;
                    s.write_all(&msg).await.ok()?;
                    s.finish().ok()
                };
                if sent.await.is_none() && session.is_closed() {
                    break;
                }
            }
        })
        .abort_handle();
        Outbox { tx, task }
    }
}

fn leave_group(groups: &mut BTreeMap<String, BTreeSet<SessionKey>>, name: &str, key: SessionKey) {
    if let Some(g) = groups.get_mut(name) {
        g.remove(&key);
        if g.is_empty() {
            groups.remove(name);
        }
    }
}
