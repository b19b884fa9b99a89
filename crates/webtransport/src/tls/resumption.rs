//! The server's TLS session store: rustls's in-memory cache, counting the session tickets
//! that clients redeem (resumed handshakes, RFC 8446 §2.2).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};

/// How many sessions the server remembers (rustls's default).
const REMEMBERED_SESSIONS: usize = 256;

/// Counts redeemed tickets; shared between the session store and the server that reports it.
#[derive(Debug, Default)]
pub(crate) struct ResumptionCount(AtomicU64);

impl ResumptionCount {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// rustls's [`ServerSessionMemoryCache`] with a count of the sessions taken out of it.
pub(super) struct CountingSessionStore {
    inner: Arc<ServerSessionMemoryCache>,
    count: Arc<ResumptionCount>,
}

impl CountingSessionStore {
    pub(super) fn new(count: Arc<ResumptionCount>) -> Self {
        CountingSessionStore {
            inner: ServerSessionMemoryCache::new(REMEMBERED_SESSIONS),
            count,
        }
    }

    fn counted(&self, found: Option<Vec<u8>>) -> Option<Vec<u8>> {
        if found.is_some() {
            self.count.0.fetch_add(1, Ordering::Relaxed);
        }
        found
    }
}

impl fmt::Debug for CountingSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSessionStore")
            .field("resumed", &self.count.get())
            .finish_non_exhaustive()
    }
}

impl StoresServerSessions for CountingSessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.counted(self.inner.get(key))
    }

    // TLS 1.3 tickets from a stateful store are single-use: rustls takes them.
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.counted(self.inner.take(key))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}
