//! A congestion controller that watches quinn's: packets in flight, which quinn does not
//! expose. A leaf module: `config` builds quinn's transport settings with it.

/// A congestion controller that watches another one: it counts what the controller is
/// told (packet numbers sent, the largest acknowledged) so that a connection can say how
/// many packets are in flight, which quinn does not expose. Everything else is the
/// wrapped controller's, so congestion control is unchanged.
struct Observed {
    inner: Box<dyn quinn::congestion::Controller>,
    counts: std::sync::Arc<InFlight>,
}

/// Packet numbers the controller saw, shared by the copies quinn makes of it.
#[derive(Debug, Default)]
struct InFlight {
    /// One past the last packet number sent (0: none yet).
    sent: std::sync::atomic::AtomicU64,
    /// One past the largest packet number acknowledged (0: none yet).
    acked: std::sync::atomic::AtomicU64,
}

impl quinn::congestion::Controller for Observed {
    fn on_sent(&mut self, now: std::time::Instant, bytes: u64, last_packet_number: u64) {
        self.counts
            .sent
            .fetch_max(last_packet_number + 1, std::sync::atomic::Ordering::Relaxed);
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: std::time::Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        if let Some(largest) = largest_packet_num_acked {
            self.counts
                .acked
                .fetch_max(largest + 1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> quinn::congestion::ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn quinn::congestion::Controller> {
        Box::new(Observed {
            inner: self.inner.clone_box(),
            counts: self.counts.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Makes [`Observed`] controllers around the ones `inner` makes.
struct ObservedFactory(std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>);

impl quinn::congestion::ControllerFactory for ObservedFactory {
    fn build(
        self: std::sync::Arc<Self>,
        now: std::time::Instant,
        current_mtu: u16,
    ) -> Box<dyn quinn::congestion::Controller> {
        Box::new(Observed {
            inner: self.0.clone().build(now, current_mtu),
            counts: std::sync::Arc::default(),
        })
    }
}

/// Wraps a congestion controller factory so that [`packets_in_flight`] can read the
/// connections it controls.
pub(crate) fn observed(
    inner: std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
) -> std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    std::sync::Arc::new(ObservedFactory(inner))
}

/// Packets sent after the largest one the peer acknowledged: those not yet acknowledged
/// or declared lost. `None` for a connection whose controller is not [`observed`].
pub(crate) fn packets_in_flight(quic: &quinn::Connection) -> Option<u64> {
    let state = quic
        .congestion_state()
        .into_any()
        .downcast::<Observed>()
        .ok()?;
    let sent = state.counts.sent.load(std::sync::atomic::Ordering::Relaxed);
    let acked = state
        .counts
        .acked
        .load(std::sync::atomic::Ordering::Relaxed);
    Some(sent.saturating_sub(acked))
}
