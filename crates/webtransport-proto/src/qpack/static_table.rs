//! The QPACK static table (RFC 9204 §3.1 and Appendix A), indexed from 0.

/// Every entry as (name, value), at its index. Typed in from RFC 9204 Appendix A; values
/// that the RFC wraps across lines are joined as the RFC notes ("any line breaks that
/// appear within field names or values are due to formatting").
#[rustfmt::skip]
pub const ENTRIES: [(&str, &str); 99] = [
    (":authority", ""),
    (":path", "/"),
    ("age", "0"),
    ("content-disposition", ""),
    ("content-length", "0"),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    // 10
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("referer", ""),
    ("set-cookie", ""),
    (":method", "CONNECT"),
    (":method", "DELETE"),
    (":method", "GET"),
    (":method", "HEAD"),
    (":method", "OPTIONS"),
    // 20
    (":method", "POST"),
    (":method", "PUT"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "103"),
    (":status", "200"),
    (":status", "304"),
    (":status", "404"),
    (":status", "503"),
    ("accept", "*/*"),
    // 30
    ("accept", "application/dns-message"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-ranges", "bytes"),
    ("access-control-allow-headers", "cache-control"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-allow-origin", "*"),
    ("cache-control", "max-age=0"),
    ("cache-control", "max-age=2592000"),
    ("cache-control", "max-age=604800"),
    ("cache-control", "no-cache"),
    // 40
    ("cache-control", "no-store"),
    ("cache-control", "public, max-age=31536000"),
    ("content-encoding", "br"),
    ("content-encoding", "gzip"),
    ("content-type", "application/dns-message"),
    ("content-type", "application/javascript"),
    ("content-type", "application/json"),
    ("content-type", "application/x-www-form-urlencoded"),
    ("content-type", "image/gif"),
    ("content-type", "image/jpeg"),
    // 50
    ("content-type", "image/png"),
    ("content-type", "text/css"),
    ("content-type", "text/html; charset=utf-8"),
    ("content-type", "text/plain"),
    ("content-type", "text/plain;charset=utf-8"),
    ("range", "bytes=0-"),
    ("strict-transport-security", "max-age=31536000"),
    ("strict-transport-security", "max-age=31536000; includesubdomains"),
    ("strict-transport-security", "max-age=31536000; includesubdomains; preload"),
    ("vary", "accept-encoding"),
    // 60
    ("vary", "origin"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "1; mode=block"),
    (":status", "100"),
    (":status", "204"),
    (":status", "206"),
    (":status", "302"),
    (":status", "400"),
    (":status", "403"),
    (":status", "421"),
    // 70
    (":status", "425"),
    (":status", "500"),
    ("accept-language", ""),
    ("access-control-allow-credentials", "FALSE"),
    ("access-control-allow-credentials", "TRUE"),
    ("access-control-allow-headers", "*"),
    ("access-control-allow-methods", "get"),
    ("access-control-allow-methods", "get, post, options"),
    ("access-control-allow-methods", "options"),
    ("access-control-expose-headers", "content-length"),
    // 80
    ("access-control-request-headers", "content-type"),
    ("access-control-request-method", "get"),
    ("access-control-request-method", "post"),
    ("alt-svc", "clear"),
    ("authorization", ""),
    ("content-security-policy", "script-src 'none'; object-src 'none'; base-uri 'none'"),
    ("early-data", "1"),
    ("expect-ct", ""),
    ("forwarded", ""),
    ("if-range", ""),
    // 90
    ("origin", ""),
    ("purpose", "prefetch"),
    ("server", ""),
    ("timing-allow-origin", "*"),
    ("upgrade-insecure-requests", "1"),
    ("user-agent", ""),
    ("x-forwarded-for", ""),
    ("x-frame-options", "deny"),
    ("x-frame-options", "sameorigin"),
];

/// The entry at `index` as (name, value), or `None` past the end of the table.
pub fn get(index: u64) -> Option<(&'static [u8], &'static [u8])> {
    let (name, value) = ENTRIES.get(usize::try_from(index).ok()?)?;
    Some((name.as_bytes(), value.as_bytes()))
}

/// What the static table holds for a field line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// An entry with this name and value.
    Exact(u8),
    /// No exact entry, but this is the lowest index with the same name.
    Name(u8),
}

/// Looks a field line up: an exact match wins, otherwise the lowest index with the same
/// name (lower indexes take fewer bytes).
pub fn find(name: &[u8], value: &[u8]) -> Option<Match> {
    let mut name_match = None;
    for (i, (n, v)) in ENTRIES.iter().enumerate() {
        if n.as_bytes() != name {
            continue;
        }
        // ENTRIES has 99 entries, so the index fits in a u8.
        let i = i as u8;
        if v.as_bytes() == value {
            return Some(Match::Exact(i));
        }
        name_match.get_or_insert(i);
    }
    name_match.map(Match::Name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_checks_against_rfc9204_appendix_a() {
        assert_eq!(get(0), Some((&b":authority"[..], &b""[..])));
        assert_eq!(get(1), Some((&b":path"[..], &b"/"[..])));
        assert_eq!(get(15), Some((&b":method"[..], &b"CONNECT"[..])));
        assert_eq!(get(23), Some((&b":scheme"[..], &b"https"[..])));
        assert_eq!(get(25), Some((&b":status"[..], &b"200"[..])));
        assert_eq!(get(90), Some((&b"origin"[..], &b""[..])));
        assert_eq!(get(98), Some((&b"x-frame-options"[..], &b"sameorigin"[..])));
        assert_eq!(get(99), None);
        assert_eq!(get(u64::MAX), None);
    }

    #[test]
    fn names_are_lowercase_and_entries_unique() {
        for (i, (n, v)) in ENTRIES.iter().enumerate() {
            assert!(!n.bytes().any(|b| b.is_ascii_uppercase()), "entry {i}");
            assert_eq!(
                find(n.as_bytes(), v.as_bytes()),
                Some(Match::Exact(i as u8))
            );
        }
    }

    #[test]
    fn find_prefers_exact_then_lowest_name() {
        assert_eq!(find(b":status", b"200"), Some(Match::Exact(25)));
        assert_eq!(find(b":status", b"201"), Some(Match::Name(24)));
        assert_eq!(find(b":protocol", b"webtransport"), None);
        assert_eq!(
            find(b"origin", b"https://example.com"),
            Some(Match::Name(90))
        );
    }
}
