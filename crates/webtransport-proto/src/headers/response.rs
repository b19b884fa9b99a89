//! The response to the extended CONNECT request.

use super::rules::{check_field, check_not_connection_specific, lossy, set_once};
use super::sf::{parse_sf_string_item, serialize_sf_string};
use super::{HeaderError, DRAFT02_RESPONSE, PROTOCOL};
use crate::qpack::HeaderField;

/// The response to a WebTransport extended CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    /// `:status`; 2xx accepts the session.
    pub status: u16,
    /// `wt-protocol`: the application protocol the server chose, sent as an sf-string.
    pub protocol: Option<String>,
    /// `sec-webtransport-http3-draft: draft02`, optional for draft-02 clients.
    pub draft02: bool,
    /// Every other regular field, in order.
    pub headers: Vec<HeaderField>,
}

/// A bare `200`: the session is accepted, with no application protocol chosen.
impl Default for ConnectResponse {
    fn default() -> Self {
        Self::new(200)
    }
}

impl ConnectResponse {
    /// A response with this status and nothing else.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            protocol: None,
            draft02: false,
            headers: Vec::new(),
        }
    }

    /// Whether the status is 2xx, i.e. the session is established.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Validates a decoded response field section. A malformed `wt-protocol` is ignored.
    pub fn from_fields(fields: &[HeaderField]) -> Result<Self, HeaderError> {
        let mut status = None;
        let mut regular_seen = false;
        let mut draft02 = false;
        let mut protocol_lines = Vec::new();
        let mut headers = Vec::new();
        for field in fields {
            check_field(field)?;
            if field.name.starts_with(b":") {
                // RFC 9114 §4.3, as for requests.
                if regular_seen {
                    return Err(HeaderError::PseudoAfterRegular(lossy(&field.name)));
                }
                // RFC 9114 §4.3: "Pseudo-header fields defined for requests MUST NOT appear
                // in responses"; :status is the only response pseudo-header (§4.3.2).
                if &field.name[..] != b":status" {
                    return Err(HeaderError::UnknownPseudo(lossy(&field.name)));
                }
                set_once(&mut status, &field.value, ":status")?;
                continue;
            }
            regular_seen = true;
            check_not_connection_specific(field, false)?;
            match &field.name[..] {
                b"sec-webtransport-http3-draft" => draft02 = &field.value[..] == b"draft02",
                b"wt-protocol" => protocol_lines.push(&field.value[..]),
                _ => headers.push(field.clone()),
            }
        }
        // RFC 9114 §4.3.2: ":status" "MUST be included in all responses; otherwise, the
        // response is malformed".
        let status = status.ok_or(HeaderError::MissingPseudo(":status"))?;
        let status =
            parse_status(status).ok_or_else(|| HeaderError::InvalidStatus(lossy(status)))?;
        // Several lines combine into one value with commas (RFC 8941 §4.2), which is then
        // not a single item: ignored like any other malformed value.
        let joined = protocol_lines.join(&b", "[..]);
        let protocol = if protocol_lines.is_empty() {
            None
        } else {
            let parsed = parse_sf_string_item(&joined);
            if parsed.is_none() {
                tracing::debug!(
                    value = %String::from_utf8_lossy(&joined),
                    "ignoring malformed wt-protocol"
                );
            }
            parsed
        };
        Ok(Self {
            status,
            protocol,
            draft02,
            headers,
        })
    }

    /// The field list: `:status`, `sec-webtransport-http3-draft` (if `draft02`),
    /// `wt-protocol` (if any), then `headers`.
    ///
    /// A protocol name that cannot be an sf-string is left out, with a warning.
    pub fn to_fields(&self) -> Vec<HeaderField> {
        let mut fields = Vec::with_capacity(3 + self.headers.len());
        fields.push(HeaderField::new(":status", self.status.to_string()));
        if self.draft02 {
            fields.push(HeaderField::new(DRAFT02_RESPONSE, "draft02"));
        }
        if let Some(protocol) = &self.protocol {
            match serialize_sf_string(protocol) {
                Some(s) => fields.push(HeaderField::new(PROTOCOL, s)),
                None => {
                    tracing::warn!(protocol = ?protocol, "not sending a wt-protocol that is not printable ASCII")
                }
            }
        }
        fields.extend(self.headers.iter().cloned());
        fields
    }
}

/// RFC 9114 §4.3.2 / RFC 9110 §15: three digits, 100 to 599.
fn parse_status(value: &[u8]) -> Option<u16> {
    let [a, b, c] = *value else {
        return None;
    };
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) {
        return None;
    }
    let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    (100..=599).contains(&status).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::headers::tests::fields;
    use crate::qpack;

    #[test]
    fn to_fields_drops_an_unserializable_protocol() {
        let resp = ConnectResponse {
            protocol: Some("\u{7f}".into()),
            ..ConnectResponse::new(200)
        };
        assert_eq!(resp.to_fields(), fields(&[(":status", "200")]));
    }

    #[test]
    fn response_round_trips() {
        let resp = ConnectResponse {
            status: 200,
            protocol: Some("echo-v1".into()),
            draft02: true,
            headers: fields(&[("server", "us")]),
        };
        let f = resp.to_fields();
        assert_eq!(
            f,
            fields(&[
                (":status", "200"),
                ("sec-webtransport-http3-draft", "draft02"),
                ("wt-protocol", "\"echo-v1\""),
                ("server", "us"),
            ])
        );
        assert_eq!(ConnectResponse::from_fields(&f).unwrap(), resp);
        assert!(resp.is_success());
        let mut out = Vec::new();
        qpack::encode_field_section(&f, &mut out);
        assert_eq!(out.len(), qpack::encoded_field_section_len(&f));
        let back = qpack::decode_field_section(&out, u64::MAX).unwrap();
        assert_eq!(ConnectResponse::from_fields(&back).unwrap(), resp);

        assert_eq!(ConnectResponse::default(), ConnectResponse::new(200));
        let minimal = ConnectResponse::new(404);
        assert_eq!(minimal.to_fields(), fields(&[(":status", "404")]));
        assert!(!minimal.is_success());
        assert!(!ConnectResponse::new(199).is_success());
        assert!(ConnectResponse::new(299).is_success());
        assert!(!ConnectResponse::new(300).is_success());
    }

    #[test]
    fn response_ignores_malformed_wt_protocol() {
        for bad in [
            &["echo-v1"][..],
            &["\"a\", \"b\""],
            &["\"a\"", "\"b\""],
            &["\"a"],
        ] {
            let mut f = fields(&[(":status", "200")]);
            for v in bad {
                f.push(HeaderField::new("wt-protocol", v.to_string()));
            }
            let resp = ConnectResponse::from_fields(&f).unwrap();
            assert_eq!(resp.protocol, None, "{bad:?}");
        }
        let f = fields(&[(":status", "200"), ("wt-protocol", " \"x\";v=2 ")]);
        assert_eq!(
            ConnectResponse::from_fields(&f)
                .unwrap()
                .protocol
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn malformed_responses() {
        use HeaderError::*;
        let cases: Vec<(&str, Vec<HeaderField>, HeaderError)> = vec![
            (
                "two :status",
                fields(&[(":status", "200"), (":status", "200")]),
                DuplicatePseudo(":status"),
            ),
            (
                "status 20",
                fields(&[(":status", "20")]),
                InvalidStatus("20".into()),
            ),
            (
                "status 2000",
                fields(&[(":status", "2000")]),
                InvalidStatus("2000".into()),
            ),
            (
                "status 600",
                fields(&[(":status", "600")]),
                InvalidStatus("600".into()),
            ),
            (
                "status 099",
                fields(&[(":status", "099")]),
                InvalidStatus("099".into()),
            ),
            (
                "status +20",
                fields(&[(":status", "+20")]),
                InvalidStatus("+20".into()),
            ),
            (
                "missing :status",
                fields(&[("server", "x")]),
                MissingPseudo(":status"),
            ),
            ("empty", vec![], MissingPseudo(":status")),
            (
                "request pseudo in response",
                fields(&[(":status", "200"), (":protocol", "webtransport")]),
                UnknownPseudo(":protocol".into()),
            ),
            (
                "pseudo after regular",
                fields(&[("server", "x"), (":status", "200")]),
                PseudoAfterRegular(":status".into()),
            ),
            (
                "te in response",
                fields(&[(":status", "200"), ("te", "trailers")]),
                ConnectionSpecific("te: trailers".into()),
            ),
            (
                "uppercase",
                fields(&[(":status", "200"), ("Server", "x")]),
                UppercaseName("Server".into()),
            ),
        ];
        for (what, f, expected) in cases {
            let err = ConnectResponse::from_fields(&f).unwrap_err();
            assert_eq!(err, expected, "{what}");
            assert_eq!(err.code(), Code::H3_MESSAGE_ERROR, "{what}");
        }
        // Boundaries that are valid.
        for s in ["100", "599"] {
            assert!(ConnectResponse::from_fields(&fields(&[(":status", s)])).is_ok());
        }
    }
}
