//! What the `serverCertificateHashes` rules read from a certificate (version, validity, key
//! type, SubjectPublicKeyInfo), parsed with `x509-parser`.
//!
//! This cannot widen trust: the rules run after the hash already matched, and only add
//! refusals. A certificate that `x509-parser` cannot read, or with bytes after it, is `None`,
//! which the rules report as
//! [`CertificateHashError::Malformed`](super::CertificateHashError::Malformed).
//!
//! `x509-parser` (through `asn1-rs`) compares tag numbers only, so `0xb0` passes for a
//! SEQUENCE and `0x86` for an OBJECT IDENTIFIER, and it reads the looser time forms of X.680.
//! The fields the rules read are therefore checked again here, with exact identifier octets
//! and RFC 5280's one time form, as browsers' parsers do: the version, the validity and the
//! SubjectPublicKeyInfo. The rest of the certificate is left to `x509-parser`; rustls parses
//! the end-entity certificate strictly in every handshake anyway, to check its signature.

use std::fmt;

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};
use x509_parser::certificate::{TbsCertificate, X509CertificateParser};
use x509_parser::nom::{Offset, Parser};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED25519, OID_SIG_ED448,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Facts<'a> {
    /// 1, 2 or 3.
    pub(super) version: u8,
    /// Unix seconds.
    pub(super) not_before: i64,
    /// Unix seconds.
    pub(super) not_after: i64,
    /// The whole SubjectPublicKeyInfo element, tag and length included.
    pub(super) spki: &'a [u8],
    pub(super) key: KeyType,
}

/// The subject key's algorithm (and curve), as far as the rules and their messages care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyType {
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    EcdsaOtherCurve,
    Rsa,
    RsaPss,
    Ed25519,
    Ed448,
    /// The content bytes of the algorithm's OID.
    Unknown(Vec<u8>),
}

/// A name for the key type, for error messages.
impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::EcdsaP384 => "ECDSA P-384",
            Self::EcdsaP521 => "ECDSA P-521",
            Self::EcdsaOtherCurve => "ECDSA on another curve",
            Self::Rsa => "RSA",
            Self::RsaPss => "RSA-PSS",
            Self::Ed25519 => "Ed25519",
            Self::Ed448 => "Ed448",
            Self::Unknown(oid) => {
                f.write_str("an unknown algorithm (OID bytes ")?;
                for b in oid {
                    write!(f, "{b:02x}")?;
                }
                return f.write_str(")");
            }
        })
    }
}

impl KeyType {
    /// From the content bytes of the key algorithm's OID and of the parameters when they are
    /// an OID: the named curve of an EC key (RFC 5480 §2.1.1).
    fn of(algorithm: &[u8], curve: Option<&[u8]>) -> Self {
        if algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY.as_bytes() {
            return match curve {
                Some(c) if c == OID_EC_P256.as_bytes() => Self::EcdsaP256,
                Some(c) if c == OID_NIST_EC_P384.as_bytes() => Self::EcdsaP384,
                Some(c) if c == OID_NIST_EC_P521.as_bytes() => Self::EcdsaP521,
                _ => Self::EcdsaOtherCurve,
            };
        }
        match algorithm {
            a if a == OID_PKCS1_RSAENCRYPTION.as_bytes() => Self::Rsa,
            a if a == OID_PKCS1_RSASSAPSS.as_bytes() => Self::RsaPss,
            a if a == OID_SIG_ED25519.as_bytes() => Self::Ed25519,
            a if a == OID_SIG_ED448.as_bytes() => Self::Ed448,
            other => Self::Unknown(other.to_vec()),
        }
    }
}

/// Reads the facts from a DER certificate with nothing after it. Extensions are not
/// deep-parsed: the rules do not look at them.
pub(super) fn parse(der: &[u8]) -> Option<Facts<'_>> {
    let (rest, cert) = match X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der)
    {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::debug!(error = %e, "certificate is not well-formed X.509");
            return None;
        }
    };
    if !rest.is_empty() {
        return None;
    }
    let tbs = &cert.tbs_certificate;
    // Version ::= INTEGER { v1(0), v2(1), v3(2) }
    let version = match tbs.version.0 {
        v @ 0..=2 => v as u8 + 1,
        _ => return None,
    };
    if !version_exact(tbs.as_ref()) || !times_in_rfc5280_form(&validity(tbs)?) {
        return None;
    }
    let spki = tbs.subject_pki.raw;
    Some(Facts {
        version,
        not_before: tbs.validity.not_before.timestamp(),
        not_after: tbs.validity.not_after.timestamp(),
        spki,
        key: key_type(spki)?,
    })
}

/// Whether `any`'s identifier octet is exactly that of the universal type `tag`: SEQUENCE
/// constructed, the others primitive.
fn is(any: &Any<'_>, tag: Tag) -> bool {
    any.class() == Class::Universal
        && any.header.is_constructed() == (tag == Tag::Sequence)
        && any.tag() == tag
}

/// Whether the version field of the TBSCertificate `tbs`, when present, is
/// `[0] EXPLICIT INTEGER` (RFC 5280 §4.1).
fn version_exact(tbs: &[u8]) -> bool {
    let Ok((_, tbs)) = Any::from_der(tbs) else {
        return false;
    };
    match Any::from_der(tbs.data) {
        Ok((_, field)) if field.class() == Class::ContextSpecific && field.tag() == Tag(0) => {
            field.header.is_constructed()
                && matches!(Any::from_der(field.data), Ok(([], v)) if is(&v, Tag::Integer))
        }
        // No version: v1, and the field is the serial number.
        Ok(_) => true,
        Err(_) => false,
    }
}

/// The Validity element of `tbs`: the element after the issuer (RFC 5280 §4.1). `x509-parser`
/// does not copy, so the issuer is a slice of the TBSCertificate's bytes.
fn validity<'t>(tbs: &'t TbsCertificate<'_>) -> Option<Any<'t>> {
    let raw: &[u8] = tbs.as_ref();
    let (after_issuer, _) = Any::from_der(raw.get(raw.offset(tbs.issuer.as_raw())..)?).ok()?;
    Some(Any::from_der(after_issuer).ok()?.1)
}

/// Whether both times of `validity` have the one form RFC 5280 allows.
fn times_in_rfc5280_form(validity: &Any<'_>) -> bool {
    if !is(validity, Tag::Sequence) {
        return false;
    }
    let mut content = validity.data;
    for _ in 0..2 {
        let Ok((rest, time)) = Any::from_der(content) else {
            return false;
        };
        if !(is(&time, time.tag()) && rfc5280_time(time.tag(), time.data)) {
            return false;
        }
        content = rest;
    }
    content.is_empty()
}

/// RFC 5280 §4.1.2.5.1: UTCTime is `YYMMDDHHMMSSZ`; §4.1.2.5.2: GeneralizedTime is
/// `YYYYMMDDHHMMSSZ`.
fn rfc5280_time(tag: Tag, text: &[u8]) -> bool {
    let digits = match tag {
        Tag::UtcTime => 12,
        Tag::GeneralizedTime => 14,
        _ => return false,
    };
    matches!(text.split_last(), Some((b'Z', number))
        if number.len() == digits && number.iter().all(u8::is_ascii_digit))
}

/// The key type of the SubjectPublicKeyInfo element `spki` (RFC 5280 §4.1):
/// `SEQUENCE { algorithm SEQUENCE { OBJECT IDENTIFIER, parameters OPTIONAL }, BIT STRING }`.
fn key_type(spki: &[u8]) -> Option<KeyType> {
    let (_, spki) = Any::from_der(spki).ok()?;
    let (rest, algorithm) = Any::from_der(spki.data).ok()?;
    let (_, key) = Any::from_der(rest).ok()?;
    let (rest, oid) = Any::from_der(algorithm.data).ok()?;
    if !(is(&spki, Tag::Sequence)
        && is(&algorithm, Tag::Sequence)
        && is(&key, Tag::BitString)
        && is(&oid, Tag::Oid))
    {
        return None;
    }
    let curve = match Any::from_der(rest) {
        Ok((_, p)) if is(&p, Tag::Oid) => Some(p.data),
        _ => None,
    };
    Some(KeyType::of(oid.data, curve))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::generate_self_signed;

    #[test]
    fn reader_survives_truncation_and_garbage() {
        let cert = generate_self_signed(&["localhost"]).unwrap();
        let der = cert.cert_der.as_ref();
        for len in 0..der.len() {
            assert!(parse(&der[..len]).is_none(), "prefix of {len} bytes parsed");
        }
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert!(parse(&trailing).is_none());
        // Flip every byte once: never panics.
        let mut copy = der.to_vec();
        for i in 0..copy.len() {
            copy[i] ^= 0xff;
            let _ = parse(&copy);
            copy[i] ^= 0xff;
        }
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"\x30\x85\xff\xff\xff\xff\xff",
            b"\x1f\x01\x00",
        ] {
            assert!(parse(junk).is_none());
        }
    }

    #[test]
    fn only_rfc5280_time_forms() {
        assert!(rfc5280_time(Tag::UtcTime, b"250101123456Z"));
        assert!(rfc5280_time(Tag::GeneralizedTime, b"20500101123456Z"));
        for (tag, text) in [
            (Tag::UtcTime, &b"2501011234Z"[..]),
            (Tag::UtcTime, b"250101123456+0100"),
            (Tag::UtcTime, b"250101123456"),
            (Tag::UtcTime, b"25010112345aZ"),
            (Tag::UtcTime, b"20500101123456Z"),
            (Tag::GeneralizedTime, b"20500101123456.5Z"),
            (Tag::GeneralizedTime, b"205001011234Z"),
            (Tag::GeneralizedTime, b"250101123456Z"),
            (Tag::PrintableString, b"250101123456Z"),
        ] {
            assert!(!rfc5280_time(tag, text), "{tag} {:?}", text.escape_ascii());
        }
    }

    /// `der` with the content of its notBefore replaced by `time` (tag unchanged), and the
    /// lengths around it fixed up.
    fn with_not_before(der: &[u8], time: &[u8]) -> Vec<u8> {
        // Validity ::= SEQUENCE { notBefore UTCTime (13 bytes), notAfter UTCTime (13 bytes) }
        let at = der
            .windows(4)
            .position(|w| w == [0x30, 0x1e, 0x17, 0x0d])
            .unwrap();
        let delta = time.len() as isize - 13;
        let mut out = der[..at].to_vec();
        out.extend_from_slice(&[0x30, (0x1e + delta) as u8, 0x17, time.len() as u8]);
        out.extend_from_slice(time);
        out.extend_from_slice(&der[at + 4 + 13..]);
        // Certificate and TBSCertificate are both longer than 255 bytes: 0x82 and two bytes.
        for header in [0, 4] {
            assert_eq!(out[header..header + 2], [0x30, 0x82]);
            let len = u16::from_be_bytes([out[header + 2], out[header + 3]]) as isize + delta;
            out[header + 2..header + 4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        out
    }

    #[test]
    fn looser_time_forms_are_malformed() {
        let cert = generate_self_signed(&["localhost"]).unwrap();
        let der = cert.cert_der.as_ref();
        let seconds = x509_parser::parse_x509_certificate(der)
            .unwrap()
            .1
            .validity()
            .not_before
            .timestamp();
        let text = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap();
        let yymmddhhmm = format!(
            "{:02}{:02}{:02}{:02}{:02}",
            text.year() % 100,
            u8::from(text.month()),
            text.day(),
            text.hour(),
            text.minute()
        );
        // The same field rewritten in its own form parses like the original.
        let same = with_not_before(der, format!("{yymmddhhmm}{:02}Z", text.second()).as_bytes());
        assert_eq!(same, der);
        for loose in [format!("{yymmddhhmm}Z"), format!("{yymmddhhmm}00+0000")] {
            let patched = with_not_before(der, loose.as_bytes());
            // x509-parser reads these forms; the rules refuse them, as browsers do.
            assert!(
                x509_parser::parse_x509_certificate(&patched).is_ok(),
                "{loose}"
            );
            assert_eq!(parse(&patched), None, "{loose}");
        }
    }

    /// `x509-parser` reads `0xb0` as a SEQUENCE and `0x86` as an OID; the fields the rules
    /// read must carry their exact tags, as they had to with the DER reader this replaced.
    #[test]
    fn rule_inputs_need_exact_tags() {
        let cert = generate_self_signed(&["localhost"]).unwrap();
        let der = cert.cert_der.as_ref();
        let facts = parse(der).unwrap();
        // 30 82 .. .. | 30 82 .. .. | a0 03 02 01 02: the version's INTEGER is at 10.
        assert_eq!(der[8..13], [0xa0, 0x03, 0x02, 0x01, 0x02]);
        let validity = der
            .windows(4)
            .position(|w| w == [0x30, 0x1e, 0x17, 0x0d])
            .unwrap();
        // 30 59 | 30 13 | 06 07 (ecPublicKey) | 06 08 (P-256) | 03 42 (the key)
        let spki = der.offset(facts.spki);
        assert_eq!(
            [
                der[spki],
                der[spki + 2],
                der[spki + 4],
                der[spki + 13],
                der[spki + 23]
            ],
            [0x30, 0x30, 0x06, 0x06, 0x03]
        );
        for (at, want) in [
            (10, None),
            (validity, None),
            (validity + 2, None),
            (validity + 17, None),
            (spki, None),
            (spki + 2, None),
            (spki + 4, None),
            (spki + 23, None),
            // Parameters that are not an OID name no curve.
            (spki + 13, Some(KeyType::EcdsaOtherCurve)),
        ] {
            let mut bad = der.to_vec();
            bad[at] |= 0x80;
            assert!(x509_parser::parse_x509_certificate(&bad).is_ok(), "{at}");
            assert_eq!(parse(&bad).map(|f| f.key), want, "{at}");
        }
    }
}
