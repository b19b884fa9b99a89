//! The HTTP/3 rules for the fields of a request or response (RFC 9114 §4.1.2, §4.2,
//! §4.3, §10.3) that QPACK does not check, shared by [`ConnectRequest`] and
//! [`ConnectResponse`].

use bytes::Bytes;

use super::HeaderError;
#[cfg(doc)]
use super::{ConnectRequest, ConnectResponse};
use crate::qpack::HeaderField;

/// The bytes as text, for error messages.
pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks one field line's name and value (RFC 9114 §4.2, §4.1.2, §10.3); pseudo-header
/// names are checked after their colon.
pub(super) fn check_field(field: &HeaderField) -> Result<(), HeaderError> {
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
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Rejects connection-specific fields (RFC 9114 §4.2): "any message containing
/// connection-specific fields MUST be treated as malformed", except `te: trailers` in a
/// request.
pub(super) fn check_not_connection_specific(
    field: &HeaderField,
    request: bool,
) -> Result<(), HeaderError> {
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
pub(super) fn set_once<'a>(
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
pub(super) fn required(value: Option<&Bytes>, name: &'static str) -> Result<String, HeaderError> {
    let value = value.ok_or(HeaderError::MissingPseudo(name))?;
    if value.is_empty() {
        return Err(HeaderError::EmptyPseudo(name));
    }
    String::from_utf8(value.to_vec()).map_err(|_| HeaderError::InvalidPseudo(name))
}
