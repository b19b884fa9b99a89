//! QPACK field compression (RFC 9204) without a dynamic table.
//!
//! We advertise `SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0` and `SETTINGS_QPACK_BLOCKED_STREAMS
//! = 0`, so a conforming peer only uses the static table and literals, and no stream can
//! ever block on the encoder stream. What this module offers:
//!
//! ```text
//!  HEADERS payload ──▶ decode_field_section ──▶ Vec<HeaderField> ──▶ headers::ConnectRequest
//!  &[HeaderField]  ──▶ encode_field_section ──▶ HEADERS payload (prefix 0,0; static + literals)
//!  encoder stream  ──▶ parse_encoder_instruction (accepts only "capacity = 0")
//!  decoder stream  ──▶ parse_decoder_instruction (accepts only Stream Cancellation)
//! ```
//!
//! Every parser takes a byte slice, never panics, and allocates at most a small multiple
//! of its input: a length field longer than the remaining input is an error. Errors map
//! to wire codes in one place, [`QpackError::code`].
//!
//! Field-name rules of HTTP (lowercase names, pseudo-header order) are not QPACK's
//! business; [`crate::headers`] checks them.

use bytes::{BufMut, Bytes};

use crate::error::Code;

pub mod huffman;
mod instruction;
mod primitive;
pub mod static_table;

pub use huffman::HuffmanError;
pub use instruction::{
    parse_decoder_instruction, parse_encoder_instruction, DecoderInstruction, EncoderInstruction,
};

use primitive::{decode_int, decode_string, encode_int, encode_string, int_len, string_len};
use static_table::Match;

/// One field line: a name and a value, both raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderField {
    /// The field name (lowercase in valid HTTP/3 messages).
    pub name: Bytes,
    /// The field value.
    pub value: Bytes,
}

impl HeaderField {
    /// A field line from anything that converts into [`Bytes`] (`&'static str`,
    /// `String`, `Vec<u8>`, ...).
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The size this line counts for against a field section limit: name and value
    /// length plus 32 (RFC 9114 §4.2.2).
    pub fn size(&self) -> u64 {
        self.name.len() as u64 + self.value.len() as u64 + 32
    }
}

/// Why QPACK input from the peer was rejected. Every variant is a connection error; see
/// [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QpackError {
    /// An encoded field section could not be decoded.
    #[error("cannot decode QPACK field section: {0}")]
    Decompression(Cause),
    /// The decoded field section is larger than the limit we advertised in
    /// SETTINGS_MAX_FIELD_SECTION_SIZE.
    #[error("field section exceeds {max} bytes (at least {size} so far)")]
    FieldSectionTooLarge {
        /// The size counted when the limit was crossed (RFC 9114 §4.2.2 rules).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An instruction on the peer's encoder stream was invalid.
    #[error("bad QPACK encoder stream instruction: {0}")]
    EncoderStream(Cause),
    /// An instruction on the peer's decoder stream was invalid.
    #[error("bad QPACK decoder stream instruction: {0}")]
    DecoderStream(Cause),
}

impl QpackError {
    /// The HTTP/3 error code to close the connection with (RFC 9204 §6, RFC 9114 §8.1).
    pub fn code(&self) -> Code {
        match self {
            Self::Decompression(_) => Code::QPACK_DECOMPRESSION_FAILED,
            Self::FieldSectionTooLarge { .. } => Code::H3_EXCESSIVE_LOAD,
            Self::EncoderStream(_) => Code::QPACK_ENCODER_STREAM_ERROR,
            Self::DecoderStream(_) => Code::QPACK_DECODER_STREAM_ERROR,
        }
    }
}

/// What exactly was wrong with QPACK input; [`QpackError`] says where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The input ended inside a representation.
    #[error("input ends inside a representation")]
    Truncated,
    /// A prefixed integer is 2^62 or more, or takes more than 10 bytes.
    #[error("integer exceeds 62 bits")]
    IntegerOverflow,
    /// A string literal claims more bytes than remain.
    #[error("string literal of {len} bytes but only {available} remain")]
    StringTruncated {
        /// The declared length.
        len: u64,
        /// The bytes left in the input.
        available: usize,
    },
    /// A Huffman-coded string is invalid.
    #[error(transparent)]
    Huffman(HuffmanError),
    /// A non-zero (encoded) Required Insert Count: impossible with our table capacity of 0.
    #[error("encoded required insert count {0} but our dynamic table capacity is 0")]
    RequiredInsertCount(u64),
    /// The Base is negative (sign bit set with Required Insert Count 0).
    #[error("negative base")]
    NegativeBase,
    /// A reference to the dynamic table, which is always empty.
    #[error("reference to dynamic table entry {0}, but the table is empty")]
    DynamicReference(u64),
    /// A post-Base reference to the dynamic table, which is always empty.
    #[error("post-base reference {0}, but the dynamic table is empty")]
    PostBaseReference(u64),
    /// A static table index past the last entry (98).
    #[error("static table index {0} out of range")]
    StaticIndex(u64),
    /// A dynamic table capacity above our maximum of 0.
    #[error("dynamic table capacity {0} exceeds our maximum of 0")]
    TableCapacity(u64),
    /// An instruction that inserts into or references the dynamic table.
    #[error("{0} instruction, but our dynamic table capacity is 0")]
    UnexpectedInsert(&'static str),
    /// A Section Acknowledgment, but we never send sections that need one.
    #[error("section acknowledgment for stream {0}, but no section referenced the dynamic table")]
    UnexpectedSectionAcknowledgment(u64),
    /// An Insert Count Increment, but we never insert.
    #[error("insert count increment of {0}, but we never insert into the dynamic table")]
    UnexpectedInsertCountIncrement(u64),
}

/// Decodes a complete encoded field section (the payload of a HEADERS frame), for a
/// decoder with dynamic table capacity 0.
///
/// Fields come back in wire order. Names and values from the static table borrow
/// `'static` data; literals are copied. `max_field_section_size` is the limit we
/// advertised (SETTINGS_MAX_FIELD_SECTION_SIZE), counted as RFC 9114 §4.2.2 says.
pub fn decode_field_section(
    buf: &[u8],
    max_field_section_size: u64,
) -> Result<Vec<HeaderField>, QpackError> {
    let mut r = Reader { buf };
    r.prefix().map_err(QpackError::Decompression)?;
    let mut fields = Vec::new();
    let mut size: u64 = 0;
    while let Some(field) = r.field_line().map_err(QpackError::Decompression)? {
        size = size.saturating_add(field.size());
        if size > max_field_section_size {
            return Err(QpackError::FieldSectionTooLarge {
                size,
                max: max_field_section_size,
            });
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Encodes `fields` as a field section with no dynamic table references: prefix 0, 0,
/// then for each field an indexed line for an exact static-table match, a literal with a
/// static name reference when only the name matches, and a literal name otherwise.
/// Strings are Huffman-coded when that is shorter. Writes exactly
/// [`encoded_field_section_len`] bytes.
///
/// Nothing is validated: field names should already be lowercase.
pub fn encode_field_section<B: BufMut>(fields: &[HeaderField], out: &mut B) {
    // RFC 9204 §4.5.1: Required Insert Count 0, then Sign 0 and Delta Base 0.
    out.put_u8(0);
    out.put_u8(0);
    for field in fields {
        match static_table::find(&field.name, &field.value) {
            // §4.5.2 Indexed Field Line, T=1: 11xxxxxx.
            Some(Match::Exact(i)) => encode_int(u64::from(i), 6, 0xc0, out),
            // §4.5.4 Literal Field Line with Name Reference, N=0, T=1: 0101xxxx.
            Some(Match::Name(i)) => {
                encode_int(u64::from(i), 4, 0x50, out);
                encode_string(&field.value, 8, 0, out);
            }
            // §4.5.6 Literal Field Line with Literal Name, N=0: 001 0 H xxx.
            None => {
                encode_string(&field.name, 4, 0x20, out);
                encode_string(&field.value, 8, 0, out);
            }
        }
    }
}

/// The number of bytes [`encode_field_section`] writes for `fields`.
pub fn encoded_field_section_len(fields: &[HeaderField]) -> usize {
    2 + fields
        .iter()
        .map(
            |field| match static_table::find(&field.name, &field.value) {
                Some(Match::Exact(i)) => int_len(u64::from(i), 6),
                Some(Match::Name(i)) => int_len(u64::from(i), 4) + string_len(&field.value, 8),
                None => string_len(&field.name, 4) + string_len(&field.value, 8),
            },
        )
        .sum::<usize>()
}

/// A cursor over a complete field section.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn advance(&mut self, n: usize) {
        self.buf = self.buf.get(n..).unwrap_or_default();
    }

    /// An integer that must be complete.
    fn int(&mut self, prefix: u8) -> Result<u64, Cause> {
        let (value, n) = decode_int(self.buf, prefix)?.ok_or(Cause::Truncated)?;
        self.advance(n);
        Ok(value)
    }

    fn string(&mut self, prefix: u8) -> Result<Bytes, Cause> {
        let (value, n) = decode_string(self.buf, prefix)?;
        self.advance(n);
        Ok(value)
    }

    fn static_entry(index: u64) -> Result<(&'static [u8], &'static [u8]), Cause> {
        // RFC 9204 §3.1: "When the decoder encounters an invalid static table index in a
        // field line representation, it MUST treat this as a connection error of type
        // QPACK_DECOMPRESSION_FAILED."
        static_table::get(index).ok_or(Cause::StaticIndex(index))
    }

    /// The Encoded Field Section Prefix (RFC 9204 §4.5.1).
    fn prefix(&mut self) -> Result<(), Cause> {
        let required_insert_count = self.int(8)?;
        // RFC 9204 §4.5.1.1: with MaxEntries = 0 (our capacity), any non-zero encoded
        // Required Insert Count exceeds FullRange = 0, "a value of EncodedInsertCount that
        // could not have been produced by a conformant encoder", which MUST be treated as
        // QPACK_DECOMPRESSION_FAILED.
        if required_insert_count != 0 {
            return Err(Cause::RequiredInsertCount(required_insert_count));
        }
        let sign = self.buf.first().is_some_and(|b| b & 0x80 != 0);
        let _delta_base = self.int(7)?;
        // RFC 9204 §4.5.1.2: "An endpoint MUST treat a field block with a Sign bit of 1 as
        // invalid if the value of Required Insert Count is less than or equal to the value
        // of Delta Base." With Required Insert Count 0 that is every Sign bit of 1. With
        // Sign 0, any Base is allowed for a section without dynamic references.
        if sign {
            return Err(Cause::NegativeBase);
        }
        Ok(())
    }

    /// The next field line (RFC 9204 §4.5.2-§4.5.6), or `None` at the end.
    fn field_line(&mut self) -> Result<Option<HeaderField>, Cause> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let field = if first & 0x80 != 0 {
            // §4.5.2 Indexed Field Line: 1 T Index(6+).
            let index = self.int(6)?;
            if first & 0x40 == 0 {
                // RFC 9204 §2.2.3: a reference to a dynamic entry with an absolute index
                // >= Required Insert Count (0) MUST be QPACK_DECOMPRESSION_FAILED.
                return Err(Cause::DynamicReference(index));
            }
            let (name, value) = Self::static_entry(index)?;
            HeaderField::new(name, value)
        } else if first & 0x40 != 0 {
            // §4.5.4 Literal Field Line with Name Reference: 0 1 N T NameIndex(4+). The N
            // (never-index) bit only restricts how an intermediary re-encodes the line; we
            // decode both forms alike and never forward.
            let index = self.int(4)?;
            if first & 0x10 == 0 {
                // RFC 9204 §2.2.3, as above.
                return Err(Cause::DynamicReference(index));
            }
            let (name, _) = Self::static_entry(index)?;
            let value = self.string(8)?;
            HeaderField {
                name: Bytes::from_static(name),
                value,
            }
        } else if first & 0x20 != 0 {
            // §4.5.6 Literal Field Line with Literal Name: 0 0 1 N H NameLen(3+); the name
            // is a 4-bit prefix string, the N bit (0x10) is decoded as above.
            let name = self.string(4)?;
            let value = self.string(8)?;
            HeaderField { name, value }
        } else if first & 0x10 != 0 {
            // §4.5.3 Indexed Field Line with Post-Base Index: 0001 Index(4+).
            // RFC 9204 §2.2.3: every post-Base entry is >= Required Insert Count (0).
            return Err(Cause::PostBaseReference(self.int(4)?));
        } else {
            // §4.5.5 Literal Field Line with Post-Base Name Reference: 0000 N Index(3+).
            // RFC 9204 §2.2.3, as above.
            return Err(Cause::PostBaseReference(self.int(3)?));
        };
        Ok(Some(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::test_util::hex;

    fn encode_vec(fields: &[HeaderField]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_field_section(fields, &mut out);
        assert_eq!(out.len(), encoded_field_section_len(fields));
        out
    }

    fn decode_err(buf: &[u8]) -> QpackError {
        decode_field_section(buf, u64::MAX).unwrap_err()
    }

    /// vectors.json `connect_header_block_static_only`: Chromium 156's extended CONNECT
    /// when we advertised QPACK capacity 0.
    const CHROMIUM_STATIC_ONLY: &str = "0000d7cf508b089d5c0b8170dc6c01681f518460a49cff2f00b95d8749c87a3f89f058d360ea4567b13f2f0e4148b782c69b07522b3d895a74a6b65692c1ca900b01315f4b8694d416e30c7f";
    /// vectors.json `connect_header_block_dynamic`: the same request with a dynamic table
    /// allowed (Required Insert Count > 0).
    const CHROMIUM_DYNAMIC: &str = "0600d7cf8483828180";

    fn chromium_request() -> Vec<HeaderField> {
        [
            (":scheme", "https"),
            (":method", "CONNECT"),
            (":authority", "127.0.0.1:50140"),
            (":path", "/echo"),
            (":protocol", "webtransport"),
            ("sec-webtransport-http3-draft02", "1"),
            ("origin", "file://"),
        ]
        .into_iter()
        .map(|(n, v)| HeaderField::new(n, v))
        .collect()
    }

    #[test]
    fn chromium_static_only_vector() {
        let fields = decode_field_section(&hex(CHROMIUM_STATIC_ONLY), 16384).unwrap();
        assert_eq!(fields, chromium_request());
    }

    #[test]
    fn chromium_dynamic_vector_is_rejected() {
        let err = decode_err(&hex(CHROMIUM_DYNAMIC));
        assert_eq!(
            err,
            QpackError::Decompression(Cause::RequiredInsertCount(6))
        );
        assert_eq!(err.code(), Code::QPACK_DECOMPRESSION_FAILED);
    }

    #[test]
    fn chromium_request_round_trips_through_our_encoder() {
        let fields = chromium_request();
        let bytes = encode_vec(&fields);
        assert_eq!(decode_field_section(&bytes, 16384).unwrap(), fields);
        // Same representations as Chromium chose, so the same bytes.
        assert_eq!(bytes, hex(CHROMIUM_STATIC_ONLY));
    }

    #[test]
    fn rfc9204_appendix_b1() {
        // 0000 510b 2f69 6e64 6578 2e68 746d 6c: :path=/index.html, static name, no Huffman.
        let buf = hex("0000510b2f696e6465782e68746d6c");
        assert_eq!(
            decode_field_section(&buf, 1000).unwrap(),
            [HeaderField::new(":path", "/index.html")]
        );
    }

    #[test]
    fn never_index_bit_and_plain_strings_decode() {
        // Literal with name reference, N=1 (0x70 = 0111 0000): :authority, "a".
        // Literal with literal name, N=1, H=0 (0x31 = 0011 0001): name "x", value "y".
        let buf = [0x00, 0x00, 0x70, 0x01, b'a', 0x31, b'x', 0x01, b'y'];
        assert_eq!(
            decode_field_section(&buf, 1000).unwrap(),
            [
                HeaderField::new(":authority", "a"),
                HeaderField::new("x", "y")
            ]
        );
    }

    #[test]
    fn encoder_forms_and_lengths() {
        let cases: &[(&[HeaderField], &str)] = &[
            (&[], "0000"),
            // Exact static match: :status 200 is index 25 -> 0xc0 | 25.
            (&[HeaderField::new(":status", "200")], "0000d9"),
            // Exact match beyond the 6-bit prefix: origin "" is 90 -> ff 1b.
            (&[HeaderField::new("origin", "")], "0000ff1b"),
            // Name match beyond the 4-bit prefix: origin -> 5f 4b; "a" stays plain
            // because its Huffman form is not shorter.
            (&[HeaderField::new("origin", "a")], "00005f4b0161"),
            // Literal name, Huffman-coded (RFC 7541 C.4.3's custom-key/custom-value).
            (
                &[HeaderField::new("custom-key", "custom-value")],
                "00002f0125a849e95ba97d7f8925a849e95bb8e8b4bf",
            ),
        ];
        for (fields, expected) in cases {
            let bytes = encode_vec(fields);
            assert_eq!(bytes, hex(expected));
            assert_eq!(decode_field_section(&bytes, u64::MAX).unwrap(), *fields);
        }
    }

    #[test]
    fn field_section_size_limit() {
        let fields = chromium_request();
        let total: u64 = fields.iter().map(HeaderField::size).sum();
        let bytes = encode_vec(&fields);
        assert_eq!(decode_field_section(&bytes, total).unwrap(), fields);
        let err = decode_field_section(&bytes, total - 1).unwrap_err();
        assert_eq!(
            err,
            QpackError::FieldSectionTooLarge {
                size: total,
                max: total - 1
            }
        );
        assert_eq!(err.code(), Code::H3_EXCESSIVE_LOAD);
        // An empty section fits any limit.
        assert_eq!(decode_field_section(&[0, 0], 0).unwrap(), []);
    }

    /// Malformed field sections, each with the exact error and wire code.
    #[test]
    fn malformed_field_sections() {
        use Cause::*;
        let cases: &[(&str, &[u8], Cause)] = &[
            ("empty input", &[], Truncated),
            ("prefix without base", &[0x00], Truncated),
            ("negative base", &[0x00, 0x80], NegativeBase),
            ("dynamic indexed", &[0x00, 0x00, 0x80], DynamicReference(0)),
            (
                "dynamic name ref",
                &[0x00, 0x00, 0x41, 0x00],
                DynamicReference(1),
            ),
            (
                "post-base indexed",
                &[0x00, 0x00, 0x10],
                PostBaseReference(0),
            ),
            (
                "post-base name ref",
                &[0x00, 0x00, 0x02, 0x00],
                PostBaseReference(2),
            ),
            (
                "static index 99",
                &[0x00, 0x00, 0xff, 0x24],
                StaticIndex(99),
            ),
            (
                "static name 99",
                &[0x00, 0x00, 0x5f, 0x54, 0x00],
                StaticIndex(99),
            ),
            ("indexed truncated", &[0x00, 0x00, 0xff], Truncated),
            ("value missing", &[0x00, 0x00, 0x51], Truncated),
            (
                "value truncated",
                &[0x00, 0x00, 0x51, 0x03, b'/', b'a'],
                StringTruncated {
                    len: 3,
                    available: 2,
                },
            ),
            (
                "name truncated",
                &[0x00, 0x00, 0x23, b'a', b'b'],
                StringTruncated {
                    len: 3,
                    available: 2,
                },
            ),
            (
                "bad Huffman padding",
                // :path with Huffman value 0x1e: 'a' then padding 110.
                &[0x00, 0x00, 0x51, 0x81, 0x1e],
                Huffman(HuffmanError::InvalidPadding),
            ),
            (
                "EOS in Huffman string",
                &[0x00, 0x00, 0x51, 0x84, 0xff, 0xff, 0xff, 0xff],
                Huffman(HuffmanError::EosInString),
            ),
            (
                "integer overflow in index",
                &[
                    0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                IntegerOverflow,
            ),
            (
                "integer overflow in required insert count",
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                IntegerOverflow,
            ),
            (
                "required insert count 1",
                &[0x01, 0x00],
                RequiredInsertCount(1),
            ),
        ];
        for (what, buf, cause) in cases {
            let err = decode_err(buf);
            assert_eq!(err, QpackError::Decompression(cause.clone()), "{what}");
            assert_eq!(err.code(), Code::QPACK_DECOMPRESSION_FAILED, "{what}");
        }
    }

    #[test]
    fn huge_declared_length_is_not_allocated() {
        // Literal name of length ~2^62 with two bytes behind it.
        let mut buf = vec![0x00, 0x00, 0x27];
        buf.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        buf.extend([b'a', b'b']);
        assert!(matches!(
            decode_err(&buf),
            QpackError::Decompression(Cause::StringTruncated { available: 2, .. })
        ));
    }

    fn header_field() -> impl Strategy<Value = HeaderField> {
        let from_table = (0..static_table::ENTRIES.len(), any::<bool>()).prop_map(|(i, keep)| {
            let (n, v) = static_table::ENTRIES[i];
            HeaderField::new(n, if keep { v.to_string() } else { format!("{v}x") })
        });
        let text = ("[a-z0-9:-]{0,20}", "[ -~]{0,40}").prop_map(|(n, v)| HeaderField::new(n, v));
        let binary = (
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(n, v)| HeaderField::new(n, v));
        prop_oneof![from_table, text, binary]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_field_section(&data, 1 << 16);
            let mut with_prefix = vec![0, 0];
            with_prefix.extend_from_slice(&data);
            if let Ok(fields) = decode_field_section(&with_prefix, u64::MAX) {
                // Each representation takes at least one byte.
                prop_assert!(fields.len() <= data.len());
            }
            let _ = parse_encoder_instruction(&data);
            let _ = parse_decoder_instruction(&data);
        }

        #[test]
        fn random_header_lists_round_trip(fields in proptest::collection::vec(header_field(), 0..16)) {
            let bytes = encode_vec(&fields);
            prop_assert_eq!(decode_field_section(&bytes, u64::MAX).unwrap(), fields);
        }
    }
}
