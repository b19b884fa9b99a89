//! QUIC variable-length integers (RFC 9000 §16).
//!
//! The two most significant bits of the first byte give the length (1, 2, 4 or 8 bytes);
//! the remaining bits hold the value in network byte order, so the largest value is
//! 2^62 - 1.

use bytes::{Buf, BufMut};

/// A value that fits in a QUIC variable-length integer (at most 2^62 - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VarInt(u64);

/// The value does not fit in 62 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("value {0} does not fit in a QUIC varint (max 2^62-1)")]
pub struct VarIntBoundsExceeded(pub u64);

impl VarInt {
    /// The largest representable value, 2^62 - 1.
    pub const MAX: VarInt = VarInt((1 << 62) - 1);
    /// Zero.
    pub const ZERO: VarInt = VarInt(0);

    /// Builds a varint from a `u32`, which always fits.
    pub const fn from_u32(v: u32) -> Self {
        VarInt(v as u64)
    }

    /// Builds a varint, failing for values of 2^62 and above.
    pub const fn from_u64(v: u64) -> Result<Self, VarIntBoundsExceeded> {
        if v <= Self::MAX.0 {
            Ok(VarInt(v))
        } else {
            Err(VarIntBoundsExceeded(v))
        }
    }

    /// The value.
    pub const fn into_inner(self) -> u64 {
        self.0
    }

    /// Bytes this value takes on the wire.
    pub const fn encoded_len(self) -> usize {
        encoded_len(self.0)
    }

    /// Writes the value in its shortest form.
    pub fn encode<B: BufMut>(self, out: &mut B) {
        encode(self.0, out)
    }

    /// Reads a varint from the front of `buf`.
    ///
    /// Returns `None` when `buf` holds only part of one (need more bytes); on success the
    /// value and the number of bytes it took.
    pub fn decode(buf: &[u8]) -> Option<(VarInt, usize)> {
        let first = *buf.first()?;
        let len = 1usize << (first >> 6);
        let bytes = buf.get(..len)?;
        let mut v = u64::from(first & 0x3f);
        for b in &bytes[1..] {
            v = (v << 8) | u64::from(*b);
        }
        Some((VarInt(v), len))
    }

    /// Reads a varint from a [`Buf`], advancing it; `None` (and nothing consumed) when the
    /// buffer ends inside the varint.
    pub fn read<B: Buf>(buf: &mut B) -> Option<VarInt> {
        if !buf.has_remaining() {
            return None;
        }
        let first = buf.chunk()[0];
        let len = 1usize << (first >> 6);
        if buf.remaining() < len {
            return None;
        }
        let v = match len {
            1 => u64::from(buf.get_u8() & 0x3f),
            2 => u64::from(buf.get_u16() & 0x3fff),
            4 => u64::from(buf.get_u32() & 0x3fff_ffff),
            _ => buf.get_u64() & 0x3fff_ffff_ffff_ffff,
        };
        Some(VarInt(v))
    }
}

impl From<u8> for VarInt {
    fn from(v: u8) -> Self {
        VarInt(v.into())
    }
}
impl From<u16> for VarInt {
    fn from(v: u16) -> Self {
        VarInt(v.into())
    }
}
impl From<u32> for VarInt {
    fn from(v: u32) -> Self {
        VarInt(v.into())
    }
}
impl TryFrom<u64> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        VarInt::from_u64(v)
    }
}
impl From<VarInt> for u64 {
    fn from(v: VarInt) -> u64 {
        v.0
    }
}
impl std::fmt::Display for VarInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Bytes a value takes as a varint. Values above [`VarInt::MAX`] are reported as 8, but
/// [`encode`] refuses them.
pub const fn encoded_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Writes `v` as a varint in its shortest form.
///
/// # Panics
/// If `v` exceeds 2^62 - 1. Values that come from the peer always fit, since they were
/// decoded from a varint; locally chosen values are checked where they enter.
pub fn encode<B: BufMut>(v: u64, out: &mut B) {
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        out.put_u32(0x8000_0000 | v as u32);
    } else {
        assert!(v <= VarInt::MAX.0, "varint out of range: {v}");
        out.put_u64(0xc000_0000_0000_0000 | v);
    }
}

/// Reads a varint from the front of `buf` as a plain `u64`; see [`VarInt::decode`].
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    VarInt::decode(buf).map(|(v, n)| (v.0, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_appendix_a_examples() {
        // RFC 9000 §A.1 sample encodings.
        let cases: &[(&[u8], u64)] = &[
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
            (&[0x40, 0x25], 37),
        ];
        for (bytes, value) in cases {
            let (v, n) = VarInt::decode(bytes).unwrap();
            assert_eq!(v.into_inner(), *value);
            assert_eq!(n, bytes.len());
        }
    }

    #[test]
    fn round_trip_boundaries() {
        for v in [
            0,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            VarInt::MAX.0,
        ] {
            let vi = VarInt::from_u64(v).unwrap();
            let mut out = Vec::new();
            vi.encode(&mut out);
            assert_eq!(out.len(), vi.encoded_len());
            assert_eq!(VarInt::decode(&out), Some((vi, out.len())));
            let mut b = &out[..];
            assert_eq!(VarInt::read(&mut b), Some(vi));
            assert!(b.is_empty());
        }
        assert!(VarInt::from_u64(1 << 62).is_err());
    }

    #[test]
    fn truncated_needs_more() {
        for bytes in [&[][..], &[0x40], &[0x80, 0, 0], &[0xc0, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(VarInt::decode(bytes), None);
            let mut b = bytes;
            assert_eq!(VarInt::read(&mut b), None);
            assert_eq!(b.len(), bytes.len(), "nothing consumed");
        }
    }
}
