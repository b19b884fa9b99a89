//! The W3C `serverCertificateHashes` rules: certificate hashes, the custom certificate
//! requirements, [`CertificateHashError`], and the rustls verifiers for
//! `CertVerification::ServerCertificateHashes` and `CertVerification::DangerousNoVerify`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::{x509, TlsError};
use crate::config::hex::sha256_hex;

/// The longest total validity (`notAfter - notBefore`) a certificate pinned by
/// `serverCertificateHashes` may have: two weeks. Chromium refuses 14 days and one second.
pub const MAX_PINNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);

/// SHA-256 of a DER certificate: the value a page passes in `serverCertificateHashes`.
pub fn certificate_sha256(cert_der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Parses a SHA-256 hash as users paste it: plain hex (`ab12...`), bytes separated by `:` or
/// spaces (`AB:12:...`), in either case, optionally after an `=` as in OpenSSL's
/// `SHA256 Fingerprint=AB:12:...`.
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], TlsError> {
    crate::config::hex::parse_sha256_hex(text).map_err(|e| TlsError::InvalidHash {
        input: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo: the value Chromium's
/// `--ignore-certificate-errors-spki-list` flag takes (the other way to make a browser accept
/// a self-signed certificate, together with `--origin-to-force-quic-on=HOST:PORT`).
pub fn spki_sha256_base64(cert_der: &[u8]) -> Result<String, TlsError> {
    let facts = x509::parse(cert_der).ok_or(CertificateHashError::Malformed)?;
    Ok(base64(&certificate_sha256(facts.spki)))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a certificate may not be used through `serverCertificateHashes`.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateHashError {
    /// Not a DER X.509 certificate this parser understands.
    #[error("certificate is not well-formed DER X.509")]
    Malformed,
    /// Its SHA-256 is not among the pinned hashes.
    #[error("certificate SHA-256 {hash} matches none of the {pinned} pinned certificate hashes")]
    HashMismatch {
        /// The certificate's hash, hex.
        hash: String,
        /// How many hashes were pinned.
        pinned: usize,
    },
    /// X.509 version 1 or 2.
    #[error("certificate is X.509v{version}; certificate hashes need X.509v3")]
    NotV3 {
        /// The version (1 or 2).
        version: u8,
    },
    /// The key is not ECDSA P-256.
    #[error("certificate key is {key}; certificate hashes need ECDSA P-256 (browsers refuse RSA)")]
    KeyNotP256 {
        /// The key type found, such as `RSA` or `ECDSA P-384`.
        key: String,
    },
    /// `notAfter - notBefore` exceeds two weeks.
    #[error(
        "certificate is valid for {:.2} days; certificate hashes allow at most 14",
        *seconds as f64 / 86_400.0
    )]
    ValidityTooLong {
        /// `notAfter - notBefore` in seconds.
        seconds: i64,
    },
    /// `notBefore` is in the future.
    #[error("certificate is not valid before {}, and it is {} now", show_time(*not_before), show_time(*now))]
    NotYetValid {
        /// `notBefore`, Unix seconds.
        not_before: i64,
        /// The time of the check, Unix seconds.
        now: i64,
    },
    /// `notAfter` is in the past.
    #[error("certificate expired at {}, and it is {} now", show_time(*not_after), show_time(*now))]
    Expired {
        /// `notAfter`, Unix seconds.
        not_after: i64,
        /// The time of the check, Unix seconds.
        now: i64,
    },
}

// rustls prints a `CertificateError::Other` with `{:?}`, so Debug shows the sentence that
// Display shows; otherwise users would read `HashMismatch { hash: .. }` in handshake errors.
impl fmt::Debug for CertificateHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn show_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{unix} (Unix time)"))
}

/// Checks the W3C WebTransport "custom certificate requirements" that a certificate pinned by
/// `serverCertificateHashes` must meet, at time `now`.
///
/// <https://w3c.github.io/webtransport/#custom-certificate-requirements>: "the certificate MUST
/// be an X.509v3 certificate as defined in \[RFC5280\], the key used in the Subject Public Key
/// field MUST be one of the allowed public key algorithms, the current time MUST be within the
/// validity period of the certificate as defined in Section 4.1.2.5 of \[RFC5280\] and the total
/// length of the validity period MUST NOT exceed two weeks." The allowed algorithms "MUST
/// include ECDSA with the secp256r1 (NIST P-256) named group" and "MUST NOT contain RSA keys";
/// we allow exactly P-256, what every browser accepts. The two-week limit is compared the way
/// Chromium does: `notAfter - notBefore <= 14 days`.
pub fn check_certificate_hash_requirements(
    cert_der: &[u8],
    now: UnixTime,
) -> Result<(), CertificateHashError> {
    let facts = x509::parse(cert_der).ok_or(CertificateHashError::Malformed)?;
    if facts.version != 3 {
        return Err(CertificateHashError::NotV3 {
            version: facts.version,
        });
    }
    if facts.key != x509::KeyType::EcdsaP256 {
        return Err(CertificateHashError::KeyNotP256 {
            key: facts.key.to_string(),
        });
    }
    let period = facts.not_after.saturating_sub(facts.not_before);
    if period > MAX_PINNED_VALIDITY.as_secs() as i64 {
        return Err(CertificateHashError::ValidityTooLong { seconds: period });
    }
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < facts.not_before {
        return Err(CertificateHashError::NotYetValid {
            not_before: facts.not_before,
            now,
        });
    }
    if now > facts.not_after {
        return Err(CertificateHashError::Expired {
            not_after: facts.not_after,
            now,
        });
    }
    Ok(())
}

fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs.max(0) as u64))
}

impl From<CertificateHashError> for rustls::Error {
    fn from(e: CertificateHashError) -> Self {
        rustls::Error::InvalidCertificate(match e {
            CertificateHashError::Malformed => CertificateError::BadEncoding,
            CertificateHashError::Expired { not_after, now } => CertificateError::ExpiredContext {
                time: unix_time(now),
                not_after: unix_time(not_after),
            },
            CertificateHashError::NotYetValid { not_before, now } => {
                CertificateError::NotValidYetContext {
                    time: unix_time(now),
                    not_before: unix_time(not_before),
                }
            }
            other => CertificateError::Other(OtherError(Arc::new(other))),
        })
    }
}

/// A rustls server certificate verifier that does what a browser does with
/// `serverCertificateHashes`: the end-entity certificate's SHA-256 must be one of the pinned
/// hashes and the certificate must meet [`check_certificate_hash_requirements`]. Intermediates
/// and the server name are ignored, as in browsers. The handshake signature is still verified,
/// so the server must hold the certificate's private key.
#[derive(Debug)]
pub struct CertificateHashVerifier {
    hashes: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl CertificateHashVerifier {
    /// Pins `hashes`, verifying signatures with the *ring* provider.
    pub fn new(hashes: Vec<[u8; 32]>) -> Self {
        Self::with_provider(hashes, &rustls::crypto::ring::default_provider())
    }

    /// Pins `hashes`, verifying signatures with `provider`'s algorithms.
    pub fn with_provider(hashes: Vec<[u8; 32]>, provider: &CryptoProvider) -> Self {
        Self {
            hashes,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for CertificateHashVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // https://w3c.github.io/webtransport/#verify-a-certificate-hash: compute the SHA-256
        // of the end-entity certificate (the first of the chain) and compare it with each
        // pinned hash; if none is equal, the certificate is not trusted.
        let hash = certificate_sha256(end_entity);
        if !self.hashes.contains(&hash) {
            return Err(CertificateHashError::HashMismatch {
                hash: sha256_hex(&hash),
                pinned: self.hashes.len(),
            }
            .into());
        }
        // https://w3c.github.io/webtransport/#custom-certificate-requirements
        check_certificate_hash_requirements(end_entity, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // All schemes, not just ECDSA P-256: an RSA server then fails with "key is RSA"
        // instead of an opaque "no common signature scheme".
        self.algorithms.supported_schemes()
    }
}

/// [`CertVerification::DangerousNoVerify`]: accepts any certificate, but still checks that the
/// peer signed the handshake with the key of the certificate it sent.
///
/// [`CertVerification::DangerousNoVerify`]: crate::config::CertVerification::DangerousNoVerify
#[derive(Debug)]
pub(super) struct NoCertificateVerification {
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::tls::generate::cert_valid_for;
    use crate::tls::generate_self_signed;

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn hash_rules() {
        let day = Duration::from_secs(86_400);
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let past = time::Duration::minutes(-1);

        let exactly_14 = cert_valid_for(p256, past, 14 * day);
        check_certificate_hash_requirements(&exactly_14.cert_der, now()).unwrap();

        let long = cert_valid_for(p256, past, 15 * day);
        let e = check_certificate_hash_requirements(&long.cert_der, now()).unwrap_err();
        assert_eq!(
            e,
            CertificateHashError::ValidityTooLong {
                seconds: 15 * 86_400
            }
        );
        assert!(e.to_string().contains("15.00 days"), "{e}");
        let just_over = cert_valid_for(p256, past, 14 * day + Duration::from_secs(1));
        assert!(check_certificate_hash_requirements(&just_over.cert_der, now()).is_err());

        let future = cert_valid_for(p256, time::Duration::hours(1), day);
        assert!(matches!(
            check_certificate_hash_requirements(&future.cert_der, now()),
            Err(CertificateHashError::NotYetValid { .. })
        ));
        let expired = cert_valid_for(p256, time::Duration::days(-3), day);
        let e = check_certificate_hash_requirements(&expired.cert_der, now()).unwrap_err();
        assert!(matches!(e, CertificateHashError::Expired { .. }));
        assert!(e.to_string().contains("expired"), "{e}");

        for (alg, name) in [
            (&rcgen::PKCS_ECDSA_P384_SHA384, "ECDSA P-384"),
            (&rcgen::PKCS_ED25519, "Ed25519"),
        ] {
            let c = cert_valid_for(alg, past, day);
            assert_eq!(
                check_certificate_hash_requirements(&c.cert_der, now()),
                Err(CertificateHashError::KeyNotP256 { key: name.into() })
            );
        }
        assert_eq!(
            check_certificate_hash_requirements(b"\x30\x03\x02\x01\x00", now()),
            Err(CertificateHashError::Malformed)
        );
    }

    #[test]
    fn hash_text_errors_are_tls_errors() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(parse_sha256_hex(&sha256_hex(&hash)).unwrap(), hash);
        let e = parse_sha256_hex("abcd").unwrap_err();
        assert!(matches!(e, TlsError::InvalidHash { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "invalid SHA-256 hash \"abcd\": expected 32 bytes (64 hex digits), found 4 digits"
        );
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let cert = generate_self_signed(&["localhost"]).unwrap();
        assert_eq!(spki_sha256_base64(&cert.cert_der).unwrap().len(), 44);
    }

    #[test]
    fn hash_verifier_rejects_unpinned_and_accepts_pinned() {
        let cert = generate_self_signed(&["localhost"]).unwrap();
        let name = ServerName::try_from("ignored.test").unwrap();
        let v = CertificateHashVerifier::new(vec![[0; 32]]);
        let e = v
            .verify_server_cert(&cert.cert_der, &[], &name, &[], now())
            .unwrap_err();
        assert!(
            e.to_string().contains("matches none of the 1 pinned"),
            "{e}"
        );
        let v = CertificateHashVerifier::new(vec![[0; 32], cert.sha256]);
        v.verify_server_cert(&cert.cert_der, &[], &name, &[], now())
            .unwrap();
        let later = UnixTime::since_unix_epoch(
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
                + 15 * Duration::from_secs(86_400),
        );
        let e = v
            .verify_server_cert(&cert.cert_der, &[], &name, &[], later)
            .unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{e}"
        );
    }

    /// A pinned certificate that browsers refuse is refused even though its hash matches,
    /// with the reason in the message. (RSA needs a key *ring* cannot make; `tests/tls_config.rs`
    /// covers it over a real handshake.)
    #[test]
    fn hash_verifier_refuses_pinned_certificates_browsers_refuse() {
        let day = Duration::from_secs(86_400);
        let past = time::Duration::minutes(-1);
        let name = ServerName::try_from("localhost").unwrap();
        for (cert, reason) in [
            (
                cert_valid_for(&rcgen::PKCS_ECDSA_P256_SHA256, past, 15 * day),
                "valid for 15.00 days; certificate hashes allow at most 14",
            ),
            (
                cert_valid_for(&rcgen::PKCS_ECDSA_P384_SHA384, past, day),
                "key is ECDSA P-384",
            ),
        ] {
            let v = CertificateHashVerifier::new(vec![cert.sha256]);
            let e = v
                .verify_server_cert(&cert.cert_der, &[], &name, &[], now())
                .unwrap_err();
            let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = &e else {
                panic!("{e:?}");
            };
            assert!(other.to_string().contains(reason), "{e}");
        }
    }
}
