//! The extended CONNECT request that opens a WebTransport session and its response
//! (RFC 9220 §3, RFC 9114 §4.1-§4.3, draft-ietf-webtrans-http3), as field lists that
//! [`crate::qpack`] encodes and decodes.
//!
//! Parsing checks the HTTP/3 message rules that QPACK does not: lowercase, valid field
//! names (the uppercase check lives here, in [`ConnectRequest::from_fields`] and
//! [`ConnectResponse::from_fields`]), valid field values, pseudo-headers first, no
//! unknown or duplicate pseudo-headers, no connection-specific fields. A violation makes
//! the message malformed (RFC 9114 §4.1.2): a stream error of type H3_MESSAGE_ERROR.
//!
//! The WebTransport application-protocol fields `wt-available-protocols` (a Structured
//! Field List of Strings) and `wt-protocol` (a String item) are parsed with a small
//! RFC 8941 subset ([`parse_sf_string_list`] and its siblings); malformed values are
//! ignored, as the draft asks, rather than failing the message.
//!
//! The request is in `request.rs`, the response in `response.rs`, the HTTP/3 field rules
//! both share in `rules.rs`, and the structured-field helpers in `sf.rs`.

mod request;
mod response;
mod rules;
mod sf;

use crate::error::Code;

pub use request::ConnectRequest;
pub use response::ConnectResponse;
pub use sf::{
    parse_sf_string_item, parse_sf_string_list, serialize_sf_string, serialize_sf_string_list,
};

/// Request field names with meaning to WebTransport.
const ORIGIN: &str = "origin";
const DRAFT02_REQUEST: &str = "sec-webtransport-http3-draft02";
const DRAFT02_RESPONSE: &str = "sec-webtransport-http3-draft";
const AVAILABLE_PROTOCOLS: &str = "wt-available-protocols";
const PROTOCOL: &str = "wt-protocol";

/// The `:protocol` value (HTTP Upgrade Token) of a WebTransport extended CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpgradeToken {
    /// `webtransport`: draft-02 to draft-14, what every browser sends today.
    #[default]
    WebTransport,
    /// `webtransport-h3`: draft-15 and later.
    WebTransportH3,
}

impl UpgradeToken {
    /// The token as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebTransport => "webtransport",
            Self::WebTransportH3 => "webtransport-h3",
        }
    }

    /// The token for a `:protocol` value, if it is one of ours (tokens are
    /// case-sensitive).
    pub fn from_bytes(value: &[u8]) -> Option<Self> {
        match value {
            b"webtransport" => Some(Self::WebTransport),
            b"webtransport-h3" => Some(Self::WebTransportH3),
            _ => None,
        }
    }
}

/// Why a CONNECT request or its response was rejected.
///
/// Every variant makes the message malformed (RFC 9114 §4.1.2) except
/// [`UnknownProtocol`](Self::UnknownProtocol), a well-formed request for an upgrade token
/// we do not speak; [`status`](Self::status) says which one a server answers with a
/// response rather than a stream reset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A pseudo-header follows a regular header.
    #[error("pseudo-header {0} after a regular header")]
    PseudoAfterRegular(String),
    /// A pseudo-header not defined for this kind of message.
    #[error("unknown pseudo-header {0}")]
    UnknownPseudo(String),
    /// A pseudo-header appears twice.
    #[error("duplicate pseudo-header {0}")]
    DuplicatePseudo(&'static str),
    /// A mandatory pseudo-header is absent.
    #[error("missing pseudo-header {0}")]
    MissingPseudo(&'static str),
    /// A mandatory pseudo-header is empty.
    #[error("empty pseudo-header {0}")]
    EmptyPseudo(&'static str),
    /// A pseudo-header value is invalid (not UTF-8, or not of its required form).
    #[error("invalid value for pseudo-header {0}")]
    InvalidPseudo(&'static str),
    /// `:method` is not CONNECT.
    #[error(":method is {0:?}, not CONNECT")]
    NotConnect(String),
    /// `:protocol` names an upgrade token we do not support.
    #[error("unsupported :protocol {0:?}")]
    UnknownProtocol(String),
    /// `:status` is not three digits from 100 to 599.
    #[error("invalid :status {0:?}")]
    InvalidStatus(String),
    /// A connection-specific field (RFC 9114 §4.2), including `te` other than `trailers`.
    #[error("connection-specific field {0}")]
    ConnectionSpecific(String),
    /// A field name with uppercase characters.
    #[error("uppercase characters in field name {0:?}")]
    UppercaseName(String),
    /// A field name that is empty or has characters outside the token set.
    #[error("invalid field name {0:?}")]
    InvalidName(String),
    /// A field value with a control character (NUL, CR, LF, ...).
    #[error("invalid characters in the value of {0}")]
    InvalidValue(String),
    /// `host` and `:authority` differ.
    #[error("host field does not match :authority")]
    HostMismatch,
    /// A field that must appear at most once appears again.
    #[error("more than one {0} field")]
    DuplicateField(&'static str),
}

impl HeaderError {
    /// The HTTP/3 error code for resetting the stream: H3_MESSAGE_ERROR (RFC 9114 §4.1.2).
    pub fn code(&self) -> Code {
        Code::H3_MESSAGE_ERROR
    }

    /// The status a server answers a rejected, well-formed request with (then finishing
    /// the stream): 501 (Not Implemented) for an unknown upgrade token. `None` for a
    /// malformed request, which RFC 9114 §4.1.2 says MUST be treated as a stream error of
    /// type [`code`](Self::code), i.e. the stream is reset.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::UnknownProtocol(_) => Some(501),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qpack::HeaderField;
    use proptest::prelude::*;

    /// A field list from `(name, value)` pairs (the request and response tests use it too).
    pub(super) fn fields(list: &[(&str, &str)]) -> Vec<HeaderField> {
        list.iter()
            .map(|(n, v)| HeaderField::new(n.to_string(), v.to_string()))
            .collect()
    }

    proptest! {
        #[test]
        fn random_field_lists_never_panic(
            list in proptest::collection::vec(
                (prop_oneof![
                    Just(":method".to_string()), Just(":path".to_string()),
                    Just(":status".to_string()), Just(":protocol".to_string()),
                    "[a-z:-]{0,8}",
                ], "[ -~]{0,12}"),
                0..10,
            )
        ) {
            let f: Vec<HeaderField> =
                list.into_iter().map(|(n, v)| HeaderField::new(n, v)).collect();
            let _ = ConnectRequest::from_fields(&f);
            let _ = ConnectResponse::from_fields(&f);
            let _ = parse_sf_string_list(&f.first().map(|x| x.value.clone()).unwrap_or_default());
        }
    }
}
