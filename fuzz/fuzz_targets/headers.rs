//! CONNECT requests and responses after QPACK: a field section is decoded and validated
//! with `ConnectRequest::from_fields` and `ConnectResponse::from_fields`. Nothing may
//! panic, and an accepted message must come back the same through our own encoding.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::qpack::{self, HeaderField};

/// Names that mean something to the validators, so the fuzzer need not guess them.
const NAMES: &[&str] = &[
    ":method",
    ":scheme",
    ":authority",
    ":path",
    ":protocol",
    ":status",
    "origin",
    "host",
    "te",
    "connection",
    "sec-webtransport-http3-draft02",
    "sec-webtransport-http3-draft",
    "wt-available-protocols",
    "wt-protocol",
];

const VALUES: &[&str] = &[
    "CONNECT",
    "https",
    "/",
    "example.test",
    "webtransport",
    "webtransport-h3",
    "200",
    "1",
    "draft02",
    "trailers",
    "\"echo\", \"chat\"",
];

#[derive(Debug, Arbitrary)]
enum Part {
    Known(u8),
    Raw(Vec<u8>),
}

impl Part {
    fn bytes(&self, table: &[&'static str]) -> Bytes {
        match self {
            Part::Known(i) => Bytes::from_static(table[usize::from(*i) % table.len()].as_bytes()),
            Part::Raw(b) => Bytes::copy_from_slice(b),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Input {
    /// An encoded field section, as it arrives in HEADERS.
    Encoded(Vec<u8>),
    /// A field list, encoded with our encoder first.
    Fields(Vec<(Part, Part)>),
}

fuzz_target!(|input: Input| {
    let block = match input {
        Input::Encoded(b) => b,
        Input::Fields(parts) => {
            let fields: Vec<HeaderField> = parts
                .iter()
                .map(|(n, v)| HeaderField {
                    name: n.bytes(NAMES),
                    value: v.bytes(VALUES),
                })
                .collect();
            let mut out = Vec::new();
            qpack::encode_field_section(&fields, &mut out);
            out
        }
    };
    let Ok(fields) = qpack::decode_field_section(&block, 16 * 1024) else {
        return;
    };
    match ConnectRequest::from_fields(&fields) {
        Ok(req) => {
            assert_eq!(ConnectRequest::from_fields(&req.to_fields()), Ok(req));
        }
        Err(e) => {
            let _ = (e.code(), e.status(), e.to_string());
        }
    }
    match ConnectResponse::from_fields(&fields) {
        Ok(resp) => {
            assert_eq!(ConnectResponse::from_fields(&resp.to_fields()), Ok(resp));
        }
        Err(e) => {
            let _ = (e.code(), e.to_string());
        }
    }
});
