//! Reads the four facts the `serverCertificateHashes` rules need (version, validity, key
//! algorithm, SubjectPublicKeyInfo) from DER, and nothing else.
//!
//! Written here instead of pulling in an ASN.1 crate and its dependency tree: it only walks
//! the fixed prefix of `TBSCertificate` (RFC 5280 §4.1). It cannot widen trust: it runs after
//! the hash already matched, and only adds refusals. Every read is bounds-checked and any
//! surprise yields `None`.

pub(super) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(super) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0; // [0] EXPLICIT, constructed

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Facts<'a> {
    pub(super) version: u8,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    /// The whole SubjectPublicKeyInfo element, tag and length included.
    pub(super) spki: &'a [u8],
    pub(super) key_algorithm: &'a [u8],
    /// The algorithm parameters when they are an OID (the curve of an EC key).
    pub(super) key_parameters: Option<&'a [u8]>,
}

struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// One element: (tag, contents, whole element).
    fn next(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let data = self.0;
        let tag = *data.first()?;
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers do not occur in the fields we read
        }
        let first = *data.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None; // indefinite length is not DER; > 4 GiB is not a certificate
            }
            let len = data
                .get(2..2 + n)?
                .iter()
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            (usize::try_from(len).ok()?, 2 + n)
        };
        let end = header.checked_add(len)?;
        let whole = data.get(..end)?;
        self.0 = data.get(end..)?;
        Some((tag, whole.get(header..)?, whole))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (t, contents, _) = self.next()?;
        (t == tag).then_some(contents)
    }
}

pub(super) fn parse(der: &[u8]) -> Option<Facts<'_>> {
    let mut outer = Der(der);
    let certificate = outer.expect(SEQUENCE)?;
    if !outer.0.is_empty() {
        return None;
    }
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    // version [0] EXPLICIT Version DEFAULT v1, where v1(0), v2(1), v3(2)
    let version = if tbs.0.first() == Some(&VERSION_TAG) {
        match Der(tbs.expect(VERSION_TAG)?).expect(INTEGER)? {
            [v @ 0..=2] => v + 1,
            _ => return None,
        }
    } else {
        1
    };
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature AlgorithmIdentifier
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    tbs.expect(SEQUENCE)?; // subject
    let (tag, spki_contents, spki) = tbs.next()?;
    if tag != SEQUENCE {
        return None;
    }
    let not_before = time_of(validity.next()?)?;
    let not_after = time_of(validity.next()?)?;
    let mut spki_reader = Der(spki_contents);
    let mut algorithm = Der(spki_reader.expect(SEQUENCE)?);
    spki_reader.expect(BIT_STRING)?;
    let key_algorithm = algorithm.expect(OID)?;
    let key_parameters = match algorithm.next() {
        Some((OID, oid, _)) => Some(oid),
        _ => None,
    };
    Some(Facts {
        version,
        not_before,
        not_after,
        spki,
        key_algorithm,
        key_parameters,
    })
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`, the only forms RFC 5280
/// §4.1.2.5 allows, as Unix seconds.
fn time_of((tag, text, _): (u8, &[u8], &[u8])) -> Option<i64> {
    let number = |from: usize, len: usize| -> Option<u32> {
        text.get(from..from + len)?
            .iter()
            .try_fold(0u32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
            })
    };
    let (year, at) = match (tag, text.len()) {
        // RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY, YY < 50 is 20YY.
        (UTC_TIME, 13) => match number(0, 2)? {
            yy @ 50.. => (1900 + yy, 2),
            yy => (2000 + yy, 2),
        },
        (GENERALIZED_TIME, 15) => (number(0, 4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(number(at, 2)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, number(at + 2, 2)? as u8)
            .ok()?;
    let clock = time::Time::from_hms(
        number(at + 4, 2)? as u8,
        number(at + 6, 2)? as u8,
        number(at + 8, 2)? as u8,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// A name for a key type, for error messages.
pub(super) fn describe_key(algorithm: &[u8], parameters: Option<&[u8]>) -> String {
    match (algorithm, parameters) {
        (OID_RSA, _) => "RSA".into(),
        (OID_RSA_PSS, _) => "RSA-PSS".into(),
        (OID_ED25519, _) => "Ed25519".into(),
        (OID_ED448, _) => "Ed448".into(),
        (OID_EC_PUBLIC_KEY, Some(OID_P256)) => "ECDSA P-256".into(),
        (OID_EC_PUBLIC_KEY, Some(OID_P384)) => "ECDSA P-384".into(),
        (OID_EC_PUBLIC_KEY, Some(OID_P521)) => "ECDSA P-521".into(),
        (OID_EC_PUBLIC_KEY, _) => "ECDSA on another curve".into(),
        (other, _) => format!("an unknown algorithm (OID bytes {})", hex(other)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}
