//! The static Huffman code of HPACK (RFC 7541 §5.2 and Appendix B), which QPACK uses
//! unchanged for string literals (RFC 9204 §4.1.2).
//!
//! Decoding walks a state machine four bits at a time. Its table is computed at compile
//! time from [`CODES`], the only place the code is written down: each state is an
//! internal node of the code tree, and each of the 16 transitions out of it says which
//! node the next nibble leads to and which symbol, if any, it completes. A nibble
//! completes at most one symbol because the shortest code is five bits long.

use bytes::BufMut;

/// Why a Huffman-coded string was rejected (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HuffmanError {
    /// The bits after the last symbol are longer than 7 or are not all ones.
    #[error("invalid Huffman padding: more than 7 bits or not a prefix of EOS")]
    InvalidPadding,
    /// The string contains the EOS symbol.
    #[error("Huffman-coded string contains the EOS symbol")]
    EosInString,
}

/// The code of every symbol, indexed by symbol (0..=255, then 256 = EOS): the code
/// right-aligned in a `u32`, and its length in bits. Typed in from RFC 7541 Appendix B.
#[rustfmt::skip]
pub const CODES: [(u32, u8); 257] = [
    // 0x00
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    // 0x10
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    // 0x20 ' ' ! " # $ % & ' ( ) * + , - . /
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    // 0x30 0-9 : ; < = > ?
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    // 0x40 @ A-O
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    // 0x50 P-Z [ \ ] ^ _
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    // 0x60 ` a-o
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    // 0x70 p-z { | } ~ DEL
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    // 0x80
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    // 0x90
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    // 0xa0
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    // 0xb0
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    // 0xc0
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    // 0xd0
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    // 0xe0
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    // 0xf0
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    // EOS
    (0x3fffffff, 30),
];

/// The EOS pseudo-symbol.
const EOS: u16 = 256;
/// Marks a child slot of the code tree that holds a symbol rather than a node.
const LEAF: u16 = 0x8000;
/// Internal nodes of the code tree: a complete prefix code with 257 symbols has 256.
const NODES: usize = 256;

/// One transition of the decoding state machine.
#[derive(Clone, Copy)]
struct Step {
    /// The state (tree node) after this nibble.
    next: u8,
    /// The symbol completed inside this nibble, if `flags & EMIT`.
    sym: u8,
    flags: u8,
}

const EMIT: u8 = 1;
const FAIL: u8 = 2;

/// The code tree: for every internal node, its two children (`LEAF | symbol` or a node
/// index; 0 is the root and therefore never a child, so it marks "unset" while building).
const fn build_tree() -> [[u16; 2]; NODES] {
    let mut children = [[0u16; 2]; NODES];
    let mut free = 1usize;
    let mut sym = 0usize;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0usize;
        let mut bit_pos = len as u32;
        while bit_pos > 1 {
            bit_pos -= 1;
            let bit = ((code >> bit_pos) & 1) as usize;
            let child = children[node][bit];
            if child == 0 {
                children[node][bit] = free as u16;
                node = free;
                free += 1;
            } else {
                assert!(child & LEAF == 0, "Huffman table is not a prefix code");
                node = child as usize;
            }
        }
        let bit = (code & 1) as usize;
        assert!(
            children[node][bit] == 0,
            "Huffman table has a duplicate code"
        );
        children[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(free == NODES, "Huffman table is not a complete code");
    children
}

const TREE: [[u16; 2]; NODES] = build_tree();

/// States in which the input may end: the root, and the nodes reached from it by one to
/// seven 1-bits, i.e. the padding is a prefix of EOS no longer than 7 bits (RFC 7541 §5.2).
static ACCEPT: [bool; NODES] = {
    let mut accept = [false; NODES];
    accept[0] = true;
    let mut node = 0usize;
    let mut depth = 0;
    while depth < 7 {
        node = TREE[node][1] as usize;
        assert!(node as u16 & LEAF == 0);
        accept[node] = true;
        depth += 1;
    }
    accept
};

/// The decoding state machine: `DECODE[state][nibble]`.
static DECODE: [[Step; 16]; NODES] = {
    let mut table = [[Step {
        next: 0,
        sym: 0,
        flags: 0,
    }; 16]; NODES];
    let mut state = 0usize;
    while state < NODES {
        let mut nibble = 0usize;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step {
                next: 0,
                sym: 0,
                flags: 0,
            };
            let mut bit_pos = 4;
            while bit_pos > 0 {
                bit_pos -= 1;
                let child = TREE[node][(nibble >> bit_pos) & 1];
                if child & LEAF != 0 {
                    let sym = child & !LEAF;
                    if sym == EOS {
                        step.flags = FAIL;
                        break;
                    }
                    step.sym = sym as u8;
                    step.flags = EMIT;
                    node = 0;
                } else {
                    node = child as usize;
                }
            }
            step.next = node as u8;
            table[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    table
};

/// Decodes the Huffman-coded `src`, appending the plain bytes to `out`.
///
/// Every symbol takes at least 5 bits, so at most `src.len() * 8 / 5` bytes are appended;
/// nothing is reserved beyond that. On error, `out` may hold part of the string.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(src.len() * 8 / 5);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = DECODE[state][usize::from(nibble)];
            // RFC 7541 §5.2: "A Huffman-encoded string literal containing the EOS symbol
            // MUST be treated as a decoding error."
            if step.flags & FAIL != 0 {
                return Err(HuffmanError::EosInString);
            }
            if step.flags & EMIT != 0 {
                out.push(step.sym);
            }
            state = usize::from(step.next);
        }
    }
    // RFC 7541 §5.2: "A padding strictly longer than 7 bits MUST be treated as a decoding
    // error. A padding not corresponding to the most significant bits of the code for the
    // EOS symbol MUST be treated as a decoding error."
    if ACCEPT[state] {
        Ok(())
    } else {
        Err(HuffmanError::InvalidPadding)
    }
}

/// Decodes the Huffman-coded `src` into a new vector; see [`decode`].
pub fn decode_to_vec(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
    let mut out = Vec::new();
    decode(src, &mut out)?;
    Ok(out)
}

/// The number of bytes [`encode`] writes for `src`.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

/// Huffman-codes `src` into `out`, padding the last byte with the most significant bits
/// of EOS (all ones), as RFC 7541 §5.2 requires.
pub fn encode<B: BufMut>(src: &[u8], out: &mut B) {
    // `pending` holds the low `bits` bits not yet written (fewer than 8 between symbols);
    // with codes of at most 30 bits it never needs more than 37.
    let mut pending: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        pending = (pending << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.put_u8((pending >> bits) as u8);
        }
    }
    if bits > 0 {
        out.put_u8(((pending << (8 - bits)) as u8) | (0xff >> bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::hex;

    fn encode_vec(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(src, &mut out);
        assert_eq!(
            out.len(),
            encoded_len(src),
            "encoded_len disagrees for {src:?}"
        );
        out
    }

    /// RFC 7541 Appendix C.4 and C.6 (Huffman-coded strings in requests and responses).
    const RFC7541_EXAMPLES: &[(&str, &str)] = &[
        ("www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"),
        ("no-cache", "a8eb10649cbf"),
        ("custom-key", "25a849e95ba97d7f"),
        ("custom-value", "25a849e95bb8e8b4bf"),
        ("302", "6402"),
        ("private", "aec3771a4b"),
        (
            "Mon, 21 Oct 2013 20:13:21 GMT",
            "d07abe941054d444a8200595040b8166e082a62d1bff",
        ),
        (
            "https://www.example.com",
            "9d29ad171863c78f0b97c8e9ae82ae43d3",
        ),
        ("307", "640eff"),
        (
            "Mon, 21 Oct 2013 20:13:22 GMT",
            "d07abe941054d444a8200595040b8166e084a62d1bff",
        ),
        ("gzip", "9bd9ab"),
        (
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
        ),
    ];

    #[test]
    fn rfc7541_appendix_c_examples_both_ways() {
        for (plain, coded) in RFC7541_EXAMPLES {
            assert_eq!(encode_vec(plain.as_bytes()), hex(coded), "encoding {plain}");
            assert_eq!(
                decode_to_vec(&hex(coded)).unwrap(),
                plain.as_bytes(),
                "decoding {coded}"
            );
        }
    }

    /// HPACK's code is canonical: sorted by (length, symbol), each code is the previous
    /// one plus one, shifted left by the growth in length, starting from 0 and ending at
    /// all ones. This catches any typo in [`CODES`].
    #[test]
    fn code_table_is_canonical_and_complete() {
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut expected: u64 = 0;
        let mut prev_len = CODES[order[0]].1;
        for (i, &sym) in order.iter().enumerate() {
            let (code, len) = CODES[sym];
            if i > 0 {
                expected = (expected + 1) << (len - prev_len);
            }
            assert_eq!(u64::from(code), expected, "symbol {sym}");
            prev_len = len;
        }
        assert_eq!(expected, (1 << 30) - 1, "last code is EOS, all ones");
        assert_eq!(order.last(), Some(&256));
    }

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=255u8 {
            let coded = encode_vec(&[b]);
            assert_eq!(decode_to_vec(&coded).unwrap(), [b], "byte {b}");
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_to_vec(&encode_vec(&all)).unwrap(), all);
        let all_rev: Vec<u8> = (0..=255).rev().collect();
        assert_eq!(decode_to_vec(&encode_vec(&all_rev)).unwrap(), all_rev);
    }

    #[test]
    fn empty_string() {
        assert_eq!(encode_vec(b""), b"");
        assert_eq!(decode_to_vec(b"").unwrap(), b"");
    }

    #[test]
    fn padding_rules() {
        // 'a' is 00011 (5 bits): 3 bits of all-ones padding are fine.
        assert_eq!(decode_to_vec(&[0b0001_1111]).unwrap(), b"a");
        // The same with a zero in the padding.
        assert_eq!(
            decode_to_vec(&[0b0001_1110]),
            Err(HuffmanError::InvalidPadding)
        );
        // A whole byte of ones is 8 bits of padding: too long.
        assert_eq!(decode_to_vec(&[0xff]), Err(HuffmanError::InvalidPadding));
        // 'a' then 11 bits of ones.
        assert_eq!(
            decode_to_vec(&[0b0001_1111, 0xff]),
            Err(HuffmanError::InvalidPadding)
        );
        // A lone zero byte: "00000" is '0', then "000" is not a prefix of EOS.
        assert_eq!(decode_to_vec(&[0]), Err(HuffmanError::InvalidPadding));
        // Ends inside the code of '\' (1111111111111110000) after its zero bit.
        assert_eq!(
            decode_to_vec(&[0xff, 0xfe]),
            Err(HuffmanError::InvalidPadding)
        );
    }

    #[test]
    fn eos_in_string_is_an_error() {
        // 30 ones is EOS; pad to 32 bits with ones.
        assert_eq!(
            decode_to_vec(&[0xff, 0xff, 0xff, 0xff]),
            Err(HuffmanError::EosInString)
        );
        // 'a' (00011) then EOS (30 ones) then one padding bit: 36 bits -> 5 bytes.
        let mut bits: u64 = 0b00011;
        bits = (bits << 30) | 0x3fff_ffff;
        bits = (bits << 5) | 0b11111; // pad to 40 bits
        let bytes = bits.to_be_bytes();
        assert_eq!(decode_to_vec(&bytes[3..]), Err(HuffmanError::EosInString));
    }

    #[test]
    fn decoder_output_is_bounded_by_input() {
        // '0' has a 5-bit code: 40 bits of zeros are eight '0's, the densest case.
        let out = decode_to_vec(&[0; 5]).unwrap();
        assert_eq!(out, b"00000000");
        assert!(out.len() <= 5 * 8 / 5);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut out = Vec::new();
            let _ = decode(&data, &mut out);
            proptest::prop_assert!(out.len() <= data.len() * 8 / 5);
        }

        #[test]
        fn random_strings_round_trip(data in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let coded = encode_vec(&data);
            proptest::prop_assert_eq!(decode_to_vec(&coded).unwrap(), data);
        }
    }
}
