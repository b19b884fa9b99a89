//! Instructions on the QPACK encoder stream (RFC 9204 §4.3) and decoder stream
//! (RFC 9204 §4.4), as a decoder that advertised a maximum table capacity of 0 sees them.
//!
//! Both streams are unframed, so the parsers are streaming: `Ok(None)` means the buffer
//! ends inside an instruction and the caller should wait for more bytes. Instructions
//! that are errors for us are rejected from their first byte, so no string on these
//! streams is ever buffered.

use bytes::{BufMut, Bytes};

use super::primitive::{decode_int, encode_int, encode_string, int_len, string_len};
use super::{Cause, QpackError};

/// An instruction on the QPACK encoder stream (RFC 9204 §4.3).
///
/// [`parse_encoder_instruction`] only ever yields `SetDynamicTableCapacity(0)`: with our
/// maximum table capacity of 0 everything else is an error. The other variants exist so
/// that every instruction can be encoded (tests, and an encoder that a peer lets use a
/// dynamic table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderInstruction {
    /// Set Dynamic Table Capacity (§4.3.1).
    SetDynamicTableCapacity(u64),
    /// Insert with Name Reference (§4.3.2).
    InsertWithNameReference {
        /// The name comes from the static table (T=1) rather than the dynamic table.
        static_table: bool,
        /// The index of the entry whose name is used.
        name_index: u64,
        /// The new entry's value.
        value: Bytes,
    },
    /// Insert with Literal Name (§4.3.3).
    InsertWithLiteralName {
        /// The new entry's name.
        name: Bytes,
        /// The new entry's value.
        value: Bytes,
    },
    /// Duplicate (§4.3.4), by relative index.
    Duplicate(u64),
}

impl EncoderInstruction {
    /// Writes the instruction; strings are Huffman-coded when that is shorter.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            Self::SetDynamicTableCapacity(cap) => encode_int(*cap, 5, 0x20, out),
            Self::InsertWithNameReference {
                static_table,
                name_index,
                value,
            } => {
                let t = if *static_table { 0x40 } else { 0 };
                encode_int(*name_index, 6, 0x80 | t, out);
                encode_string(value, 8, 0, out);
            }
            Self::InsertWithLiteralName { name, value } => {
                encode_string(name, 6, 0x40, out);
                encode_string(value, 8, 0, out);
            }
            Self::Duplicate(index) => encode_int(*index, 5, 0x00, out),
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::SetDynamicTableCapacity(cap) => int_len(*cap, 5),
            Self::InsertWithNameReference {
                name_index, value, ..
            } => int_len(*name_index, 6) + string_len(value, 8),
            Self::InsertWithLiteralName { name, value } => {
                string_len(name, 6) + string_len(value, 8)
            }
            Self::Duplicate(index) => int_len(*index, 5),
        }
    }
}

/// Parses one instruction from the front of the encoder stream `buf`, for a decoder whose
/// maximum dynamic table capacity is 0.
///
/// Returns the instruction and the bytes it took, or `Ok(None)` when `buf` ends inside it.
/// Errors are all [`Code::QPACK_ENCODER_STREAM_ERROR`](crate::Code::QPACK_ENCODER_STREAM_ERROR).
pub fn parse_encoder_instruction(
    buf: &[u8],
) -> Result<Option<(EncoderInstruction, usize)>, QpackError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let reject = |cause| Err(QpackError::EncoderStream(cause));
    if first & 0x80 != 0 {
        // RFC 9204 §3.2.2: adding an entry larger than the capacity (every entry is at
        // least 32 bytes, our capacity is 0) MUST be a QPACK_ENCODER_STREAM_ERROR.
        return reject(Cause::UnexpectedInsert("Insert with Name Reference"));
    }
    if first & 0x40 != 0 {
        // RFC 9204 §3.2.2, as above.
        return reject(Cause::UnexpectedInsert("Insert with Literal Name"));
    }
    if first & 0x20 == 0 {
        // RFC 9204 §2.2.3: a reference in an encoder instruction to an entry that does not
        // exist (our table is always empty) MUST be a QPACK_ENCODER_STREAM_ERROR.
        return reject(Cause::UnexpectedInsert("Duplicate"));
    }
    let Some((capacity, len)) = decode_int(buf, 5).map_err(QpackError::EncoderStream)? else {
        return Ok(None);
    };
    // RFC 9204 §4.3.1: "The decoder MUST treat a new dynamic table capacity value that
    // exceeds this limit as a connection error of type QPACK_ENCODER_STREAM_ERROR."
    // Capacity 0 itself is accepted although §3.2.3 says an encoder facing a maximum of 0
    // MUST NOT send any encoder instruction: Chromium 156 sends exactly this byte (0x20).
    if capacity > 0 {
        return reject(Cause::TableCapacity(capacity));
    }
    Ok(Some((EncoderInstruction::SetDynamicTableCapacity(0), len)))
}

/// An instruction on the QPACK decoder stream (RFC 9204 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderInstruction {
    /// Section Acknowledgment (§4.4.1) for the field section on this stream id.
    SectionAcknowledgment(u64),
    /// Stream Cancellation (§4.4.2) of this stream id.
    StreamCancellation(u64),
    /// Insert Count Increment (§4.4.3) by this much.
    InsertCountIncrement(u64),
}

impl DecoderInstruction {
    /// Writes the instruction.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        match *self {
            Self::SectionAcknowledgment(id) => encode_int(id, 7, 0x80, out),
            Self::StreamCancellation(id) => encode_int(id, 6, 0x40, out),
            Self::InsertCountIncrement(n) => encode_int(n, 6, 0x00, out),
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        match *self {
            Self::SectionAcknowledgment(id) => int_len(id, 7),
            Self::StreamCancellation(id) | Self::InsertCountIncrement(id) => int_len(id, 6),
        }
    }
}

/// Parses one instruction from the front of the decoder stream `buf`, for an encoder that
/// never uses the dynamic table (ours: we only send sections with Required Insert Count 0).
///
/// Stream Cancellation is accepted (a peer may send it for any stream it abandons).
/// Returns the instruction and the bytes it took, or `Ok(None)` when `buf` ends inside it.
/// Errors are all [`Code::QPACK_DECODER_STREAM_ERROR`](crate::Code::QPACK_DECODER_STREAM_ERROR).
pub fn parse_decoder_instruction(
    buf: &[u8],
) -> Result<Option<(DecoderInstruction, usize)>, QpackError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (prefix, make): (u8, fn(u64) -> DecoderInstruction) = if first & 0x80 != 0 {
        (7, DecoderInstruction::SectionAcknowledgment)
    } else if first & 0x40 != 0 {
        (6, DecoderInstruction::StreamCancellation)
    } else {
        (6, DecoderInstruction::InsertCountIncrement)
    };
    let Some((value, len)) = decode_int(buf, prefix).map_err(QpackError::DecoderStream)? else {
        return Ok(None);
    };
    match make(value) {
        // RFC 9204 §4.4.1: a Section Acknowledgment for a stream on which every section
        // with a non-zero Required Insert Count is already acknowledged MUST be a
        // QPACK_DECODER_STREAM_ERROR. We never send such sections.
        DecoderInstruction::SectionAcknowledgment(id) => Err(QpackError::DecoderStream(
            Cause::UnexpectedSectionAcknowledgment(id),
        )),
        // RFC 9204 §4.4.3: an Increment of zero, or one beyond what the encoder has sent
        // (we insert nothing), MUST be a QPACK_DECODER_STREAM_ERROR.
        DecoderInstruction::InsertCountIncrement(n) => Err(QpackError::DecoderStream(
            Cause::UnexpectedInsertCountIncrement(n),
        )),
        ok @ DecoderInstruction::StreamCancellation(_) => Ok(Some((ok, len))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    fn encoded(i: &EncoderInstruction) -> Vec<u8> {
        let mut out = Vec::new();
        i.encode(&mut out);
        assert_eq!(out.len(), i.encoded_len(), "{i:?}");
        out
    }

    #[test]
    fn chromium_capacity_zero() {
        // vectors.json: qpack_encoder_stream_capacity0
        assert_eq!(
            parse_encoder_instruction(&[0x20]),
            Ok(Some((EncoderInstruction::SetDynamicTableCapacity(0), 1)))
        );
        // Followed by more bytes: only the first instruction is consumed.
        assert_eq!(
            parse_encoder_instruction(&[0x20, 0x20]),
            Ok(Some((EncoderInstruction::SetDynamicTableCapacity(0), 1)))
        );
        assert_eq!(parse_encoder_instruction(&[]), Ok(None));
    }

    #[test]
    fn encoder_instructions_encode_with_exact_length() {
        let all = [
            EncoderInstruction::SetDynamicTableCapacity(0),
            EncoderInstruction::SetDynamicTableCapacity(220),
            EncoderInstruction::InsertWithNameReference {
                static_table: true,
                name_index: 0,
                value: Bytes::from_static(b"www.example.com"),
            },
            EncoderInstruction::InsertWithNameReference {
                static_table: false,
                name_index: 70,
                value: Bytes::from_static(b"\x00binary"),
            },
            EncoderInstruction::InsertWithLiteralName {
                name: Bytes::from_static(b"custom-key"),
                value: Bytes::from_static(b"custom-value"),
            },
            EncoderInstruction::Duplicate(2),
            EncoderInstruction::Duplicate(1000),
        ];
        for i in &all {
            let bytes = encoded(i);
            let code = match i {
                EncoderInstruction::SetDynamicTableCapacity(0) => {
                    assert_eq!(
                        parse_encoder_instruction(&bytes),
                        Ok(Some((i.clone(), bytes.len())))
                    );
                    continue;
                }
                _ => parse_encoder_instruction(&bytes).unwrap_err().code(),
            };
            assert_eq!(code, Code::QPACK_ENCODER_STREAM_ERROR, "{i:?}");
        }
        // RFC 9204 Appendix B.2: Set Dynamic Table Capacity=220 is 3fbd01.
        assert_eq!(
            encoded(&EncoderInstruction::SetDynamicTableCapacity(220)),
            [0x3f, 0xbd, 0x01]
        );
        // Appendix B.4: Duplicate (Relative Index = 2) is 02.
        assert_eq!(encoded(&EncoderInstruction::Duplicate(2)), [0x02]);
    }

    #[test]
    fn encoder_stream_errors() {
        // RFC 9204 Appendix B.2, Set Dynamic Table Capacity=220: above our maximum of 0.
        let err = parse_encoder_instruction(&[0x3f, 0xbd, 0x01]).unwrap_err();
        assert_eq!(err, QpackError::EncoderStream(Cause::TableCapacity(220)));
        assert_eq!(err.code(), Code::QPACK_ENCODER_STREAM_ERROR);
        // Chromium's encoder stream with a dynamic table allowed (vectors.json
        // connect_header_block_dynamic.encoder_stream_hex) starts with capacity 4096.
        let err = parse_encoder_instruction(&[0x3f, 0xe1, 0x1f, 0xc0]).unwrap_err();
        assert_eq!(err, QpackError::EncoderStream(Cause::TableCapacity(4096)));
        // An insert is rejected from its first byte, before its strings arrive.
        for first in [0xc0u8, 0x80, 0x4a, 0x00, 0x1f] {
            let err = parse_encoder_instruction(&[first]).unwrap_err();
            assert_eq!(err.code(), Code::QPACK_ENCODER_STREAM_ERROR, "{first:#x}");
        }
        // Truncated capacity: need more bytes.
        assert_eq!(parse_encoder_instruction(&[0x3f]), Ok(None));
        assert_eq!(parse_encoder_instruction(&[0x3f, 0xbd]), Ok(None));
        // Overflowing capacity.
        let err = parse_encoder_instruction(&[
            0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ])
        .unwrap_err();
        assert_eq!(err, QpackError::EncoderStream(Cause::IntegerOverflow));
        assert_eq!(err.code(), Code::QPACK_ENCODER_STREAM_ERROR);
    }

    #[test]
    fn decoder_instructions() {
        for (i, ok) in [
            (DecoderInstruction::StreamCancellation(8), true),
            (DecoderInstruction::StreamCancellation(1 << 40), true),
            (DecoderInstruction::SectionAcknowledgment(4), false),
            (DecoderInstruction::SectionAcknowledgment(0), false),
            (DecoderInstruction::InsertCountIncrement(1), false),
            (DecoderInstruction::InsertCountIncrement(0), false),
        ] {
            let mut bytes = Vec::new();
            i.encode(&mut bytes);
            assert_eq!(bytes.len(), i.encoded_len(), "{i:?}");
            let parsed = parse_decoder_instruction(&bytes);
            if ok {
                assert_eq!(parsed, Ok(Some((i, bytes.len()))));
                for cut in 0..bytes.len() {
                    assert_eq!(parse_decoder_instruction(&bytes[..cut]), Ok(None));
                }
            } else {
                assert_eq!(
                    parsed.unwrap_err().code(),
                    Code::QPACK_DECODER_STREAM_ERROR,
                    "{i:?}"
                );
            }
        }
        // RFC 9204 Appendix B: 84 = Section Acknowledgment (stream=4), 48 = Stream
        // Cancellation (stream=8), 01 = Insert Count Increment (1).
        assert_eq!(
            parse_decoder_instruction(&[0x84]),
            Err(QpackError::DecoderStream(
                Cause::UnexpectedSectionAcknowledgment(4)
            ))
        );
        assert_eq!(
            parse_decoder_instruction(&[0x48]),
            Ok(Some((DecoderInstruction::StreamCancellation(8), 1)))
        );
        assert_eq!(
            parse_decoder_instruction(&[0x01]),
            Err(QpackError::DecoderStream(
                Cause::UnexpectedInsertCountIncrement(1)
            ))
        );
        // A Stream Cancellation whose stream id overflows.
        let mut overflow = vec![0x7f];
        overflow.extend([0xff; 11]);
        assert_eq!(
            parse_decoder_instruction(&overflow).unwrap_err(),
            QpackError::DecoderStream(Cause::IntegerOverflow)
        );
    }
}
