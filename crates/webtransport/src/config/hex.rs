//! SHA-256 certificate hashes as text: how a config writes the hashes it pins
//! ([`CertVerification::ServerCertificateHashes`](super::CertVerification)) and how users
//! paste them. The `tls` module re-exports [`sha256_hex`] and wraps [`parse_sha256_hex`].

use std::fmt::Write;

/// Why a text is not a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HashTextError {
    /// Not 64 hex digits once separators are dropped.
    #[error("expected 32 bytes (64 hex digits), found {digits} digits")]
    WrongLength {
        /// How many digits (bytes other than separators) were found.
        digits: usize,
    },
    /// A byte that is neither a hex digit nor a separator.
    #[error("{found:?} is not a hex digit")]
    NotHexDigit {
        /// The offending byte, as a `char`.
        found: char,
    },
}

/// Lowercase hex without separators, as `tls::parse_sha256_hex` reads it.
pub fn sha256_hex(hash: &[u8; 32]) -> String {
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses a SHA-256 hash as users paste it: plain hex (`ab12...`), bytes separated by `:` or
/// spaces (`AB:12:...`), in either case, optionally after an `=` as in OpenSSL's
/// `SHA256 Fingerprint=AB:12:...`.
pub(crate) fn parse_sha256_hex(text: &str) -> Result<[u8; 32], HashTextError> {
    let value = text.rsplit_once('=').map_or(text, |(_, v)| v);
    let digits: Vec<u8> = value
        .bytes()
        .filter(|b| !(b.is_ascii_whitespace() || *b == b':'))
        .collect();
    if digits.len() != 64 {
        return Err(HashTextError::WrongLength {
            digits: digits.len(),
        });
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let nibble = |c: u8| {
            (c as char)
                .to_digit(16)
                .ok_or(HashTextError::NotHexDigit { found: c as char })
        };
        *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let plain = sha256_hex(&hash);
        assert_eq!(plain.len(), 64);
        assert_eq!(&plain[..6], "00070e");
        let colons = hash
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        for text in [
            plain.clone(),
            plain.to_uppercase(),
            colons.clone(),
            format!("  {colons}\n"),
            format!("SHA256 Fingerprint={colons}"),
        ] {
            assert_eq!(parse_sha256_hex(&text).unwrap(), hash, "{text}");
        }
        let e = parse_sha256_hex("abcd").unwrap_err();
        assert_eq!(e, HashTextError::WrongLength { digits: 4 });
        let e = e.to_string();
        assert!(e.contains("64 hex digits") && e.contains("found 4"), "{e}");
        let e = parse_sha256_hex(&"g".repeat(64)).unwrap_err();
        assert_eq!(e, HashTextError::NotHexDigit { found: 'g' });
        assert!(e.to_string().contains("not a hex digit"), "{e}");
    }
}
