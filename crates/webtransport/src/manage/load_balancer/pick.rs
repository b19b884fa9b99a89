//! Each target's state, and how a [`Strategy`] picks among the targets.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;

use super::Strategy;
use crate::config::ClientConfig;
use crate::connection::{Connection, ConnectionState};
use crate::error::ConnectError;

pub(super) type ConnectResult = Option<Result<Connection, ConnectError>>;

/// A connect to a target in flight: calls that pick the target meanwhile wait on `rx`.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: u64,
    pub(super) rx: watch::Receiver<ConnectResult>,
}

#[derive(Debug)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) weight: f64,
    /// Running weight of smooth weighted round robin.
    pub(super) current: f64,
    pub(super) latency: Option<Duration>,
    pub(super) failed: bool,
    pub(super) conn: Option<Connection>,
    pub(super) pending: Option<Pending>,
    pub(super) connect_attempts: u64,
    pub(super) connect_failures: u64,
}

impl Target {
    /// A target with weight 1, never connected.
    pub(super) fn new(host: String, port: u16) -> Self {
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

    pub(super) fn live_conn(&self) -> Option<&Connection> {
        self.conn
            .as_ref()
            .filter(|c| c.state() == ConnectionState::Connected)
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) targets: Vec<Target>,
    pub(super) rr_next: usize,
    pub(super) next_attempt: u64,
    /// Config and path of the latest `get_connection`, for the default health check.
    pub(super) probe: Option<(ClientConfig, String)>,
    pub(super) shut_down: bool,
}

impl State {
    /// The state of a new balancer over `targets`.
    pub(super) fn new(targets: Vec<Target>) -> Self {
        State {
            targets,
            rr_next: 0,
            next_attempt: 0,
            probe: None,
            shut_down: false,
        }
    }

    /// Picks a target among those not failed and not in `skip`, advancing the strategy.
    pub(super) fn pick(&mut self, strategy: Strategy, skip: &HashSet<usize>) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> State {
        State::new((0..n).map(|i| Target::new("h".into(), i as u16)).collect())
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
}
