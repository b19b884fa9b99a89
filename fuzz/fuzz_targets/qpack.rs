//! QPACK: field sections (`decode_field_section`) and the encoder and decoder stream
//! instructions, for a decoder with dynamic table capacity 0. Nothing may panic; what
//! decodes must survive our encoder; instruction parsing must make progress.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use webtransport_proto::qpack::{
    self, huffman, parse_decoder_instruction, parse_encoder_instruction,
};

#[derive(Debug, Arbitrary)]
enum Input {
    /// A field section, with the limit on its decoded size.
    Section {
        max: u16,
        data: Vec<u8>,
    },
    /// A field section behind a valid prefix (Required Insert Count 0, Base 0), so the
    /// field lines are reached more often.
    Lines {
        max: u16,
        data: Vec<u8>,
    },
    EncoderStream(Vec<u8>),
    DecoderStream(Vec<u8>),
    Huffman(Vec<u8>),
}

fn section(data: &[u8], max: u16) {
    let max = if max == u16::MAX {
        u64::MAX
    } else {
        u64::from(max)
    };
    let Ok(fields) = qpack::decode_field_section(data, max) else {
        return;
    };
    let size: u64 = fields.iter().map(|f| f.size()).sum();
    assert!(size <= max);
    let mut out = Vec::new();
    qpack::encode_field_section(&fields, &mut out);
    assert_eq!(out.len(), qpack::encoded_field_section_len(&fields));
    assert_eq!(qpack::decode_field_section(&out, u64::MAX), Ok(fields));
}

fuzz_target!(|input: Input| match input {
    Input::Section { max, data } => section(&data, max),
    Input::Lines { max, data } => {
        let mut buf = vec![0, 0];
        buf.extend_from_slice(&data);
        section(&buf, max);
    }
    Input::EncoderStream(data) => {
        let mut rest = &data[..];
        while let Ok(Some((_, n))) = parse_encoder_instruction(rest) {
            assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
    }
    Input::DecoderStream(data) => {
        let mut rest = &data[..];
        while let Ok(Some((_, n))) = parse_decoder_instruction(rest) {
            assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
    }
    Input::Huffman(data) => {
        if let Ok(plain) = huffman::decode_to_vec(&data) {
            assert!(plain.len() <= data.len() * 8 / 5);
            let mut out = Vec::new();
            huffman::encode(&plain, &mut out);
            assert_eq!(out.len(), huffman::encoded_len(&plain));
            assert_eq!(huffman::decode_to_vec(&out).as_deref(), Ok(&plain[..]));
        }
    }
});
