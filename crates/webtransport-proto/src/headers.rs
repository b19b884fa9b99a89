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
//! Field List of Strings) and `wt-protocol` (a String item) are parsed with the small
//! RFC 8941 subset at the bottom of this module; malformed values are ignored, as the
//! draft asks, rather than failing the message.

use bytes::Bytes;

use crate::error::Code;
use crate::qpack::HeaderField;

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

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks one field line's name and value (RFC 9114 §4.2, §4.1.2, §10.3); pseudo-header
/// names are checked after their colon.
fn check_field(field: &HeaderField) -> Result<(), HeaderError> {
    let name = &field.name[..];
    let token = name.strip_prefix(b":").unwrap_or(name);
    // RFC 9114 §4.2: "A request or response containing uppercase characters in field
    // names MUST be treated as malformed."
    if token.iter().any(u8::is_ascii_uppercase) {
        return Err(HeaderError::UppercaseName(lossy(name)));
    }
    // RFC 9114 §4.1.2: "the inclusion of invalid characters in field names or values"
    // makes a message malformed; names are tokens (RFC 9110 §5.1, §5.6.2).
    if token.is_empty() || !token.iter().all(|&b| is_tchar(b)) {
        return Err(HeaderError::InvalidName(lossy(name)));
    }
    // RFC 9114 §10.3: "Any request or response that contains a character not permitted
    // in a field value MUST be treated as malformed." RFC 9110 §5.5 permits visible
    // characters, SP, HTAB and obs-text; NUL, CR and LF are the dangerous ones.
    if field
        .value
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(HeaderError::InvalidValue(lossy(name)));
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Rejects connection-specific fields (RFC 9114 §4.2): "any message containing
/// connection-specific fields MUST be treated as malformed", except `te: trailers` in a
/// request.
fn check_not_connection_specific(field: &HeaderField, request: bool) -> Result<(), HeaderError> {
    match &field.name[..] {
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
            Err(HeaderError::ConnectionSpecific(lossy(&field.name)))
        }
        // RFC 9114 §4.2: TE "MAY be present in an HTTP/3 request header; when it is, it
        // MUST NOT contain any value other than "trailers"."
        b"te" if !request || &field.value[..] != b"trailers" => Err(
            HeaderError::ConnectionSpecific(format!("te: {}", lossy(&field.value))),
        ),
        _ => Ok(()),
    }
}

/// Stores a pseudo-header value, refusing a second one (RFC 9114 §4.3.1: "exactly one
/// value"; a second one is a prohibited field, §4.1.2).
fn set_once<'a>(
    slot: &mut Option<&'a Bytes>,
    value: &'a Bytes,
    name: &'static str,
) -> Result<(), HeaderError> {
    if slot.replace(value).is_some() {
        return Err(HeaderError::DuplicatePseudo(name));
    }
    Ok(())
}

/// A mandatory, non-empty, UTF-8 pseudo-header value.
fn required(value: Option<&Bytes>, name: &'static str) -> Result<String, HeaderError> {
    let value = value.ok_or(HeaderError::MissingPseudo(name))?;
    if value.is_empty() {
        return Err(HeaderError::EmptyPseudo(name));
    }
    String::from_utf8(value.to_vec()).map_err(|_| HeaderError::InvalidPseudo(name))
}

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

// ---- RFC 8941 Structured Field Values: just Strings and Lists of Strings ----

fn is_sf_string_serializable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Serializes an sf-string (RFC 8941 §4.1.6): quoted, with `"` and `\` escaped. `None`
/// if `s` has characters other than printable ASCII (0x20-0x7e).
pub fn serialize_sf_string(s: &str) -> Option<String> {
    if !is_sf_string_serializable(s) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// Serializes a List of sf-strings (RFC 8941 §4.1.1), members separated by `", "`.
/// `None` if any member cannot be an sf-string. An empty list gives an empty string,
/// which RFC 8941 says not to send at all.
pub fn serialize_sf_string_list<S: AsRef<str>>(items: &[S]) -> Option<String> {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&serialize_sf_string(item.as_ref())?);
    }
    Some(out)
}

/// Parses a field value that is a single Item whose bare item is a String (RFC 8941 §4.2
/// with field type "item"); parameters are checked for syntax and ignored.
pub fn parse_sf_string_item(value: &[u8]) -> Option<String> {
    let mut p = SfParser { input: value };
    p.skip_sp();
    let s = p.string()?;
    p.skip_parameters()?;
    p.skip_sp();
    p.input.is_empty().then_some(s)
}

/// Parses a field value that is a List whose members are all String items (RFC 8941 §4.2
/// with field type "list", §4.2.1); parameters are checked for syntax and ignored. `None`
/// if the value is not such a list (inner lists and non-string items included).
pub fn parse_sf_string_list(value: &[u8]) -> Option<Vec<String>> {
    let mut p = SfParser { input: value };
    let mut members = Vec::new();
    p.skip_sp();
    while !p.input.is_empty() {
        members.push(p.string()?);
        p.skip_parameters()?;
        p.skip_ows();
        if p.input.is_empty() {
            break;
        }
        p.expect(b',')?;
        p.skip_ows();
        // §4.2.1: a trailing comma fails parsing.
        if p.input.is_empty() {
            return None;
        }
    }
    Some(members)
}

/// A cursor over a structured field value; every method returns `None` on a syntax error.
struct SfParser<'a> {
    input: &'a [u8],
}

impl SfParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.first().copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let (&first, rest) = self.input.split_first()?;
        self.input = rest;
        Some(first)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.bump()? == c).then_some(())
    }

    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let n = self.input.iter().take_while(|&&b| f(b)).count();
        self.input = self.input.get(n..).unwrap_or_default();
        n
    }

    fn skip_sp(&mut self) {
        self.eat_while(|b| b == b' ');
    }

    fn skip_ows(&mut self) {
        self.eat_while(|b| b == b' ' || b == b'\t');
    }

    /// §4.2.5 Parsing a String.
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            match self.bump()? {
                b'\\' => match self.bump()? {
                    c @ (b'"' | b'\\') => out.push(char::from(c)),
                    _ => return None,
                },
                b'"' => return Some(out),
                c if (0x20..=0x7e).contains(&c) => out.push(char::from(c)),
                _ => return None,
            }
        }
    }

    /// §4.2.3.2 Parsing Parameters, discarding them.
    fn skip_parameters(&mut self) -> Option<()> {
        while self.peek() == Some(b';') {
            self.bump();
            self.skip_sp();
            self.key()?;
            if self.peek() == Some(b'=') {
                self.bump();
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// §4.2.3.3 Parsing a Key.
    fn key(&mut self) -> Option<()> {
        let first = self.bump()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        self.eat_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        Some(())
    }

    /// §4.2.3.1 Parsing a Bare Item, discarding it.
    fn bare_item(&mut self) -> Option<()> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string().map(drop),
            b'*' | b'a'..=b'z' | b'A'..=b'Z' => {
                // §4.2.6 Parsing a Token.
                self.bump();
                self.eat_while(|b| is_tchar(b) || b == b':' || b == b'/');
                Some(())
            }
            b':' => {
                // §4.2.7 Parsing a Byte Sequence.
                self.bump();
                self.eat_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.expect(b':')
            }
            b'?' => {
                // §4.2.8 Parsing a Boolean.
                self.bump();
                matches!(self.bump()?, b'0' | b'1').then_some(())
            }
            _ => None,
        }
    }

    /// §4.2.4 Parsing an Integer or Decimal, discarding it.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.bump();
        }
        let int_digits = self.eat_while(|b| b.is_ascii_digit());
        if int_digits == 0 {
            return None;
        }
        if self.peek() != Some(b'.') {
            return (int_digits <= 15).then_some(());
        }
        self.bump();
        let frac_digits = self.eat_while(|b| b.is_ascii_digit());
        (int_digits <= 12 && (1..=3).contains(&frac_digits)).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qpack;
    use proptest::prelude::*;

    fn fields(list: &[(&str, &str)]) -> Vec<HeaderField> {
        list.iter()
            .map(|(n, v)| HeaderField::new(n.to_string(), v.to_string()))
            .collect()
    }

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
        let resp = ConnectResponse {
            protocol: Some("\u{7f}".into()),
            ..ConnectResponse::new(200)
        };
        assert_eq!(resp.to_fields(), fields(&[(":status", "200")]));
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

    #[test]
    fn sf_string_serialization() {
        assert_eq!(serialize_sf_string("a").as_deref(), Some("\"a\""));
        assert_eq!(serialize_sf_string("").as_deref(), Some("\"\""));
        assert_eq!(
            serialize_sf_string(r#"a"b\c"#).as_deref(),
            Some(r#""a\"b\\c""#)
        );
        assert_eq!(serialize_sf_string("tab\there"), None);
        assert_eq!(serialize_sf_string("\u{e9}"), None);
        assert_eq!(serialize_sf_string_list::<&str>(&[]).as_deref(), Some(""));
        assert_eq!(
            serialize_sf_string_list(&["a", "b"]).as_deref(),
            Some(r#""a", "b""#)
        );
        assert_eq!(
            parse_sf_string_item(br#""a\"b\\c""#).as_deref(),
            Some(r#"a"b\c"#)
        );
        assert_eq!(parse_sf_string_item(b"\"a\" x"), None);
        assert_eq!(parse_sf_string_item(b""), None);
        assert_eq!(parse_sf_string_list(b""), Some(vec![]));
        assert_eq!(parse_sf_string_list(b"   "), Some(vec![]));
    }

    proptest! {
        #[test]
        fn sf_string_lists_round_trip(items in proptest::collection::vec("[ -~]{0,12}", 0..6)) {
            let s = serialize_sf_string_list(&items).unwrap();
            prop_assert_eq!(parse_sf_string_list(s.as_bytes()).unwrap(), items);
        }

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
