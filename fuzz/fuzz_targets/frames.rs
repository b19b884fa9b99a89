//! HTTP/3 frames: `Frame::decode` over a byte stream, and `FrameReader` over the same
//! bytes in arbitrary chunks. Neither may panic, chunking must not change what the reader
//! sees, and the reader must agree with frame-by-frame decoding.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use webtransport_proto::frame::{Frame, FrameError, FrameEvent, FrameLimits, FrameReader};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Chunk sizes for the streaming reader, used in turn (0 counts as 1).
    chunks: Vec<u8>,
    /// Small caps instead of the defaults, to reach the size checks.
    small: Option<(u8, u8)>,
    data: Vec<u8>,
}

/// What a reader yields, with DATA payload merged so that chunking does not show.
#[derive(Debug, PartialEq)]
enum Seen {
    Frame(Frame),
    DataStart(u64),
    Data(Vec<u8>),
    Raw(u64, Vec<u8>),
}

fn record(out: &mut Vec<Seen>, ev: FrameEvent) {
    match ev {
        FrameEvent::Frame(f) => out.push(Seen::Frame(f)),
        FrameEvent::DataStart(n) => out.push(Seen::DataStart(n)),
        FrameEvent::DataChunk(c) => match out.last_mut() {
            Some(Seen::Data(d)) => d.extend_from_slice(&c),
            _ => out.push(Seen::Data(c.to_vec())),
        },
        FrameEvent::Raw { ty, payload } => out.push(Seen::Raw(ty, payload.to_vec())),
    }
}

fn read(limits: FrameLimits, data: &[u8], chunks: &[u8]) -> (Vec<Seen>, Option<FrameError>) {
    let mut r = FrameReader::new(limits);
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
                Ok(Some(ev)) => record(&mut seen, ev),
                Ok(None) => break,
                Err(e) => return (seen, Some(e)),
            }
        }
        if rest.is_empty() {
            return (seen, None);
        }
    }
}

fuzz_target!(|input: Input| {
    let limits = match input.small {
        Some((h, c)) => FrameLimits {
            max_headers: u64::from(h),
            max_control: u64::from(c),
        },
        None => FrameLimits::default(),
    };
    let data = &input.data[..];

    // Frame by frame.
    let mut decoded = Vec::new();
    let mut decode_error = None;
    let mut rest = data;
    loop {
        match Frame::decode(rest, &limits) {
            Ok(Some((f, n))) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
                match f {
                    Frame::Data(p) => {
                        decoded.push(Seen::DataStart(p.len() as u64));
                        if !p.is_empty() {
                            decoded.push(Seen::Data(p.to_vec()));
                        }
                    }
                    f => decoded.push(Seen::Frame(f)),
                }
            }
            Ok(None) => break,
            Err(e) => {
                decode_error = Some(e);
                break;
            }
        }
    }

    let (whole, whole_error) = read(limits, data, &[]);
    let (chunked, chunked_error) = read(limits, data, &input.chunks);
    assert_eq!(whole, chunked, "chunking changed the events");
    assert_eq!(whole_error, chunked_error, "chunking changed the error");

    // The reader sees what frame-by-frame decoding sees, plus at most the start of a DATA
    // frame that is not complete yet.
    match decode_error {
        Some(e) => {
            assert_eq!(whole, decoded);
            assert_eq!(whole_error, Some(e));
        }
        None => {
            assert!(whole_error.is_none(), "reader failed where decode did not");
            assert!(whole.starts_with(&decoded), "{whole:?} vs {decoded:?}");
            let extra = &whole[decoded.len()..];
            assert!(
                matches!(
                    extra,
                    [] | [Seen::DataStart(_)] | [Seen::DataStart(_), Seen::Data(_)]
                ),
                "reader saw more complete frames than decode: {extra:?}"
            );
        }
    }
});
