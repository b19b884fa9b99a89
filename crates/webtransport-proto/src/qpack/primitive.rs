//! QPACK primitives (RFC 9204 §4.1): prefixed integers (RFC 7541 §5.1) and string
//! literals (RFC 7541 §5.2) with an N-bit prefix.

use bytes::{BufMut, Bytes};

use super::{huffman, Cause};

/// The largest integer we accept: RFC 9204 §4.1.1 requires 62 bits, and nothing in QPACK
/// needs more.
pub(crate) const MAX_INT: u64 = (1 << 62) - 1;

/// Continuation bytes needed for the largest value: 9 × 7 bits covers 62.
const MAX_CONTINUATION_BYTES: usize = 9;

/// Reads an integer with a `prefix`-bit prefix (1..=8) from the front of `buf`; the high
/// bits of the first byte belong to the caller.
///
/// `Ok(None)` means `buf` ends inside the integer.
pub(crate) fn decode_int(buf: &[u8], prefix: u8) -> Result<Option<(u64, usize)>, Cause> {
    debug_assert!((1..=8).contains(&prefix));
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mask = 0xffu8 >> (8 - prefix);
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Ok(Some((value, 1)));
    }
    for (i, &b) in buf.iter().enumerate().skip(1) {
        // RFC 7541 §5.1: "Integer encodings that exceed implementation limits -- in value
        // or octet length -- MUST be treated as decoding errors." This also keeps the
        // shift below 64.
        if i > MAX_CONTINUATION_BYTES {
            return Err(Cause::IntegerOverflow);
        }
        let shift = 7 * (i as u32 - 1);
        value = value
            .checked_add(u64::from(b & 0x7f) << shift)
            .filter(|v| *v <= MAX_INT)
            .ok_or(Cause::IntegerOverflow)?;
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

/// Writes `value` with a `prefix`-bit prefix; `flags` fills the first byte's high bits.
pub(crate) fn encode_int<B: BufMut>(value: u64, prefix: u8, flags: u8, out: &mut B) {
    debug_assert!((1..=8).contains(&prefix));
    let mask = 0xffu8 >> (8 - prefix);
    debug_assert_eq!(flags & mask, 0, "flags overlap the integer prefix");
    if value < u64::from(mask) {
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | mask);
    let mut rest = value - u64::from(mask);
    while rest >= 0x80 {
        out.put_u8(0x80 | (rest as u8 & 0x7f));
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// Bytes [`encode_int`] writes.
pub(crate) fn int_len(value: u64, prefix: u8) -> usize {
    let mask = u64::from(0xffu8 >> (8 - prefix));
    if value < mask {
        return 1;
    }
    let mut len = 2;
    let mut rest = value - mask;
    while rest >= 0x80 {
        len += 1;
        rest >>= 7;
    }
    len
}

/// Reads a string literal with a `prefix`-bit prefix (2..=8, RFC 9204 §4.1.2): the H flag
/// is the prefix's top bit, the length an integer in the remaining `prefix - 1` bits.
///
/// The string must be complete in `buf` (field sections arrive whole), so a truncated
/// length or a length past the end is an error, never an allocation.
pub(crate) fn decode_string(buf: &[u8], prefix: u8) -> Result<(Bytes, usize), Cause> {
    debug_assert!((2..=8).contains(&prefix));
    let first = *buf.first().ok_or(Cause::Truncated)?;
    let huffman_coded = first & (1 << (prefix - 1)) != 0;
    let (len, n) = decode_int(buf, prefix - 1)?.ok_or(Cause::Truncated)?;
    let rest = buf.get(n..).unwrap_or_default();
    let data = usize::try_from(len)
        .ok()
        .and_then(|len| rest.get(..len))
        .ok_or(Cause::StringTruncated {
            len,
            available: rest.len(),
        })?;
    let value = if huffman_coded {
        let mut plain = Vec::new();
        huffman::decode(data, &mut plain).map_err(Cause::Huffman)?;
        Bytes::from(plain)
    } else {
        Bytes::copy_from_slice(data)
    };
    Ok((value, n + data.len()))
}

/// Writes `s` as a string literal with a `prefix`-bit prefix, Huffman-coded when that is
/// shorter; `flags` fills the first byte's bits above the prefix.
pub(crate) fn encode_string<B: BufMut>(s: &[u8], prefix: u8, flags: u8, out: &mut B) {
    let huffman_len = huffman::encoded_len(s);
    if huffman_len < s.len() {
        encode_int(
            huffman_len as u64,
            prefix - 1,
            flags | 1 << (prefix - 1),
            out,
        );
        huffman::encode(s, out);
    } else {
        encode_int(s.len() as u64, prefix - 1, flags, out);
        out.put_slice(s);
    }
}

/// Bytes [`encode_string`] writes.
pub(crate) fn string_len(s: &[u8], prefix: u8) -> usize {
    let len = huffman::encoded_len(s).min(s.len());
    int_len(len as u64, prefix - 1) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_int(value: u64, prefix: u8, flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(value, prefix, flags, &mut out);
        assert_eq!(out.len(), int_len(value, prefix));
        out
    }

    #[test]
    fn rfc7541_appendix_c1_integers() {
        // C.1.1: 10 with a 5-bit prefix.
        assert_eq!(enc_int(10, 5, 0), [0b0000_1010]);
        // C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(enc_int(1337, 5, 0), [0b0001_1111, 0b1001_1010, 0b0000_1010]);
        assert_eq!(decode_int(&[0x1f, 0x9a, 0x0a], 5), Ok(Some((1337, 3))));
        // C.1.3: 42 with an 8-bit prefix.
        assert_eq!(enc_int(42, 8, 0), [42]);
        // The high bits belong to the caller and are ignored when decoding.
        assert_eq!(decode_int(&[0xea], 5), Ok(Some((10, 1))));
    }

    #[test]
    fn integers_round_trip_at_boundaries() {
        for prefix in 1..=8u8 {
            let mask = (1u64 << prefix) - 1;
            for v in [
                0,
                1,
                mask - 1,
                mask,
                mask + 1,
                mask + 127,
                mask + 128,
                1 << 32,
                MAX_INT,
            ] {
                let bytes = enc_int(v, prefix, 0);
                assert_eq!(decode_int(&bytes, prefix), Ok(Some((v, bytes.len()))));
                for cut in 0..bytes.len() {
                    assert_eq!(decode_int(&bytes[..cut], prefix), Ok(None));
                }
            }
        }
    }

    #[test]
    fn integer_overflow_is_an_error() {
        // 2^62 with a 6-bit prefix.
        let mut bytes = enc_int(MAX_INT, 6, 0);
        // Bump the last continuation byte so the value reaches 2^62 or more.
        *bytes.last_mut().unwrap() += 1;
        assert_eq!(decode_int(&bytes, 6), Err(Cause::IntegerOverflow));
        // Ten continuation bytes, even of zeros, exceed our octet-length limit.
        let mut long = vec![0x3f];
        long.extend([0x80; 9]);
        long.push(0x00);
        assert_eq!(decode_int(&long, 6), Err(Cause::IntegerOverflow));
        // u64-sized garbage never panics.
        assert_eq!(decode_int(&[0xff; 20], 8), Err(Cause::IntegerOverflow));
    }

    #[test]
    fn strings_round_trip_and_pick_the_shorter_form() {
        for (s, prefix) in [
            (&b"www.example.com"[..], 8u8),
            (b"", 8),
            (b"\x00\x01\xff", 8),
            (b"custom-key", 4),
            (b"a-rather-long-header-name-that-needs-a-continuation", 4),
        ] {
            let mut out = Vec::new();
            encode_string(s, prefix, 0, &mut out);
            assert_eq!(out.len(), string_len(s, prefix));
            assert_eq!(
                decode_string(&out, prefix),
                Ok((Bytes::copy_from_slice(s), out.len()))
            );
        }
        // Huffman wins for lowercase text, not for binary.
        let mut out = Vec::new();
        encode_string(b"www.example.com", 8, 0, &mut out);
        assert_eq!(out[0], 0x8c);
        out.clear();
        encode_string(b"\x00\x01", 8, 0, &mut out);
        assert_eq!(out, [0x02, 0x00, 0x01]);
    }

    #[test]
    fn string_longer_than_input_is_an_error() {
        assert_eq!(
            decode_string(&[0x05, b'a', b'b'], 8),
            Err(Cause::StringTruncated {
                len: 5,
                available: 2
            })
        );
        // A huge declared length is rejected, not allocated.
        let mut buf = vec![0x7f];
        buf.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode_string(&buf, 8),
            Err(Cause::StringTruncated { available: 0, .. })
        ));
        assert_eq!(decode_string(&[], 8), Err(Cause::Truncated));
        assert_eq!(decode_string(&[0x7f], 8), Err(Cause::Truncated));
    }
}
