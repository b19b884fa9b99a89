//! The Baton message (draft-frindell-webtrans-devious-baton-00 §4.3):
//!
//! ```text
//! Baton Message {
//!   padding length (i),
//!   padding (..),
//!   baton (8),
//! }
//! ```
//!
//! A varint padding length, that many bytes of padding (any value; the receiver ignores
//! them), then the one-byte baton. A message is the whole of a stream (its sender finishes
//! the stream after it, §4.2) or the whole of a datagram (§4.4).
//!
//! [`Decoder`] takes the bytes in whatever pieces they arrive and never keeps the padding:
//! it only counts it down, so a message costs a few bytes of memory whatever its length.
//! It refuses a padding length over the limit it is given before reading any padding.

use webtransport_proto::varint::{self, VarInt};

/// Why bytes are not one Baton message. Each is a malformed message, which the draft
/// answers with the BRUH session error (§4.6; see
/// [`session_code::BRUH`](super::session_code::BRUH)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The stream or datagram ended inside the message (§4.6: "an incomplete Baton
    /// message").
    #[error("message ends early: {have} bytes, incomplete")]
    Truncated {
        /// Bytes of the message received before the end.
        have: u64,
    },
    /// Bytes followed the baton byte: a stream carries exactly one message.
    #[error("bytes after the baton")]
    TrailingBytes,
    /// The padding length is over the limit this side accepts.
    #[error("padding of {len} bytes is over the limit of {max}")]
    PaddingTooLong {
        /// The padding length the message declared.
        len: u64,
        /// The limit ([`BatonParams::max_padding`](super::BatonParams::max_padding)).
        max: u64,
    },
}

/// Where the decoder is inside a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the padding-length varint: its bytes so far.
    Length { buf: [u8; 8], have: usize },
    /// Skipping padding: bytes still to skip.
    Padding { left: u64 },
    /// Waiting for the baton byte.
    Baton,
    /// The message is complete.
    Done { baton: u8 },
}

/// Decodes one Baton message from the pieces of a stream or a datagram, with bounded memory.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    max_padding: u64,
    /// Bytes taken so far (for error reports).
    seen: u64,
}

impl Decoder {
    /// A decoder that refuses a padding length above `max_padding`.
    pub fn new(max_padding: u64) -> Self {
        Decoder {
            state: State::Length {
                buf: [0; 8],
                have: 0,
            },
            max_padding,
            seen: 0,
        }
    }

    /// Takes the next piece. Fails at once on a padding length over the limit, or on any
    /// byte after the baton.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), MessageError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Length { buf, have } => {
                    buf[*have] = data[0];
                    *have += 1;
                    data = &data[1..];
                    self.seen += 1;
                    // The first byte says how long the varint is (RFC 9000 §16).
                    let Some((len, _)) = varint::decode(&buf[..*have]) else {
                        continue;
                    };
                    if len > self.max_padding {
                        return Err(MessageError::PaddingTooLong {
                            len,
                            max: self.max_padding,
                        });
                    }
                    self.state = if len == 0 {
                        State::Baton
                    } else {
                        State::Padding { left: len }
                    };
                }
                State::Padding { left } => {
                    let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    self.seen += n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::Baton;
                    }
                }
                State::Baton => {
                    self.state = State::Done { baton: data[0] };
                    self.seen += 1;
                    data = &data[1..];
                }
                State::Done { .. } => return Err(MessageError::TrailingBytes),
            }
        }
        Ok(())
    }

    /// Whether nothing at all was fed.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// The baton, once the message is complete.
    pub fn baton(&self) -> Option<u8> {
        match self.state {
            State::Done { baton } => Some(baton),
            _ => None,
        }
    }

    /// The end of the stream or datagram: the baton, or [`MessageError::Truncated`].
    pub fn finish(&self) -> Result<u8, MessageError> {
        self.baton()
            .ok_or(MessageError::Truncated { have: self.seen })
    }
}

/// Decodes a whole message (a datagram's payload).
pub fn decode(bytes: &[u8], max_padding: u64) -> Result<u8, MessageError> {
    let mut d = Decoder::new(max_padding);
    d.feed(bytes)?;
    d.finish()
}

/// The padding length as it can go on the wire (at most 2^62 - 1).
pub(super) fn wire_padding(padding: u64) -> u64 {
    padding.min(VarInt::MAX.into_inner())
}

/// The header of a message with `padding` bytes of padding: its padding-length varint.
pub fn header(padding: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    varint::encode(wire_padding(padding), &mut out);
    out
}

/// Encodes a whole message with `padding` zero bytes of padding (for datagrams and tests;
/// this side's streams write large padding in pieces).
pub fn encode(baton: u8, padding: usize) -> Vec<u8> {
    let mut out = header(padding as u64);
    out.resize(out.len() + padding, 0);
    out.push(baton);
    out
}

/// The size of a message with `padding` bytes of padding.
#[cfg(test)]
fn encoded_len(padding: u64) -> u64 {
    let padding = wire_padding(padding);
    varint::encoded_len(padding) as u64 + padding + 1
}

/// The largest padding (at most `wanted`) such that the whole message fits in `max` bytes,
/// if any does.
pub fn padding_to_fit(max: usize, wanted: u64) -> Option<u64> {
    let max = max as u64;
    // The best padding for each length of its varint (1, 2, 4 or 8 bytes, each holding
    // values below 2^6, 2^14, 2^30, 2^62), the largest of which fits.
    [(1u64, 1u64 << 6), (2, 1 << 14), (4, 1 << 30), (8, 1 << 62)]
        .into_iter()
        .filter_map(|(len, limit)| {
            let room = max.checked_sub(len + 1)?;
            Some(room.min(limit - 1).min(wanted))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_each_varint_length() {
        for padding in [0usize, 1, 63, 64, 16_383, 16_384, 70_000] {
            for baton in [0u8, 1, 7, 255] {
                let bytes = encode(baton, padding);
                assert_eq!(bytes.len() as u64, encoded_len(padding as u64));
                assert_eq!(decode(&bytes, 1 << 20), Ok(baton), "padding {padding}");
            }
        }
    }

    #[test]
    fn the_smallest_message_is_two_bytes() {
        assert_eq!(encode(42, 0), [0x00, 42]);
        assert_eq!(decode(&[0x00, 42], 0), Ok(42));
        // A two-byte varint for a zero padding length is still one message.
        assert_eq!(decode(&[0x40, 0x00, 9], 0), Ok(9));
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let bytes = encode(200, 300);
        let mut d = Decoder::new(1000);
        for b in &bytes {
            assert_eq!(d.baton(), None);
            d.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(d.finish(), Ok(200));
    }

    #[test]
    fn truncation_anywhere_is_malformed() {
        let bytes = encode(5, 100);
        for cut in 0..bytes.len() {
            let r = decode(&bytes[..cut], 1000);
            assert_eq!(
                r,
                Err(MessageError::Truncated { have: cut as u64 }),
                "{cut}"
            );
        }
        // Inside a multi-byte varint.
        assert!(matches!(
            decode(&[0x80, 0x00], 1000),
            Err(MessageError::Truncated { have: 2 })
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed_at_once() {
        let mut bytes = encode(5, 3);
        bytes.push(0);
        assert_eq!(decode(&bytes, 10), Err(MessageError::TrailingBytes));
        let mut d = Decoder::new(10);
        d.feed(&encode(5, 3)).unwrap();
        assert_eq!(d.feed(&[1]), Err(MessageError::TrailingBytes));
    }

    #[test]
    fn padding_over_the_limit_is_refused_before_any_padding() {
        let mut d = Decoder::new(1000);
        // Only the varint of a 2^62 - 1 padding length: refused without more input.
        let err = d.feed(&header(VarInt::MAX.into_inner())).unwrap_err();
        assert_eq!(
            err,
            MessageError::PaddingTooLong {
                len: VarInt::MAX.into_inner(),
                max: 1000
            }
        );
        assert_eq!(decode(&encode(1, 1000), 1000), Ok(1));
        assert!(matches!(
            decode(&encode(1, 1001), 1000),
            Err(MessageError::PaddingTooLong { len: 1001, .. })
        ));
    }

    #[test]
    fn empty_input_is_recognisable() {
        let d = Decoder::new(0);
        assert!(d.is_empty());
        assert_eq!(d.finish(), Err(MessageError::Truncated { have: 0 }));
    }

    #[test]
    fn padding_is_fitted_to_a_datagram() {
        assert_eq!(padding_to_fit(1, 10), None);
        assert_eq!(padding_to_fit(2, 10), Some(0));
        assert_eq!(padding_to_fit(12, 10), Some(10));
        assert_eq!(padding_to_fit(11, 10), Some(9));
        // 65 bytes: a one-byte varint leaves 63 bytes of padding.
        assert_eq!(padding_to_fit(65, 1000), Some(63));
        // 66 bytes: 64 would need a two-byte varint (67 bytes), so 63 again.
        assert_eq!(padding_to_fit(66, 1000), Some(63));
        for max in 2..20_000usize {
            let p = padding_to_fit(max, u64::MAX).unwrap();
            assert!(encoded_len(p) <= max as u64, "{max}");
            assert!(
                encoded_len(p + 1) > max as u64 || p + 1 > max as u64,
                "{max}"
            );
        }
    }
}
