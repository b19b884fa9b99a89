//! Capsules: `Capsule::decode` and `CapsuleReader` over arbitrary chunks. Nothing may
//! panic, chunking must not change the result, and known capsules must survive our
//! encoder.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use webtransport_proto::capsule::{Capsule, CapsuleError, CapsuleReader};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Chunk sizes for the streaming reader, used in turn (0 counts as 1).
    chunks: Vec<u8>,
    /// The cap on buffered capsules; `None` is the connection's default of 8 KiB.
    max: Option<u16>,
    data: Vec<u8>,
}

fn read(max: u64, data: &[u8], chunks: &[u8]) -> (Vec<Capsule>, Result<(), CapsuleError>) {
    let mut r = CapsuleReader::new(max);
    let mut seen = Vec::new();
    let mut rest = data;
    let mut sizes = chunks.iter().cycle();
    loop {
        let n = if chunks.is_empty() {
            rest.len()
        } else {
            usize::from(*sizes.next().unwrap_or(&1))
                .max(1)
                .min(rest.len())
        };
        let (now, later) = rest.split_at(n);
        rest = later;
        r.push(now);
        loop {
            match r.poll() {
                Ok(Some(c)) => seen.push(c),
                Ok(None) => break,
                Err(e) => return (seen, Err(e)),
            }
        }
        if rest.is_empty() {
            return (seen, r.finish());
        }
    }
}

fuzz_target!(|input: Input| {
    let max = input.max.map_or(8192, u64::from);
    let data = &input.data[..];
    if let Ok(Some((c, n))) = Capsule::decode(data, max) {
        assert!(n > 0 && n <= data.len());
        if !matches!(c, Capsule::Unknown { .. }) {
            let mut out = Vec::new();
            c.encode(&mut out);
            assert_eq!(out.len(), c.encoded_len());
            assert_eq!(Capsule::decode(&out, u64::MAX), Ok(Some((c, out.len()))));
        }
    }
    let whole = read(max, data, &[]);
    let chunked = read(max, data, &input.chunks);
    assert_eq!(whole, chunked, "chunking changed the result");
});
