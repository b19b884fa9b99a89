//! The extended CONNECT request (RFC 9220 §3, draft-ietf-webtrans-http3).

use bytes::Bytes;

use super::rules::{check_field, check_not_connection_specific, lossy, required, set_once};
use super::sf::{parse_sf_string_list, serialize_sf_string};
use super::{HeaderError, UpgradeToken, AVAILABLE_PROTOCOLS, DRAFT02_REQUEST, ORIGIN};
use crate::qpack::HeaderField;

/// A WebTransport extended CONNECT request (RFC 9220 §3, draft-ietf-webtrans-http3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// `:scheme`, normally `https`.
    pub scheme: String,
    /// `:authority`: host and port of the target.
    pub authority: String,
    /// `:path`: path and query of the target; starts with `/`.
    pub path: String,
    /// `:protocol`.
    pub protocol: UpgradeToken,
    /// `origin`, which browsers always send.
    pub origin: Option<String>,
    /// `sec-webtransport-http3-draft02: 1`, sent by clients speaking draft-02.
    pub draft02: bool,
    /// `wt-available-protocols`: application protocols the client offers, in its order.
    pub available_protocols: Vec<String>,
    /// Every other regular field, in order.
    pub headers: Vec<HeaderField>,
}

impl Default for ConnectRequest {
    fn default() -> Self {
        Self {
            scheme: "https".to_owned(),
            authority: String::new(),
            path: String::new(),
            protocol: UpgradeToken::default(),
            origin: None,
            draft02: false,
            available_protocols: Vec::new(),
            headers: Vec::new(),
        }
    }
}

impl ConnectRequest {
    /// Validates a decoded request field section and extracts the WebTransport request.
    ///
    /// Malformed requests fail with a [`HeaderError`] whose `code()` is H3_MESSAGE_ERROR;
    /// a well-formed request for another upgrade token fails last, with
    /// [`HeaderError::UnknownProtocol`]. A malformed `wt-available-protocols` is ignored.
    pub fn from_fields(fields: &[HeaderField]) -> Result<Self, HeaderError> {
        let (mut method, mut scheme, mut authority, mut path, mut protocol) =
            (None, None, None, None, None);
        let mut regular_seen = false;
        let mut origin = None;
        let mut draft02 = false;
        let mut available = Vec::new();
        let mut hosts = Vec::new();
        let mut headers = Vec::new();
        for field in fields {
            check_field(field)?;
            if field.name.starts_with(b":") {
                // RFC 9114 §4.3: "Any request or response that contains a pseudo-header
                // field that appears in a header section after a regular header field MUST
                // be treated as malformed."
                if regular_seen {
                    return Err(HeaderError::PseudoAfterRegular(lossy(&field.name)));
                }
                let v = &field.value;
                match &field.name[..] {
                    b":method" => set_once(&mut method, v, ":method")?,
                    b":scheme" => set_once(&mut scheme, v, ":scheme")?,
                    b":authority" => set_once(&mut authority, v, ":authority")?,
                    b":path" => set_once(&mut path, v, ":path")?,
                    b":protocol" => set_once(&mut protocol, v, ":protocol")?,
                    // RFC 9114 §4.3: "Endpoints MUST treat a request or response that
                    // contains undefined or invalid pseudo-header fields as malformed."
                    _ => return Err(HeaderError::UnknownPseudo(lossy(&field.name))),
                }
                continue;
            }
            regular_seen = true;
            check_not_connection_specific(field, true)?;
            match &field.name[..] {
                b"origin" => {
                    // RFC 6454 §7.3: a user agent sends at most one Origin; two would leave
                    // the server's origin check ambiguous.
                    if origin.is_some() {
                        return Err(HeaderError::DuplicateField(ORIGIN));
                    }
                    let value = String::from_utf8(field.value.to_vec())
                        .map_err(|_| HeaderError::InvalidValue(ORIGIN.to_owned()))?;
                    origin = Some(value);
                }
                b"sec-webtransport-http3-draft02" => draft02 = &field.value[..] == b"1",
                b"wt-available-protocols" => available.push(&field.value),
                _ => {
                    if &field.name[..] == b"host" {
                        hosts.push(&field.value);
                    }
                    headers.push(field.clone());
                }
            }
        }

        let method = method.ok_or(HeaderError::MissingPseudo(":method"))?;
        // RFC 9220 §3 / RFC 8441 §4: the extended CONNECT uses the CONNECT method.
        if &method[..] != b"CONNECT" {
            return Err(HeaderError::NotConnect(lossy(method)));
        }
        let protocol = protocol.ok_or(HeaderError::MissingPseudo(":protocol"))?;
        // RFC 9220 §3 (RFC 8441 §4): "On requests that contain the :protocol pseudo-header
        // field, the :scheme and :path pseudo-header fields of the target URI MUST also be
        // included." RFC 9114 §4.3.1: :authority, when present, MUST NOT be empty.
        let scheme = required(scheme, ":scheme")?;
        let authority = required(authority, ":authority")?;
        let path = required(path, ":path")?;
        // RFC 9114 §4.3.1: the authority "MUST NOT include the deprecated userinfo
        // subcomponent for URIs of scheme "http" or "https"".
        if authority.contains('@') {
            return Err(HeaderError::InvalidPseudo(":authority"));
        }
        // RFC 9114 §4.3.1: :path holds "path-absolute" and an optional query, so it starts
        // with "/" (only OPTIONS may use "*").
        if !path.starts_with('/') {
            return Err(HeaderError::InvalidPseudo(":path"));
        }
        // RFC 9114 §4.3.1: if both :authority and Host are present, "they MUST contain the
        // same value".
        if hosts.iter().any(|h| h[..] != *authority.as_bytes()) {
            return Err(HeaderError::HostMismatch);
        }
        let available_protocols = parse_available_protocols(&available);
        // Checked last: a well-formed request for another protocol is answered, not reset.
        let protocol = UpgradeToken::from_bytes(protocol)
            .ok_or_else(|| HeaderError::UnknownProtocol(lossy(protocol)))?;
        Ok(Self {
            scheme,
            authority,
            path,
            protocol,
            origin,
            draft02,
            available_protocols,
            headers,
        })
    }

    /// The field list in Chromium's order: `:scheme`, `:method`, `:authority`, `:path`,
    /// `:protocol`, `sec-webtransport-http3-draft02` (if `draft02`), `origin` (if any),
    /// `wt-available-protocols` (if any), then `headers`.
    ///
    /// Protocol names that cannot be an sf-string (anything but printable ASCII) are left
    /// out, with a warning.
    pub fn to_fields(&self) -> Vec<HeaderField> {
        let mut fields = Vec::with_capacity(8 + self.headers.len());
        fields.push(HeaderField::new(":scheme", self.scheme.clone()));
        fields.push(HeaderField::new(":method", "CONNECT"));
        fields.push(HeaderField::new(":authority", self.authority.clone()));
        fields.push(HeaderField::new(":path", self.path.clone()));
        fields.push(HeaderField::new(":protocol", self.protocol.as_str()));
        if self.draft02 {
            fields.push(HeaderField::new(DRAFT02_REQUEST, "1"));
        }
        if let Some(origin) = &self.origin {
            fields.push(HeaderField::new(ORIGIN, origin.clone()));
        }
        let offered: Vec<String> = self
            .available_protocols
            .iter()
            .filter_map(|p| {
                let s = serialize_sf_string(p);
                if s.is_none() {
                    tracing::warn!(protocol = ?p, "not offering a protocol name that is not printable ASCII");
                }
                s
            })
            .collect();
        if !offered.is_empty() {
            fields.push(HeaderField::new(AVAILABLE_PROTOCOLS, offered.join(", ")));
        }
        fields.extend(self.headers.iter().cloned());
        fields
    }
}

/// Joins every `wt-available-protocols` line (RFC 8941 §4.2: lines of one field are
/// combined with commas) and parses the list; a malformed list is ignored.
fn parse_available_protocols(lines: &[&Bytes]) -> Vec<String> {
    if lines.is_empty() {
        return Vec::new();
    }
    let joined = lines
        .iter()
        .map(|l| &l[..])
        .collect::<Vec<_>>()
        .join(&b", "[..]);
    match parse_sf_string_list(&joined) {
        Some(list) => list,
        None => {
            tracing::debug!(
                value = %String::from_utf8_lossy(&joined),
                "ignoring malformed wt-available-protocols"
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::headers::tests::fields;
    use crate::qpack;
    use crate::test_util::hex;

    const CHROMIUM: &[(&str, &str)] = &[
        (":scheme", "https"),
        (":method", "CONNECT"),
        (":authority", "127.0.0.1:50140"),
        (":path", "/echo"),
        (":protocol", "webtransport"),
        ("sec-webtransport-http3-draft02", "1"),
        ("origin", "file://"),
    ];

    /// Chromium's request, edited.
    fn chromium_with(edit: impl FnOnce(&mut Vec<HeaderField>)) -> Vec<HeaderField> {
        let mut f = fields(CHROMIUM);
        edit(&mut f);
        f
    }

    #[test]
    fn chromium_vector_end_to_end() {
        // vectors.json connect_header_block_static_only.
        let block = hex("0000d7cf508b089d5c0b8170dc6c01681f518460a49cff2f00b95d8749c87a3f89f058d360ea4567b13f2f0e4148b782c69b07522b3d895a74a6b65692c1ca900b01315f4b8694d416e30c7f");
        let decoded = qpack::decode_field_section(&block, 16384).unwrap();
        let req = ConnectRequest::from_fields(&decoded).unwrap();
        assert_eq!(
            req,
            ConnectRequest {
                scheme: "https".into(),
                authority: "127.0.0.1:50140".into(),
                path: "/echo".into(),
                protocol: UpgradeToken::WebTransport,
                origin: Some("file://".into()),
                draft02: true,
                available_protocols: vec![],
                headers: vec![],
            }
        );
        // Our serialization keeps Chromium's order, so it encodes to the same bytes.
        assert_eq!(req.to_fields(), decoded);
        let mut out = Vec::new();
        qpack::encode_field_section(&req.to_fields(), &mut out);
        assert_eq!(
            out.len(),
            qpack::encoded_field_section_len(&req.to_fields())
        );
        assert_eq!(out, block);
    }

    #[test]
    fn request_round_trips() {
        let req = ConnectRequest {
            authority: "example.com:4433".into(),
            path: "/chat?room=1".into(),
            protocol: UpgradeToken::WebTransportH3,
            origin: Some("https://example.com".into()),
            available_protocols: vec!["echo-v1".into(), "quo\"te\\d".into()],
            headers: fields(&[
                ("user-agent", "x"),
                ("te", "trailers"),
                ("host", "example.com:4433"),
            ]),
            ..ConnectRequest::default()
        };
        let f = req.to_fields();
        assert_eq!(
            f.iter().map(|f| &f.name[..]).collect::<Vec<_>>(),
            [
                &b":scheme"[..],
                b":method",
                b":authority",
                b":path",
                b":protocol",
                b"origin",
                b"wt-available-protocols",
                b"user-agent",
                b"te",
                b"host"
            ]
        );
        assert_eq!(&f[6].value[..], br#""echo-v1", "quo\"te\\d""#);
        assert_eq!(ConnectRequest::from_fields(&f).unwrap(), req);
        // Through QPACK too, with exact lengths.
        let mut out = Vec::new();
        qpack::encode_field_section(&f, &mut out);
        assert_eq!(out.len(), qpack::encoded_field_section_len(&f));
        let back = qpack::decode_field_section(&out, u64::MAX).unwrap();
        assert_eq!(ConnectRequest::from_fields(&back).unwrap(), req);
    }

    #[test]
    fn available_protocols_parsing() {
        let parse = |lines: &[&str]| {
            let mut f = fields(CHROMIUM);
            for l in lines {
                f.push(HeaderField::new("wt-available-protocols", l.to_string()));
            }
            ConnectRequest::from_fields(&f).unwrap().available_protocols
        };
        assert_eq!(parse(&[r#""a", "b""#]), ["a", "b"]);
        // Parameters are ignored; OWS around commas is fine; lines combine.
        assert_eq!(
            parse(&[
                r#" "a";q=1;x, "b";y="z""#,
                r#""c";n=-1.5;t=tok/en;b=?1;s=:YQ==:"#
            ]),
            ["a", "b", "c"]
        );
        // Malformed values are ignored without failing the request.
        for bad in [
            r#""a", "#,     // trailing comma
            r#"a, b"#,      // tokens, not strings
            r#"("a" "b")"#, // inner list
            r#""a"#,        // unterminated
            r#""a\n""#,     // bad escape
            r#""a" "b""#,   // missing comma
            r#""a";Q=1"#,   // uppercase key
            r#""a";q=1.2345"#,
        ] {
            assert!(parse(&[bad]).is_empty(), "{bad}");
        }
        assert!(parse(&[""]).is_empty());
        // Non-ASCII is not an sf-string.
        let mut f = fields(CHROMIUM);
        f.push(HeaderField::new(
            "wt-available-protocols",
            &b"\"\xc3\xa9\""[..],
        ));
        assert!(ConnectRequest::from_fields(&f)
            .unwrap()
            .available_protocols
            .is_empty());
    }

    #[test]
    fn to_fields_drops_unserializable_protocols() {
        let req = ConnectRequest {
            authority: "a".into(),
            path: "/".into(),
            available_protocols: vec!["caf\u{e9}".into()],
            ..ConnectRequest::default()
        };
        assert!(!req
            .to_fields()
            .iter()
            .any(|f| &f.name[..] == b"wt-available-protocols"));
    }

    /// Malformed requests: the exact error, and H3_MESSAGE_ERROR for all.
    #[test]
    fn malformed_requests() {
        use HeaderError::*;
        let push = |n: &'static str, v: &'static str| {
            chromium_with(move |f| f.push(HeaderField::new(n, v)))
        };
        let set = |n: &'static str, v: &'static str| {
            chromium_with(move |f| {
                f.iter_mut()
                    .find(|x| &x.name[..] == n.as_bytes())
                    .unwrap()
                    .value = v.into()
            })
        };
        let remove =
            |n: &'static str| chromium_with(move |f| f.retain(|x| &x.name[..] != n.as_bytes()));
        let cases: Vec<(&str, Vec<HeaderField>, HeaderError)> = vec![
            (
                "pseudo after regular",
                push(":path", "/x"),
                PseudoAfterRegular(":path".into()),
            ),
            (
                "unknown pseudo",
                chromium_with(|f| f.insert(0, HeaderField::new(":foo", "1"))),
                UnknownPseudo(":foo".into()),
            ),
            (
                ":status in a request",
                chromium_with(|f| f.insert(0, HeaderField::new(":status", "200"))),
                UnknownPseudo(":status".into()),
            ),
            (
                "duplicate :path",
                chromium_with(|f| f.insert(0, HeaderField::new(":path", "/a"))),
                DuplicatePseudo(":path"),
            ),
            (
                "missing :protocol",
                remove(":protocol"),
                MissingPseudo(":protocol"),
            ),
            (
                "missing :method",
                remove(":method"),
                MissingPseudo(":method"),
            ),
            (
                "missing :scheme",
                remove(":scheme"),
                MissingPseudo(":scheme"),
            ),
            (
                "missing :authority",
                remove(":authority"),
                MissingPseudo(":authority"),
            ),
            ("missing :path", remove(":path"), MissingPseudo(":path")),
            (
                "empty :authority",
                set(":authority", ""),
                EmptyPseudo(":authority"),
            ),
            ("empty :path", set(":path", ""), EmptyPseudo(":path")),
            (
                "relative :path",
                set(":path", "echo"),
                InvalidPseudo(":path"),
            ),
            (
                "userinfo",
                set(":authority", "u@h:1"),
                InvalidPseudo(":authority"),
            ),
            (
                ":method GET",
                set(":method", "GET"),
                NotConnect("GET".into()),
            ),
            (
                "connection header",
                push("connection", "close"),
                ConnectionSpecific("connection".into()),
            ),
            (
                "keep-alive",
                push("keep-alive", "1"),
                ConnectionSpecific("keep-alive".into()),
            ),
            (
                "transfer-encoding",
                push("transfer-encoding", "chunked"),
                ConnectionSpecific("transfer-encoding".into()),
            ),
            (
                "upgrade",
                push("upgrade", "h2c"),
                ConnectionSpecific("upgrade".into()),
            ),
            (
                "te gzip",
                push("te", "gzip"),
                ConnectionSpecific("te: gzip".into()),
            ),
            (
                "uppercase name",
                push("Origin2", "x"),
                UppercaseName("Origin2".into()),
            ),
            (
                "uppercase pseudo",
                chromium_with(|f| f[0].name = Bytes::from_static(b":Scheme")),
                UppercaseName(":Scheme".into()),
            ),
            ("space in name", push("a b", "x"), InvalidName("a b".into())),
            ("empty name", push("", "x"), InvalidName("".into())),
            ("bare colon", push(":", "x"), InvalidName(":".into())),
            (
                "CR in value",
                push("x-a", "1\r\nx-b: 2"),
                InvalidValue("x-a".into()),
            ),
            (
                "NUL in value",
                push("x-a", "\0"),
                InvalidValue("x-a".into()),
            ),
            ("host mismatch", push("host", "evil.example"), HostMismatch),
            (
                "two origins",
                push("origin", "https://a"),
                DuplicateField("origin"),
            ),
        ];
        assert!(cases.len() >= 20);
        for (what, f, expected) in cases {
            let err = ConnectRequest::from_fields(&f).unwrap_err();
            assert_eq!(err, expected, "{what}");
            assert_eq!(err.code(), Code::H3_MESSAGE_ERROR, "{what}");
            assert_eq!(err.status(), None, "{what}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn unknown_protocol_is_its_own_error() {
        let f = chromium_with(|f| f[4].value = Bytes::from_static(b"websocket"));
        let err = ConnectRequest::from_fields(&f).unwrap_err();
        assert_eq!(err, HeaderError::UnknownProtocol("websocket".into()));
        assert_eq!(err.status(), Some(501));
        assert_eq!(err.code(), Code::H3_MESSAGE_ERROR);
        // A malformation wins over the unknown token: that request is reset, not answered.
        let f = chromium_with(|f| {
            f[4].value = Bytes::from_static(b"websocket");
            f.push(HeaderField::new("connection", "x"));
        });
        assert_eq!(
            ConnectRequest::from_fields(&f).unwrap_err(),
            HeaderError::ConnectionSpecific("connection".into())
        );
        // webtransport-h3 is accepted; tokens are case-sensitive.
        let f = chromium_with(|f| f[4].value = Bytes::from_static(b"webtransport-h3"));
        assert_eq!(
            ConnectRequest::from_fields(&f).unwrap().protocol,
            UpgradeToken::WebTransportH3
        );
        let f = chromium_with(|f| f[4].value = Bytes::from_static(b"WebTransport"));
        assert!(matches!(
            ConnectRequest::from_fields(&f),
            Err(HeaderError::UnknownProtocol(_))
        ));
    }

    #[test]
    fn lenient_request_details() {
        // te: trailers is allowed; a matching host is kept among the headers; a draft02
        // value other than "1" is not draft02.
        let f = chromium_with(|f| {
            f[5].value = Bytes::from_static(b"0");
            f.push(HeaderField::new("te", "trailers"));
            f.push(HeaderField::new("host", "127.0.0.1:50140"));
            f.push(HeaderField::new("x-obs", &b"\xff\t"[..]));
        });
        let req = ConnectRequest::from_fields(&f).unwrap();
        assert!(!req.draft02);
        assert_eq!(
            req.headers,
            [
                HeaderField::new("te", "trailers"),
                HeaderField::new("host", "127.0.0.1:50140"),
                HeaderField::new("x-obs", &b"\xff\t"[..]),
            ]
        );
    }
}
