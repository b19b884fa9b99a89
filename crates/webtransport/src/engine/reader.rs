//! Readers of the streams the core reads: every stream the peer opens until its preamble
//! is known (and, for HTTP/3's own streams, all of it), and the CONNECT streams of our own
//! sessions. A reader feeds the core and hands WebTransport streams over when the core
//! detaches them; it awaits only its own stream, never inside the driver's loop.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use webtransport_proto::connection::Feed;
use webtransport_proto::Code;

use super::Engine;
use crate::error::ConnectionError;
use crate::quic::{h3_code, quinn_code};

/// Lets the core stop a stream its reader is reading (STOP_SENDING).
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    code: Mutex<Option<Code>>,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn stop(&self, code: Code) {
        *self.code.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<Code> {
        self.code.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Whether the core asked to stop the stream (and the reader has not acted on it).
    fn is_stopped(&self) -> bool {
        self.code
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// Starts reading a stream the peer opened (with its sending half for a bidirectional
/// one), or one of our own the core reads. What already arrived is fed at once, right
/// here: a preamble nearly always comes with the first bytes and the core hands the stream
/// to its session at once, so only a stream that needs more reading gets a task of its
/// own. That saves a task spawn, a scheduling hop and an allocation per stream.
pub(crate) fn start(
    engine: &Arc<Engine>,
    recv: quinn::RecvStream,
    send: Option<quinn::SendStream>,
) {
    use futures_util::FutureExt;
    let mut reader = Reader {
        engine: engine.clone(),
        id: recv.id().into(),
        recv: Some(recv),
        send,
        stop: None,
    };
    loop {
        let Some(stream) = reader.recv.as_mut() else {
            return;
        };
        let Some(chunk) = stream.read_chunk(usize::MAX, true).now_or_never() else {
            break;
        };
        if !reader.take(chunk) {
            return;
        }
    }
    tokio::spawn(reader.run());
}

/// Reads one stream into the core until the core is done with it or detaches it.
struct Reader {
    engine: Arc<Engine>,
    id: u64,
    /// Taken when the core detaches the stream.
    recv: Option<quinn::RecvStream>,
    send: Option<quinn::SendStream>,
    /// Made, and registered with the state, by the first feed that does not detach the
    /// stream: under that feed's lock, before the core's actions are carried out, so a
    /// STOP_SENDING the core decides on at once finds it. A WebTransport stream whose
    /// preamble came with its first bytes (nearly all) never needs one.
    stop: Option<Arc<StopSignal>>,
}

impl Reader {
    async fn run(mut self) {
        loop {
            let Some(stream) = self.recv.as_mut() else {
                return;
            };
            let chunk = match &self.stop {
                None => stream.read_chunk(usize::MAX, true).await,
                Some(stop) => tokio::select! {
                    biased;
                    c = stream.read_chunk(usize::MAX, true) => c,
                    _ = stop.notify.notified() => Ok(Some(quinn::Chunk { offset: 0, bytes: Bytes::new() })),
                },
            };
            if !self.take(chunk) {
                return;
            }
        }
    }

    /// Feeds what one read gave to the core; `false` once the stream is no longer read
    /// here.
    fn take(&mut self, chunk: Result<Option<quinn::Chunk>, quinn::ReadError>) -> bool {
        let (engine, id) = (&self.engine, self.id);
        let Some(stream) = self.recv.as_mut() else {
            return false;
        };
        if let Some(code) = self.stop.as_ref().and_then(|s| s.take()) {
            let _ = stream.stop(quinn_code(code));
            engine.update(|st| st.unwatch_reader(id));
            return false;
        }
        let (data, fin) = match chunk {
            Ok(Some(c)) => (c.bytes, false),
            Ok(None) => (Bytes::new(), true),
            Err(quinn::ReadError::Reset(code)) => {
                engine.update(|st| st.reader_reset(id, h3_code(code)));
                return false;
            }
            Err(e) => {
                // The connection is gone (or the stream was stopped here). Its error is
                // recorded now, since this may come before the driver sees the close.
                let error = match e {
                    quinn::ReadError::ConnectionLost(c) => Some(ConnectionError::from_quinn(&c)),
                    _ => None,
                };
                engine.update(|st| st.reader_lost(id, error));
                return false;
            }
        };
        if data.is_empty() && !fin {
            return true;
        }
        // What the feed decides about the stream's halves is carried out under the same
        // lock, before the core's events are delivered: a detached stream must be where
        // its `IncomingStream` looks for it, and a request stream's answer must find its
        // sending half.
        let done = |st: &mut super::state::State, feed: &Feed| {
            // Once its STOP_SENDING, if any, has reached the signal.
            if *feed == Feed::Done || (fin && *feed == Feed::Continue) {
                st.unwatch_reader(id);
            }
        };
        let (recv, send, stop) = (&mut self.recv, &mut self.send, &mut self.stop);
        let feed = engine.update_then(
            |st| {
                if stop.as_ref().is_some_and(|s| s.is_stopped()) {
                    // The core refused the stream since the last feed (a request whose
                    // headers timed out): it has forgotten it, and would take these
                    // bytes for a new stream's.
                    return Feed::Done;
                }
                let feed = st.feed(id, data, fin);
                if feed != Feed::Detach && stop.is_none() {
                    let signal = Arc::new(StopSignal::default());
                    st.watch_reader(id, signal.clone());
                    *stop = Some(signal);
                }
                match feed {
                    Feed::Continue => {}
                    Feed::Request => {
                        if let Some(s) = send.take() {
                            st.register_request_stream(id, s);
                        }
                    }
                    Feed::Detach => {
                        if let Some(r) = recv.take() {
                            st.detached(id, r, send.take());
                        }
                    }
                    Feed::Done => {
                        if let Some(s) = send.take() {
                            // A request stream refused before its HEADERS still gets the
                            // core's answer (a reset, or a status) on its sending half.
                            st.register_request_stream(id, s);
                        }
                    }
                }
                feed
            },
            done,
        );
        match feed {
            Feed::Continue => {}
            // What the core already answered on it can be written now.
            Feed::Request => engine.wake_driver(),
            Feed::Detach => return false,
            Feed::Done => {
                let code = self.stop.as_ref().and_then(|s| s.take());
                if let (Some(code), Some(r)) = (code, self.recv.as_mut()) {
                    let _ = r.stop(quinn_code(code));
                }
                engine.wake_driver();
                // A CONNECT stream the peer closed: a graceful close may be waiting for it.
                engine.notify_progress();
                return false;
            }
        }
        if fin {
            engine.notify_progress();
            return false;
        }
        true
    }
}
