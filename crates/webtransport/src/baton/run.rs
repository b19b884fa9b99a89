//! The protocol engine both sides share: one loop owns the state (active batons, what the
//! peer must send next) and reacts to events; small tasks do the stream I/O, one task per
//! leg of a baton, so a slow stream never holds up the others.

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use super::message::{self, Decoder};
use super::{session_code, stream_code, BatonError, BatonOutcome, BatonParams, Carrier};
use crate::error::{OpenStreamError, ReadError, SessionError, WriteError};
use crate::session::{CloseInfo, Session};
use crate::stream::{RecvStream, SendStream};

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Server,
    Client,
}

/// The most read at once from a baton stream (padding is skipped in pieces of this size).
const READ_CHUNK: usize = 16 * 1024;

/// Padding up to this size is sent in one write with the rest of the message.
const ONE_WRITE: u64 = 16 * 1024;

/// Source of larger padding, written in pieces.
static ZEROS: [u8; 4096] = [0; 4096];

/// How a message leaves this side.
#[derive(Debug)]
enum How {
    /// On a new unidirectional stream.
    OpenUni,
    /// On a new bidirectional stream; the peer replies on it.
    OpenBidi,
    /// On the sending half of a bidirectional stream the peer opened.
    Reply(SendStream),
}

/// What a stream task reports.
#[derive(Debug)]
enum Leg {
    /// A stream ended: with a message, or (`value: None`) with no bytes at all. `sent` is
    /// what this side had sent on the stream (for `SelfBidi`); `reply` the sending half
    /// of a `PeerBidi` stream.
    Received {
        carrier: Carrier,
        sent: Option<u8>,
        value: Option<u8>,
        reply: Option<SendStream>,
    },
    /// The peer reset a stream before its message was complete.
    Reset { carrier: Carrier, sent: Option<u8> },
    /// A message went out and its stream is finished; `recv` is the reply half of a
    /// bidirectional stream this side opened.
    Sent {
        value: u8,
        send: SendStream,
        recv: Option<RecvStream>,
    },
    /// The peer stopped a stream before the message was out: the baton is lost.
    Lost {
        value: u8,
        due: Option<(Carrier, u8)>,
    },
    /// The peer acknowledged (or stopped) a stream that carried a 0.
    Acked,
    /// The session cannot go on.
    Failed(BatonError),
}

/// How the count of active batons reached 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Batons are still active.
    No,
    /// By a 0 received (or a reset): this side closes.
    Received,
    /// By a 0 this side sent: the peer closes.
    Sent,
}

/// The state of one side.
struct Baton {
    session: Session,
    role: Role,
    params: BatonParams,
    /// Batons neither at 0 nor reset (§4.5).
    active: u64,
    ending: Ending,
    /// The messages due on streams the peer opens next: which kind and which value.
    due: Vec<(Carrier, u8)>,
    /// Client: initial messages still to come from the server.
    initial_due: u64,
    /// Streams that carried a 0 and are not yet acknowledged by the peer.
    unacked_zeros: u64,
    /// Sending halves of peer-opened bidirectional streams that brought a 0: kept open
    /// (nothing is sent back) until the session ends.
    parked: Vec<SendStream>,
    tasks: JoinSet<Leg>,
    outcome: Counts,
}

/// The counters of [`BatonOutcome`].
#[derive(Debug, Default)]
struct Counts {
    initial: Option<u8>,
    received: u64,
    sent: u64,
    finished: u64,
    reset: u64,
    datagrams_received: u64,
    datagrams_sent: u64,
    datagrams_not_sent: u64,
}

pub(super) async fn run(
    session: Session,
    params: BatonParams,
    role: Role,
) -> Result<BatonOutcome, BatonError> {
    let mut b = Baton {
        active: params.count,
        ending: Ending::No,
        due: Vec::new(),
        initial_due: if role == Role::Client {
            params.count
        } else {
            0
        },
        unacked_zeros: 0,
        parked: Vec::new(),
        tasks: JoinSet::new(),
        outcome: Counts::default(),
        session,
        role,
        params,
    };
    if role == Role::Server {
        // §3.1: without a `baton` parameter the server chooses a random value in 1..=255.
        let initial = b.params.baton.unwrap_or_else(random_baton);
        b.outcome.initial = Some(initial);
        // §4.1: one unidirectional stream per baton, with the initial value, then FIN.
        for _ in 0..b.params.count {
            b.send(How::OpenUni, initial);
        }
    }
    let result = b.drive().await;
    if let Err(e) = &result {
        if let Some(code) = e.session_code() {
            debug!(session = %b.session.id(), code, error = %e, "closing the baton session");
            // The session may be gone already; then there is nobody to tell.
            let _ = b.session.close(code, &close_reason(e));
        }
    }
    // The tasks go (and their streams with them) only after the session is closed, so
    // the peer sees the close rather than a stop of each stream.
    let close = result?;
    let c = &b.outcome;
    Ok(BatonOutcome {
        count: b.params.count,
        initial: c.initial,
        batons_received: c.received,
        batons_sent: c.sent,
        batons_finished: c.finished,
        batons_reset: c.reset,
        datagrams_received: c.datagrams_received,
        datagrams_sent: c.datagrams_sent,
        datagrams_not_sent: c.datagrams_not_sent,
        close,
    })
}

/// What happened next.
enum Event {
    Leg(Result<Leg, tokio::task::JoinError>),
    Stream(Result<(Option<SendStream>, RecvStream), SessionError>),
    Datagram(Result<bytes::Bytes, SessionError>),
    Closed(Result<CloseInfo, SessionError>),
    Idle,
}

impl Baton {
    /// Reacts to events until the session ends; how it ended when that was clean.
    async fn drive(&mut self) -> Result<CloseInfo, BatonError> {
        let idle = self.params.idle_timeout;
        let mut deadline = idle.map(|d| Instant::now() + d);
        loop {
            // §4.5: "When the number of active batons reaches 0, the endpoint MUST close
            // the WebTransport session with no error." The side that received the last 0
            // does so once the peer has every 0 it sent; the side that sent it waits for
            // that close (up to the idle timeout, below), so as not to cut off its own
            // last message.
            if self.ending == Ending::Received && self.unacked_zeros == 0 {
                return self.close_clean();
            }
            let event = tokio::select! {
                biased;
                Some(done) = self.tasks.join_next() => Event::Leg(done),
                r = self.session.accept_uni() => Event::Stream(r.map(|recv| (None, recv))),
                r = self.session.accept_bi() => Event::Stream(r.map(|(s, r)| (Some(s), r))),
                r = self.session.read_datagram() => Event::Datagram(r),
                r = self.session.closed() => Event::Closed(r),
                _ = sleep_until(deadline), if deadline.is_some() => Event::Idle,
            };
            // Progress is what a stream brings: a flood of datagrams keeps nobody busy.
            if matches!(event, Event::Leg(_) | Event::Stream(_)) {
                deadline = idle.map(|d| Instant::now() + d);
            }
            match event {
                Event::Leg(Ok(Leg::Failed(e))) => {
                    // A stream failed because the session ended: say how it ended.
                    if e.session_code().is_none() && self.session.is_closed() {
                        return self.ended(self.session.closed().await);
                    }
                    return Err(e);
                }
                Event::Leg(Ok(leg)) => self.on_leg(leg)?,
                Event::Leg(Err(e)) => {
                    // Only a panic of our own code gets here (tasks are never aborted
                    // while the loop runs): let it go on.
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
                Event::Stream(Ok((send, recv))) => {
                    let carrier = if send.is_some() {
                        Carrier::PeerBidi
                    } else {
                        Carrier::Uni
                    };
                    self.read(recv, carrier, None, send);
                }
                Event::Stream(Err(e)) | Event::Datagram(Err(e)) => return self.ended(Err(e)),
                Event::Datagram(Ok(d)) => match message::decode(&d, self.params.max_padding) {
                    Ok(_) => self.outcome.datagrams_received += 1,
                    // §4.6: "If an endpoint receives a gracefully closed stream or
                    // datagram with an incomplete Baton message, it MUST close the
                    // WebTransport session with the BRUH session error code."
                    Err(e) => return Err(BatonError::Malformed(e)),
                },
                Event::Closed(r) => return self.ended(r),
                Event::Idle => {
                    let waited = idle.unwrap_or_default();
                    if self.ending == Ending::No {
                        // §4.6: "If an endpoint gets tired of waiting for the next Baton
                        // message, it MAY close the WebTransport session with the BORED
                        // error code."
                        return Err(BatonError::TimedOut(waited));
                    }
                    // Every baton ended and the peer did not close: §4.5's MUST falls
                    // to this side.
                    return self.close_clean();
                }
            }
        }
    }

    fn on_leg(&mut self, leg: Leg) -> Result<(), BatonError> {
        match leg {
            Leg::Received {
                carrier,
                sent,
                value: Some(v),
                reply,
            } => self.on_message(carrier, sent, v, reply),
            Leg::Received {
                carrier,
                sent,
                value: None,
                ..
            } => {
                if carrier == Carrier::SelfBidi && sent == Some(0) {
                    // The peer ended its half of the stream that brought it a 0.
                    return Ok(());
                }
                // §4.6: a gracefully closed stream with an incomplete message is BRUH.
                Err(BatonError::Malformed(message::MessageError::Truncated {
                    have: 0,
                }))
            }
            Leg::Reset { carrier, sent } => {
                let counts = match carrier {
                    // Our 0 already ended this baton.
                    Carrier::SelfBidi => sent != Some(0),
                    // A stream of the peer's: a baton only if a message of its kind was
                    // due (its value is unknown, so any one of them).
                    Carrier::Uni | Carrier::PeerBidi => {
                        if let Some(i) = self.due.iter().position(|(c, _)| *c == carrier) {
                            self.due.swap_remove(i);
                            true
                        } else if carrier == Carrier::Uni && self.initial_due > 0 {
                            self.initial_due -= 1;
                            true
                        } else {
                            debug!(session = %self.session.id(), %carrier, "ignoring a reset stream that carried no baton");
                            false
                        }
                    }
                };
                if counts {
                    self.end_baton(false, Ending::Received);
                }
                Ok(())
            }
            Leg::Sent { value, send, recv } => {
                self.outcome.sent += 1;
                if let Some(recv) = recv {
                    self.read(recv, Carrier::SelfBidi, Some(value), None);
                }
                if value == 0 {
                    self.unacked_zeros += 1;
                    self.tasks.spawn(acked(send));
                    self.end_baton(true, Ending::Sent);
                }
                Ok(())
            }
            Leg::Lost { value, due } => {
                if let Some(i) = due.and_then(|d| self.due.iter().position(|x| *x == d)) {
                    self.due.swap_remove(i);
                }
                debug!(session = %self.session.id(), value, "baton lost to a stopped stream");
                self.end_baton(false, Ending::Received);
                Ok(())
            }
            Leg::Acked => {
                self.unacked_zeros = self.unacked_zeros.saturating_sub(1);
                Ok(())
            }
            Leg::Failed(e) => Err(e),
        }
    }

    /// A message `v` arrived complete on `carrier` (§4.2).
    fn on_message(
        &mut self,
        carrier: Carrier,
        sent: Option<u8>,
        v: u8,
        reply: Option<SendStream>,
    ) -> Result<(), BatonError> {
        // §4.2: "If an endpoint receives a baton message with an unexpected value, it MAY
        // close the WebTransport session with the SUS session error code." It does.
        let expected = match carrier {
            Carrier::SelfBidi => sent.is_some_and(|s| s != 0 && v == s.wrapping_add(1)),
            Carrier::Uni | Carrier::PeerBidi => {
                if let Some(i) = self.due.iter().position(|d| *d == (carrier, v)) {
                    self.due.swap_remove(i);
                    true
                } else if carrier == Carrier::Uni
                    && self.initial_due > 0
                    && self.params.baton.map_or(v != 0, |b| b == v)
                {
                    self.initial_due -= 1;
                    self.outcome.initial.get_or_insert(v);
                    true
                } else {
                    false
                }
            }
        };
        if !expected || self.active == 0 {
            return Err(BatonError::Unexpected { value: v, carrier });
        }
        self.outcome.received += 1;
        // §4.4: a client sends a datagram on a baton = 1 mod 7, a server on 0 mod 7.
        let residue = if self.role == Role::Client { 1 } else { 0 };
        if v % 7 == residue {
            self.datagram(v);
        }
        if v == 0 {
            // §4.2: a 0 ends the baton; nothing is sent back.
            self.parked.extend(reply);
            self.end_baton(true, Ending::Received);
            return Ok(());
        }
        // §4.2: "If the value of the baton is not 0, the endpoint MUST send a new Baton
        // message with a baton value equal to the incoming baton value + 1 modulo 256",
        // on a stream chosen by how the incoming one arrived.
        let next = v.wrapping_add(1);
        let how = match carrier {
            Carrier::Uni => How::OpenBidi,
            Carrier::PeerBidi => match reply {
                Some(send) => How::Reply(send),
                None => return Err(BatonError::Unexpected { value: v, carrier }),
            },
            Carrier::SelfBidi => How::OpenUni,
        };
        self.send(how, next);
        Ok(())
    }

    /// Starts sending `value` (§4.2) and notes what the peer must answer on a stream of its
    /// own: a bidirectional one after a unidirectional stream of ours, a unidirectional one
    /// after our reply on its bidirectional stream. (After a bidirectional stream of ours
    /// the answer comes on that stream.)
    fn send(&mut self, how: How, value: u8) {
        let due_kind = match how {
            How::OpenUni => Some(Carrier::PeerBidi),
            How::Reply(_) => Some(Carrier::Uni),
            How::OpenBidi => None,
        };
        let due = due_kind
            .filter(|_| value != 0)
            .map(|kind| (kind, value.wrapping_add(1)));
        self.due.extend(due);
        self.tasks.spawn(send_leg(
            self.session.clone(),
            how,
            value,
            self.params.padding,
            due,
        ));
    }

    /// Starts reading the message of a stream.
    fn read(
        &mut self,
        recv: RecvStream,
        carrier: Carrier,
        sent: Option<u8>,
        reply: Option<SendStream>,
    ) {
        self.tasks.spawn(read_leg(
            recv,
            carrier,
            sent,
            reply,
            self.params.max_padding,
        ));
    }

    /// One baton fewer (§4.5: "Each time a baton exchange completes or is reset, the
    /// number of active batons is decreased by 1").
    fn end_baton(&mut self, finished: bool, how: Ending) {
        if self.active == 0 {
            return;
        }
        self.active -= 1;
        if finished {
            self.outcome.finished += 1;
        } else {
            self.outcome.reset += 1;
        }
        if self.active == 0 {
            self.ending = how;
        }
    }

    /// Sends `v` in a datagram (§4.4), padded as much as fits. Datagrams are unreliable:
    /// one that cannot be sent is counted, not an error.
    fn datagram(&mut self, v: u8) {
        // §4.4: "a Baton message in a datagram MUST use a padding value small enough such
        // that the entire Baton message fits in a single datagram."
        let padding = self
            .session
            .max_datagram_size()
            .and_then(|max| message::padding_to_fit(max, self.params.datagram_padding));
        let sent = padding.is_some_and(|p| {
            let d = message::encode(v, usize::try_from(p).unwrap_or(0));
            self.session.send_datagram(&d).is_ok()
        });
        if sent {
            self.outcome.datagrams_sent += 1;
        } else {
            self.outcome.datagrams_not_sent += 1;
        }
    }

    /// Closes without error (§4.5).
    fn close_clean(&self) -> Result<CloseInfo, BatonError> {
        match self.session.close(0, "") {
            Ok(()) => Ok(CloseInfo {
                code: 0,
                reason: String::new(),
                remote: false,
            }),
            // The peer closed first.
            Err(e) => self.ended(Err(e)),
        }
    }

    /// The session ended: cleanly if the peer closed it without error once every baton
    /// was over.
    fn ended(&self, end: Result<CloseInfo, SessionError>) -> Result<CloseInfo, BatonError> {
        let info = match end {
            Ok(info) => info,
            Err(SessionError::Closed {
                code,
                reason,
                remote,
            }) => CloseInfo {
                code,
                reason,
                remote,
            },
            Err(e) => return Err(BatonError::Session(e)),
        };
        if info.code == 0 && self.active == 0 {
            return Ok(info);
        }
        Err(BatonError::PeerClosed {
            code: info.code,
            reason: info.reason,
            active: self.active,
        })
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Reads one message from `recv` to the end of the stream.
async fn read_leg(
    mut recv: RecvStream,
    carrier: Carrier,
    sent: Option<u8>,
    reply: Option<SendStream>,
    max_padding: u64,
) -> Leg {
    let mut decoder = Decoder::new(max_padding);
    loop {
        match recv.read_chunk(READ_CHUNK).await {
            Ok(Some(chunk)) => {
                if let Err(e) = decoder.feed(&chunk) {
                    return Leg::Failed(BatonError::Malformed(e));
                }
            }
            Ok(None) => break,
            Err(ReadError::Reset(code)) => {
                debug!(stream = recv.id(), ?code, "baton stream reset by the peer");
                // §4.6: "Upon receipt of [...] a RESET_STREAM on a bidirectional stream,
                // the endpoint MUST send a RESET_STREAM for that stream with the WHATEVER
                // stream error code unless it has already closed the stream." Only the
                // reply half of a peer's stream is still open here (ours is finished).
                if let Some(mut send) = reply {
                    let _ = send.reset(stream_code::WHATEVER);
                }
                return Leg::Reset { carrier, sent };
            }
            Err(e) => return Leg::Failed(BatonError::Read(e)),
        }
    }
    if decoder.is_empty() {
        return Leg::Received {
            carrier,
            sent,
            value: None,
            reply,
        };
    }
    match decoder.finish() {
        Ok(v) => Leg::Received {
            carrier,
            sent,
            value: Some(v),
            reply,
        },
        // §4.6: an incomplete message on a gracefully closed stream is BRUH.
        Err(e) => Leg::Failed(BatonError::Malformed(e)),
    }
}

/// Opens the stream if need be, writes the message and finishes the stream (§4.2: "After
/// sending the Baton message, the endpoint MUST send a FIN on the stream").
async fn send_leg(
    session: Session,
    how: How,
    value: u8,
    padding: u64,
    due: Option<(Carrier, u8)>,
) -> Leg {
    let opened = match how {
        How::OpenUni => session.open_uni().await.map(|s| (s, None)),
        How::OpenBidi => session.open_bi().await.map(|(s, r)| (s, Some(r))),
        How::Reply(s) => Ok((s, None)),
    };
    let (mut send, recv) = match opened {
        Ok(o) => o,
        Err(e) => return Leg::Failed(open_error(e)),
    };
    let written = match write_message(&mut send, value, padding).await {
        Ok(()) => send.finish(),
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => Leg::Sent { value, send, recv },
        Err(WriteError::Stopped(code)) => {
            debug!(
                stream = send.id(),
                ?code,
                "baton stream stopped by the peer"
            );
            // §4.6: "Upon receipt of a STOP_SENDING on a stream [...] the endpoint MUST
            // send a RESET_STREAM for that stream with the WHATEVER stream error code".
            let _ = send.reset(stream_code::WHATEVER);
            if let Some(mut recv) = recv {
                // §4.6: "STOP_SENDING MUST use the IDC stream error code." (Dropping the
                // half unread would stop it with 0.)
                let _ = recv.stop(stream_code::IDC);
            }
            Leg::Lost { value, due }
        }
        Err(e) => Leg::Failed(BatonError::Write(e)),
    }
}

/// Waits until the peer has a stream that carried a 0 (or stopped it).
async fn acked(mut send: SendStream) -> Leg {
    let _ = send.stopped().await;
    Leg::Acked
}

/// §4.2: "If the endpoint has insufficient stream credit to open the correct type of
/// stream, it MUST close the WebTransport session with the DA_YAMN session error code."
/// (§4.1 says the same of the server's first streams.)
fn open_error(e: OpenStreamError) -> BatonError {
    match e {
        OpenStreamError::Timeout(_) => BatonError::StreamCredit(e),
        other => BatonError::Open(other),
    }
}

/// Writes one message, the padding as zeros.
async fn write_message(send: &mut SendStream, value: u8, padding: u64) -> Result<(), WriteError> {
    let padding = message::wire_padding(padding);
    if padding <= ONE_WRITE {
        // Bounded by ONE_WRITE, so the cast cannot truncate.
        return send
            .write_all(&message::encode(value, padding as usize))
            .await;
    }
    send.write_all(&message::header(padding)).await?;
    let mut left = padding;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        send.write_all(&ZEROS[..n]).await?;
        left -= n as u64;
    }
    send.write_all(&[value]).await
}

/// A random initial baton in 1..=255.
fn random_baton() -> u8 {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut b = [0u8; 1];
    for _ in 0..16 {
        if rng.fill(&mut b).is_ok() && b[0] != 0 {
            return b[0];
        }
    }
    // The system's generator failed: any valid value will do for a test protocol.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    1 + (nanos % 255) as u8
}

/// The close reason for an error (the reason field holds at most 1024 bytes).
fn close_reason(e: &BatonError) -> String {
    let name = match e.session_code() {
        Some(session_code::DA_YAMN) => "DA_YAMN",
        Some(session_code::BRUH) => "BRUH",
        Some(session_code::SUS) => "SUS",
        Some(session_code::BORED) => "BORED",
        _ => "error",
    };
    let mut reason = format!("{name}: {e}");
    if let Some(source) = std::error::Error::source(e) {
        reason.push_str(&format!(": {source}"));
    }
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_batons_are_never_zero() {
        for _ in 0..1000 {
            assert_ne!(random_baton(), 0);
        }
    }

    #[test]
    fn close_reasons_name_the_code_and_fit() {
        let e = BatonError::Unexpected {
            value: 9,
            carrier: Carrier::Uni,
        };
        assert!(close_reason(&e).starts_with("SUS: unexpected baton 9"));
        let e = BatonError::Malformed(message::MessageError::PaddingTooLong { len: 5, max: 1 });
        let r = close_reason(&e);
        assert!(
            r.starts_with("BRUH: ") && r.contains("over the limit"),
            "{r}"
        );
        let e = BatonError::PeerClosed {
            code: 0,
            reason: "é".repeat(2000),
            active: 1,
        };
        assert!(close_reason(&e).len() <= 1024);
    }
}
