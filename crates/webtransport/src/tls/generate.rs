//! Self-signed certificates that a browser accepts through `serverCertificateHashes`.

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::hashes::certificate_sha256;
use super::{sha256_hex, TlsError};
use crate::config::CertificateSource;

/// Total validity of the certificates [`generate_self_signed`] makes: 13 days 23 hours.
///
/// One hour under [`MAX_PINNED_VALIDITY`] so that a verifier that counts the period
/// inclusively (RFC 5280 §4.1.2.5 says "notBefore through notAfter, inclusive") or rounds it
/// up still finds it within two weeks. Clock skew is handled separately by back-dating
/// `notBefore` one minute.
///
/// [`MAX_PINNED_VALIDITY`]: super::MAX_PINNED_VALIDITY
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs((13 * 24 + 23) * 3600);

/// How far `notBefore` of a generated certificate lies in the past, so that a peer whose clock
/// is slightly behind ours does not see a certificate that is not yet valid.
pub const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(60);

/// A freshly generated certificate and key that a browser accepts via
/// `serverCertificateHashes`.
pub struct SelfSignedCertificate {
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 DER.
    pub key_der: PrivatePkcs8KeyDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (`PRIVATE KEY`).
    pub key_pem: String,
    /// SHA-256 of `cert_der`, for `serverCertificateHashes`.
    pub sha256: [u8; 32],
    /// Start of validity (one minute before generation).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

// Hand-written so the private key never ends up in a log line.
impl fmt::Debug for SelfSignedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSignedCertificate")
            .field("sha256", &sha256_hex(&self.sha256))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl SelfSignedCertificate {
    /// [`sha256`](Self::sha256) as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.sha256)
    }

    /// The private key as rustls takes it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    /// The certificate and key as a [`CertificateSource::Pem`], to put in a [`ServerConfig`]
    /// (so that several servers share one certificate and its hash).
    ///
    /// [`ServerConfig`]: crate::config::ServerConfig
    pub fn to_certificate_source(&self) -> CertificateSource {
        CertificateSource::Pem {
            cert: self.cert_pem.clone().into_bytes(),
            key: self.key_pem.clone().into_bytes(),
        }
    }
}

/// Makes a certificate a browser accepts through `serverCertificateHashes`: ECDSA P-256,
/// X.509v3, valid from one minute ago for [`SELF_SIGNED_VALIDITY`] (13 days 23 hours), with
/// each name as a subjectAltName (an IP address when it parses as one, else a DNS name) and the
/// first as common name.
pub fn generate_self_signed(names: &[impl AsRef<str>]) -> Result<SelfSignedCertificate, TlsError> {
    for name in names {
        let name = name.as_ref();
        if ServerName::try_from(name).is_err() {
            return Err(TlsError::InvalidName(name.to_owned()));
        }
    }
    // Whole seconds: X.509 times have no fractions, so the encoded period stays exact.
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let not_before = now - SELF_SIGNED_BACKDATE;
    self_signed_with(
        names,
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        not_before,
        not_before + SELF_SIGNED_VALIDITY,
    )
}

/// Builds a self-signed certificate for `key` with explicit validity. Private: it can make
/// certificates browsers refuse; tests use it for exactly that.
fn self_signed_with(
    names: &[impl AsRef<str>],
    key: &rcgen::KeyPair,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<SelfSignedCertificate, TlsError> {
    let names: Vec<String> = names.iter().map(|n| n.as_ref().to_owned()).collect();
    let first = names.first().cloned().ok_or(TlsError::NoNames)?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params.not_before = not_before;
    params.not_after = not_after;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, first);
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::NoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // A random positive 128-bit serial, as CAs use (RFC 5280 §4.1.2.2 allows up to 20 bytes).
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));

    let cert = params.self_signed(key)?;
    let cert_der = cert.der().clone();
    Ok(SelfSignedCertificate {
        sha256: certificate_sha256(&cert_der),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        cert_der,
        not_before: not_before.into(),
        not_after: not_after.into(),
    })
}

/// A certificate for `localhost` valid for `length` from `from_now` on, with a key of
/// algorithm `alg`: the tests' way to make certificates that browsers refuse.
#[cfg(test)]
pub(super) fn cert_valid_for(
    alg: &'static rcgen::SignatureAlgorithm,
    from_now: time::Duration,
    length: Duration,
) -> SelfSignedCertificate {
    let not_before = time::OffsetDateTime::now_utc() + from_now;
    self_signed_with(
        &["localhost"],
        &rcgen::KeyPair::generate_for(alg).unwrap(),
        not_before,
        not_before + length,
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use rustls::pki_types::UnixTime;

    use super::*;
    use crate::tls::{
        certificates_from_pem, check_certificate_hash_requirements, private_key_from_pem, x509,
        MAX_PINNED_VALIDITY,
    };

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn self_signed_meets_browser_rules() {
        let cert =
            generate_self_signed(&["localhost", "127.0.0.1", "::1", "example.test"]).unwrap();
        assert_eq!(cert.sha256, certificate_sha256(&cert.cert_der));
        assert_eq!(
            cert.sha256.as_slice(),
            ring::digest::digest(&ring::digest::SHA256, &cert.cert_der).as_ref()
        );
        check_certificate_hash_requirements(&cert.cert_der, now()).unwrap();

        // What the rules read: X.509v3, an ECDSA P-256 key, the validity period.
        let facts = x509::parse(&cert.cert_der).unwrap();
        assert_eq!(facts.version, 3);
        assert_eq!(facts.key, x509::KeyType::EcdsaP256);
        assert_eq!(
            (facts.not_after - facts.not_before) as u64,
            SELF_SIGNED_VALIDITY.as_secs()
        );
        assert!(SELF_SIGNED_VALIDITY <= MAX_PINNED_VALIDITY);
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(facts.not_before <= now_secs - 50 && facts.not_before >= now_secs - 70);
        let (rest, parsed) = x509_parser::parse_x509_certificate(&cert.cert_der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(facts.spki, parsed.public_key().raw);

        // SANs: DNS names and IP addresses as appropriate.
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => format!("dns:{d}"),
                x509_parser::extensions::GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "dns:localhost".to_string(),
                format!("ip:{:?}", [127u8, 0, 0, 1].as_slice()),
                format!("ip:{:?}", std::net::Ipv6Addr::LOCALHOST.octets().as_slice()),
                "dns:example.test".to_string(),
            ]
        );
        // rustls agrees it is valid for these names.
        let parsed_rustls = rustls::server::ParsedCertificate::try_from(&cert.cert_der).unwrap();
        for name in ["localhost", "127.0.0.1", "::1", "example.test"] {
            let name = ServerName::try_from(name).unwrap();
            rustls::client::verify_server_name(&parsed_rustls, &name).unwrap();
        }
        assert!(rustls::client::verify_server_name(
            &parsed_rustls,
            &ServerName::try_from("other.test").unwrap()
        )
        .is_err());

        // PEM forms round-trip to the DER forms, and the key is usable by rustls.
        assert_eq!(
            certificates_from_pem(cert.cert_pem.as_bytes(), "t").unwrap(),
            vec![cert.cert_der.clone()]
        );
        let key = private_key_from_pem(cert.key_pem.as_bytes(), "t").unwrap();
        assert_eq!(key.secret_der(), cert.key_der.secret_pkcs8_der());
        rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }

    #[test]
    fn self_signed_needs_names() {
        assert!(matches!(
            generate_self_signed(&[] as &[&str]),
            Err(TlsError::NoNames)
        ));
        assert!(generate_self_signed(&["bad\u{e9}name"]).is_err());
        assert!(
            matches!(generate_self_signed(&["bad name"]), Err(TlsError::InvalidName(n)) if n == "bad name")
        );
    }
}
