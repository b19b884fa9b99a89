//! The field checks that several config types share. Each names the offending field by its
//! path from the top of the config, as [`ConfigError::field`] reports it.

use std::path::Path;
use std::time::Duration;

use super::{ConfigError, VARINT_MAX};

fn path_of(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

pub(super) fn positive(prefix: &str, name: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(path_of(prefix, name), "must be > 0"));
    }
    Ok(())
}

pub(super) fn optional_positive(name: &str, d: Option<Duration>) -> Result<(), ConfigError> {
    if d.is_some_and(|d| d.is_zero()) {
        return Err(ConfigError::invalid(
            name,
            "must be > 0; use \"off\" to disable it",
        ));
    }
    Ok(())
}

pub(super) fn window(prefix: &str, name: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(
            path_of(prefix, name),
            "must be > 0: a zero window lets no data through",
        ));
    }
    if v > VARINT_MAX {
        return Err(ConfigError::invalid(
            path_of(prefix, name),
            "is above 2^62 - 1, the largest QUIC flow-control value (RFC 9000 §16)",
        ));
    }
    Ok(())
}

pub(super) fn file_exists(field: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::FileNotFound {
            field: field.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// At least one draft must be offered, or no peer could ever be spoken to.
pub(super) fn validate_drafts(
    drafts: webtransport_proto::settings::WtDrafts,
) -> Result<(), ConfigError> {
    if drafts.is_empty() {
        return Err(ConfigError::invalid(
            "drafts",
            "is empty; offer at least one WebTransport draft (draft-02, draft-07, draft-13, \
             draft-15, draft-17)",
        ));
    }
    Ok(())
}

pub(super) fn validate_alpn(alpn: &[String]) -> Result<(), ConfigError> {
    if alpn.is_empty() {
        return Err(ConfigError::invalid(
            "alpn",
            "is empty; WebTransport over HTTP/3 needs \"h3\"",
        ));
    }
    // RFC 7301 §3.1: "Empty strings MUST NOT be included and byte strings MUST NOT be
    // truncated", and each protocol name is 1 to 255 bytes long.
    for (i, p) in alpn.iter().enumerate() {
        if p.is_empty() || p.len() > 255 {
            return Err(ConfigError::invalid(
                format!("alpn[{i}]"),
                "an ALPN protocol name is 1 to 255 bytes (RFC 7301 §3.1)",
            ));
        }
    }
    // RFC 9114 §3.1: HTTP/3 is negotiated with the "h3" token; without it no browser connects.
    if !alpn.iter().any(|p| p == "h3") {
        return Err(ConfigError::invalid(
            "alpn",
            "must contain \"h3\" (RFC 9114 §3.1); browsers offer nothing else",
        ));
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.5: CR, LF and NUL are never valid in a field value.
pub(super) fn valid_field_value(v: &str) -> bool {
    !v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

pub(super) fn validate_headers(headers: &[(String, String)]) -> Result<(), ConfigError> {
    for (i, (name, value)) in headers.iter().enumerate() {
        let field = format!("headers[{i}]");
        if name.starts_with(':') {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} is a pseudo-header; the library sets those"),
            ));
        }
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} is not a valid field name (RFC 9110 §5.1)"),
            ));
        }
        // RFC 9114 §4.2: "Characters in field names MUST be converted to lowercase prior to
        // their encoding. A request or response containing uppercase characters in field names
        // MUST be treated as malformed."
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} has uppercase letters; HTTP/3 field names are lowercase"),
            ));
        }
        // RFC 9114 §4.2: "An endpoint MUST NOT generate an HTTP/3 field section containing
        // connection-specific fields".
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} is connection-specific and forbidden in HTTP/3 (RFC 9114 §4.2)"),
            ));
        }
        if !valid_field_value(value) {
            return Err(ConfigError::invalid(
                field,
                format!("value of {name:?} contains CR, LF or NUL (RFC 9110 §5.5)"),
            ));
        }
    }
    Ok(())
}
