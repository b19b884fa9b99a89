//! [`RateLimit`]: session requests per client IP address in a sliding window, in bounded
//! memory however many addresses come.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::context::RequestContext;
use super::middleware::{BoxFuture, Middleware, Rejection};

/// Allows at most `limit` session requests per client IP address in any `window`, and
/// refuses the rest with 429 and a `retry-after` header (seconds).
///
/// The window slides: the count is this fixed window's requests plus the previous
/// window's, weighted by how much of it still overlaps (the usual sliding-window
/// counter; two counters per address instead of a timestamp per request). At most
/// `max_tracked` addresses are tracked (16,384 by default, about 64 bytes each): when the
/// table is full, addresses idle for two windows are dropped, and if none is, the
/// least recently seen one. An attacker with that many addresses can thus reset a
/// victim's count, never grow the table.
///
/// Time is tokio's, so that tests can run it on the paused clock.
#[derive(Debug)]
pub struct RateLimit {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    table: Mutex<HashMap<IpAddr, Counter>>,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Start of the current fixed window.
    start: Instant,
    current: u32,
    previous: u32,
    last_seen: Instant,
}

impl RateLimit {
    /// `limit` requests per IP address in any `window`.
    pub fn per_ip(limit: u32, window: Duration) -> Self {
        RateLimit {
            limit,
            window: window.max(Duration::from_millis(1)),
            max_tracked: 16_384,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How many addresses are tracked at most.
    pub fn max_tracked(mut self, n: usize) -> Self {
        self.max_tracked = n.max(1);
        self
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Counts a request from `ip` now: `Ok` when under the limit, else how long until
    /// one more would pass (at least a second, for `retry-after`).
    pub fn hit(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&ip) && table.len() >= self.max_tracked {
            self.make_room(&mut table, now);
        }
        let c = table.entry(ip).or_insert(Counter {
            start: now,
            current: 0,
            previous: 0,
            last_seen: now,
        });
        c.last_seen = now;
        // Move the fixed window forward to the one holding `now`.
        let elapsed = now.duration_since(c.start);
        if elapsed >= self.window {
            let windows = elapsed.as_nanos() / self.window.as_nanos();
            c.previous = if windows == 1 { c.current } else { 0 };
            c.current = 0;
            c.start += self.window * u32::try_from(windows).unwrap_or(u32::MAX);
        }
        let into = now.duration_since(c.start).as_secs_f64() / self.window.as_secs_f64();
        let weighted = f64::from(c.previous) * (1.0 - into) + f64::from(c.current);
        if weighted + 1.0 > f64::from(self.limit) {
            // The previous window's weight falls as time passes; by the end of this
            // window it is gone and only `current` counts.
            let wait = (c.start + self.window).saturating_duration_since(now);
            return Err(wait.max(Duration::from_secs(1)));
        }
        c.current += 1;
        Ok(())
    }

    fn make_room(&self, table: &mut HashMap<IpAddr, Counter>, now: Instant) {
        let stale = 2 * self.window;
        table.retain(|_, c| now.duration_since(c.last_seen) < stale);
        if table.len() >= self.max_tracked {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(ip, _)| *ip)
            {
                table.remove(&oldest);
            }
        }
    }
}

impl Middleware for RateLimit {
    fn check<'a>(&'a self, ctx: &'a mut RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        let result = self.hit(ctx.remote_address().ip()).map_err(|wait| {
            Rejection::new(429, "rate_limit")
                .with_header("retry-after", wait.as_secs_f64().ceil().to_string())
        });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_fills_and_recovers() {
        let rl = RateLimit::per_ip(3, Duration::from_secs(10));
        for _ in 0..3 {
            rl.hit(ip(1)).unwrap();
        }
        let wait = rl.hit(ip(1)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // Another address has its own count.
        rl.hit(ip(2)).unwrap();
        // Half a window later the three still weigh more than two.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(rl.hit(ip(1)).is_err());
        // Into the next window: the previous three weigh 3 * 0.8 = 2.4, so none fits...
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(rl.hit(ip(1)).is_err());
        // ...until their weight falls under 2: 3 * (1 - 0.4) = 1.8.
        tokio::time::advance(Duration::from_secs(2)).await;
        rl.hit(ip(1)).unwrap();
        // Two windows of quiet: a fresh start.
        tokio::time::advance(Duration::from_secs(30)).await;
        for _ in 0..3 {
            rl.hit(ip(1)).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_addresses_never_grow_the_table_past_its_cap() {
        let rl = RateLimit::per_ip(1, Duration::from_secs(60)).max_tracked(100);
        for n in 0..10_000u32 {
            let a = IpAddr::from(n.to_be_bytes());
            rl.hit(a).unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(rl.tracked(), 100);
        // The most recent addresses are still counted.
        assert!(rl.hit(IpAddr::from(9_999u32.to_be_bytes())).is_err());
    }
}
