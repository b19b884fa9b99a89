//! TLS for WebTransport: certificates a browser accepts, PEM loading, certificate
//! verification (including the W3C `serverCertificateHashes` rules) and the rustls and quinn
//! configurations built from a [`ClientConfig`] or [`ServerConfig`].
//!
//! Everything uses rustls's *ring* provider and TLS 1.3 only (QUIC cannot run TLS 1.2,
//! RFC 9001 §4.2).
//!
//! # Certificates without a CA
//!
//! A browser accepts a self-signed certificate when the page pins its SHA-256 with
//! `serverCertificateHashes` and the certificate meets the W3C "custom certificate
//! requirements": X.509v3, an ECDSA P-256 key (Chromium and Firefox refuse RSA), currently
//! valid, and valid for at most 14 days in total. [`generate_self_signed`] makes such
//! certificates, and [`CertVerification::ServerCertificateHashes`] makes our client check them
//! exactly as a browser does, so a server that works with our client also works with Chromium.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::config::{CertVerification, CertificateSource, ClientConfig, ConfigError, ServerConfig};

/// The longest total validity (`notAfter - notBefore`) a certificate pinned by
/// `serverCertificateHashes` may have: two weeks. Chromium refuses 14 days and one second.
pub const MAX_PINNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);

/// Total validity of the certificates [`generate_self_signed`] makes: 13 days 23 hours.
///
/// One hour under [`MAX_PINNED_VALIDITY`] so that a verifier that counts the period
/// inclusively (RFC 5280 §4.1.2.5 says "notBefore through notAfter, inclusive") or rounds it
/// up still finds it within two weeks. Clock skew is handled separately by back-dating
/// `notBefore` one minute.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs((13 * 24 + 23) * 3600);

/// How far `notBefore` of a generated certificate lies in the past, so that a peer whose clock
/// is slightly behind ours does not see a certificate that is not yet valid.
pub const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(60);

/// Why TLS material could not be loaded or a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A name for a certificate is neither a DNS name nor an IP address.
    #[error("{0:?} is not a DNS name or IP address")]
    InvalidName(String),
    /// A configured file does not exist.
    #[error("{what} not found: {}", path.display())]
    FileNotFound {
        /// What the file was for ("certificate file", "CA file", ...).
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
    },
    /// A configured file exists but could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file was for.
        what: &'static str,
        /// The path as configured.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// PEM input without any `CERTIFICATE` block.
    #[error("no CERTIFICATE block in {origin}")]
    NoCertificate {
        /// Where the PEM came from (a file path or a config field).
        origin: String,
    },
    /// PEM input without any private key block.
    #[error("no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block) in {origin}")]
    NoPrivateKey {
        /// Where the PEM came from.
        origin: String,
    },
    /// PEM input that is not well-formed (bad base64, unterminated block, ...).
    #[error("malformed PEM in {origin}: {reason}")]
    Pem {
        /// Where the PEM came from.
        origin: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A private key that rustls cannot sign with.
    #[error("unsupported private key in {origin}: {reason} (supported: ECDSA P-256/P-384, Ed25519, RSA)")]
    UnsupportedKey {
        /// Where the key came from.
        origin: String,
        /// rustls's complaint.
        reason: String,
    },
    /// A CA file or PEM text whose certificates cannot serve as trust anchors.
    #[error("no usable CA certificate in {origin}")]
    NoUsableCa {
        /// Where the PEM came from.
        origin: String,
    },
    /// [`CertVerification::SystemRoots`] found no root certificates.
    #[error(
        "the system trust store has no usable root certificates{detail}; install the \
         ca-certificates package, set SSL_CERT_FILE, or configure `verification` as ca_file or \
         server_certificate_hashes"
    )]
    NoSystemRoots {
        /// Errors met while loading the store, prefixed with `: `, or empty.
        detail: String,
    },
    /// A self-signed certificate was requested without any name.
    #[error("a self-signed certificate needs at least one DNS name or IP address")]
    NoNames,
    /// rcgen could not make the certificate (for example a name that is not ASCII).
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate hash as typed by a user could not be parsed.
    #[error("invalid SHA-256 hash {input:?}: {reason}")]
    InvalidHash {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate that could not be parsed or fails the `serverCertificateHashes` rules.
    #[error(transparent)]
    Certificate(#[from] CertificateHashError),
    /// The configuration failed [`ClientConfig::validate`] or [`ServerConfig::validate`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// rustls refused the configuration (for example a key that does not match the
    /// certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The rustls configuration cannot be used for QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

// ---------------------------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------------------------

/// SHA-256 of a DER certificate: the value a page passes in `serverCertificateHashes`.
pub fn certificate_sha256(cert_der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub use crate::config::hex::sha256_hex;

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

// ---------------------------------------------------------------------------------------------
// Self-signed certificates
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// PEM loading
// ---------------------------------------------------------------------------------------------

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TlsError::FileNotFound {
                what,
                path: path.to_owned(),
            }
        } else {
            TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Every `CERTIFICATE` block of a PEM text, in order (a chain is leaf first). `origin` names
/// the input in error messages.
pub fn certificates_from_pem(
    pem: &[u8],
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: origin.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of a PEM text.
pub fn private_key_from_pem(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            origin: origin.to_owned(),
        },
        e => TlsError::Pem {
            origin: origin.to_owned(),
            reason: e.to_string(),
        },
    })
}

/// Reads a PEM certificate chain file.
pub fn certificates_from_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file("certificate file", path)?;
    certificates_from_pem(&pem, &path.display().to_string())
}

/// Reads a PEM private key file.
pub fn private_key_from_file(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("private key file", path)?;
    private_key_from_pem(&pem, &path.display().to_string())
}

/// Loads (or, for [`CertificateSource::SelfSigned`], generates) a chain and its key.
pub fn load_certificate(
    source: &CertificateSource,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match source {
        CertificateSource::Files { cert, key } => {
            Ok((certificates_from_file(cert)?, private_key_from_file(key)?))
        }
        CertificateSource::Pem { cert, key } => Ok((
            certificates_from_pem(cert, "PEM certificate text")?,
            private_key_from_pem(key, "PEM key text")?,
        )),
        CertificateSource::SelfSigned { names } => {
            let generated = generate_self_signed(names)?;
            tracing::info!(
                sha256 = %generated.sha256_hex(),
                ?names,
                "generated a self-signed certificate"
            );
            Ok((vec![generated.cert_der.clone()], generated.private_key()))
        }
    }
}

fn root_store(
    certs: Vec<CertificateDer<'static>>,
    origin: &str,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(origin, ignored, "some CA certificates could not be used");
    }
    if added == 0 {
        return Err(TlsError::NoUsableCa {
            origin: origin.to_owned(),
        });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::debug!(error = %e, "while loading the system trust store");
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let detail = if loaded.errors.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
            format!(": {}", list.join("; "))
        };
        return Err(TlsError::NoSystemRoots { detail });
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------------------
// serverCertificateHashes rules
// ---------------------------------------------------------------------------------------------

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
    if facts.key_algorithm != x509::OID_EC_PUBLIC_KEY
        || facts.key_parameters != Some(x509::OID_P256)
    {
        return Err(CertificateHashError::KeyNotP256 {
            key: x509::describe_key(facts.key_algorithm, facts.key_parameters),
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
#[derive(Debug)]
struct NoCertificateVerification {
    algorithms: WebPkiSupportedAlgorithms,
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

// ---------------------------------------------------------------------------------------------
// rustls and quinn configurations
// ---------------------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn alpn_bytes(alpn: &[String]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// Builds the server's rustls configuration: TLS 1.3 only, ALPN from the config, no 0-RTT
/// (`max_early_data_size` 0), client certificates per `client_ca` and
/// `require_client_certificate`.
///
/// Also returns the SHA-256 of the leaf certificate when a browser could pin it with
/// `serverCertificateHashes` (it meets [`check_certificate_hash_requirements`] now), for
/// printing; `None` for certificates that must be trusted through a CA. Does not call
/// [`ServerConfig::validate`].
pub fn server_crypto(
    cfg: &ServerConfig,
) -> Result<(rustls::ServerConfig, Option<[u8; 32]>), TlsError> {
    let provider = provider();
    let (chain, key) = load_certificate(&cfg.certificate)?;
    // Load the key once up front for a message that names the source; rustls's own error
    // does not.
    if let Err(e) = provider.key_provider.load_private_key(key.clone_key()) {
        return Err(TlsError::UnsupportedKey {
            origin: match &cfg.certificate {
                CertificateSource::Files { key, .. } => key.display().to_string(),
                _ => "certificate.pem.key".into(),
            },
            reason: e.to_string(),
        });
    }
    let pinnable_hash = chain.first().and_then(|leaf| {
        match check_certificate_hash_requirements(leaf, UnixTime::now()) {
            Ok(()) => Some(certificate_sha256(leaf)),
            Err(e) => {
                tracing::debug!(reason = %e, "browsers cannot pin this certificate by hash");
                None
            }
        }
    });

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let origin = path.display().to_string();
            let roots = root_store(
                certificates_from_pem(&read_file("client CA file", path)?, &origin)?,
                &origin,
            )?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if cfg.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder.with_single_cert(chain, key)?;
    tls.alpn_protocols = alpn_bytes(&cfg.alpn);
    // QUIC allows only 0 or u32::MAX here (RFC 9001 §4.6.1); we do not accept 0-RTT, whose
    // replayable requests WebTransport does not define.
    tls.max_early_data_size = 0;
    Ok((tls, pinnable_hash))
}

/// Builds the client's rustls configuration: TLS 1.3 only, ALPN from the config, server
/// certificate checked per [`ClientConfig::verification`], client certificate from
/// [`ClientConfig::client_certificate`]. Does not call [`ClientConfig::validate`].
///
/// [`CertVerification::SystemRoots`] reads the system store on every call; build the config
/// once and reuse it.
pub fn client_crypto(cfg: &ClientConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &cfg.verification {
        CertVerification::SystemRoots => builder.with_root_certificates(system_roots()?),
        CertVerification::CaFile(path) => {
            let origin = path.display().to_string();
            let pem = read_file("CA file", path)?;
            builder
                .with_root_certificates(root_store(certificates_from_pem(&pem, &origin)?, &origin)?)
        }
        CertVerification::CaPem(pem) => {
            let origin = "verification.ca_pem";
            builder.with_root_certificates(root_store(certificates_from_pem(pem, origin)?, origin)?)
        }
        CertVerification::ServerCertificateHashes(hashes) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CertificateHashVerifier::with_provider(
                hashes.clone(),
                &provider,
            ))),
        CertVerification::DangerousNoVerify => {
            tracing::warn!("server certificates are not verified (DangerousNoVerify)");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateVerification {
                    algorithms: provider.signature_verification_algorithms,
                }))
        }
    };
    let mut tls = match &cfg.client_certificate {
        None => builder.with_no_client_auth(),
        Some(source) => {
            let (chain, key) = load_certificate(source)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    tls.alpn_protocols = alpn_bytes(&cfg.alpn);
    Ok(tls)
}

/// Validates `cfg` and builds a quinn server config from [`server_crypto`] and
/// [`TransportConfig::to_quinn`](crate::config::TransportConfig::to_quinn). The hash is as
/// [`server_crypto`] returns it.
pub fn quinn_server_config(
    cfg: &ServerConfig,
) -> Result<(quinn::ServerConfig, Option<[u8; 32]>), TlsError> {
    cfg.validate()?;
    let (tls, hash) = server_crypto(cfg)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(cfg.transport.to_quinn()));
    Ok((server, hash))
}

/// Validates `cfg` and builds a quinn client config from [`client_crypto`] and
/// [`TransportConfig::to_quinn`](crate::config::TransportConfig::to_quinn).
pub fn quinn_client_config(cfg: &ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    cfg.validate()?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(client_crypto(cfg)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(cfg.transport.to_quinn()));
    Ok(client)
}

// ---------------------------------------------------------------------------------------------
// Minimal X.509 reader
// ---------------------------------------------------------------------------------------------

/// Reads the four facts the `serverCertificateHashes` rules need (version, validity, key
/// algorithm, SubjectPublicKeyInfo) from DER, and nothing else.
///
/// Written here instead of pulling in an ASN.1 crate and its dependency tree: it only walks
/// the fixed prefix of `TBSCertificate` (RFC 5280 §4.1). It cannot widen trust: it runs after
/// the hash already matched, and only adds refusals. Every read is bounds-checked and any
/// surprise yields `None`.
mod x509 {
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
        let date = time::Date::from_calendar_date(
            i32::try_from(year).ok()?,
            month,
            number(at + 2, 2)? as u8,
        )
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn now() -> UnixTime {
        UnixTime::now()
    }

    fn cert_valid_for(
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

        // Our reader and an independent X.509 parser agree.
        let facts = x509::parse(&cert.cert_der).unwrap();
        let (rest, parsed) = x509_parser::parse_x509_certificate(&cert.cert_der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.version(), x509_parser::x509::X509Version::V3);
        assert_eq!(facts.version, 3);
        let validity = parsed.validity();
        assert_eq!(validity.not_before.timestamp(), facts.not_before);
        assert_eq!(validity.not_after.timestamp(), facts.not_after);
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
        let spki = parsed.public_key();
        assert_eq!(
            spki.algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap();
        assert_eq!(curve, x509_parser::oid_registry::OID_EC_P256);
        assert_eq!(facts.spki, spki.raw);

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
    fn reader_survives_truncation_and_garbage() {
        let cert = generate_self_signed(&["localhost"]).unwrap();
        let der = cert.cert_der.as_ref();
        for len in 0..der.len() {
            assert!(
                x509::parse(&der[..len]).is_none(),
                "prefix of {len} bytes parsed"
            );
        }
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert!(x509::parse(&trailing).is_none());
        // Flip every byte once: never panics.
        let mut copy = der.to_vec();
        for i in 0..copy.len() {
            copy[i] ^= 0xff;
            let _ = x509::parse(&copy);
            copy[i] ^= 0xff;
        }
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"\x30\x85\xff\xff\xff\xff\xff",
            b"\x1f\x01\x00",
        ] {
            assert!(x509::parse(junk).is_none());
        }
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
    fn pem_errors_name_their_origin() {
        let e = certificates_from_pem(b"nothing here", "cert.pem").unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }));
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let e = private_key_from_pem(b"nothing here", "key.pem").unwrap_err();
        assert!(matches!(e, TlsError::NoPrivateKey { .. }), "{e}");
        let e = certificates_from_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n", "x").unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");
        let e = certificates_from_file(Path::new("/nope/cert.pem")).unwrap_err();
        assert!(matches!(e, TlsError::FileNotFound { .. }));
        assert_eq!(e.to_string(), "certificate file not found: /nope/cert.pem");
        let e = private_key_from_file(Path::new("/nope/key.pem")).unwrap_err();
        assert_eq!(e.to_string(), "private key file not found: /nope/key.pem");
    }

    #[test]
    fn server_crypto_is_tls13_h3_without_early_data() {
        let (tls, hash) = server_crypto(&ServerConfig::default()).unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"h3".to_vec()]);
        assert_eq!(tls.max_early_data_size, 0);
        assert!(tls
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13));
        assert!(hash.is_some());

        // A certificate browsers cannot pin still serves, but yields no hash.
        let long = cert_valid_for(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            time::Duration::ZERO,
            Duration::from_secs(30 * 86_400),
        );
        let cfg = ServerConfig {
            certificate: long.to_certificate_source(),
            ..ServerConfig::default()
        };
        let (_, hash) = server_crypto(&cfg).unwrap();
        assert_eq!(hash, None);

        // Key and certificate that do not belong together.
        let other = generate_self_signed(&["localhost"]).unwrap();
        let cfg = ServerConfig {
            certificate: CertificateSource::Pem {
                cert: long.cert_pem.into_bytes(),
                key: other.key_pem.into_bytes(),
            },
            ..ServerConfig::default()
        };
        assert!(server_crypto(&cfg).is_err());

        let cfg = ServerConfig {
            certificate: CertificateSource::Pem {
                cert: other.cert_pem.into_bytes(),
                key: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            },
            ..ServerConfig::default()
        };
        let e = server_crypto(&cfg).unwrap_err();
        assert!(matches!(e, TlsError::UnsupportedKey { .. }), "{e}");
    }

    #[test]
    fn client_crypto_variants() {
        let cert = generate_self_signed(&["localhost"]).unwrap();
        let mut cfg = ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
            ..ClientConfig::default()
        };
        let tls = client_crypto(&cfg).unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"h3".to_vec()]);
        cfg.verification = CertVerification::CaPem(cert.cert_pem.clone().into_bytes());
        client_crypto(&cfg).unwrap();
        cfg.verification = CertVerification::DangerousNoVerify;
        client_crypto(&cfg).unwrap();
        cfg.verification = CertVerification::CaFile("/nope/ca.pem".into());
        let e = client_crypto(&cfg).unwrap_err();
        assert_eq!(e.to_string(), "CA file not found: /nope/ca.pem");
        let e = quinn_client_config(&cfg).unwrap_err();
        assert!(matches!(e, TlsError::Config(_)), "{e}");
        // The system store depends on the machine: either it loads, or the error says what to do.
        cfg.verification = CertVerification::SystemRoots;
        match client_crypto(&cfg) {
            Ok(_) => {}
            Err(e @ TlsError::NoSystemRoots { .. }) => {
                assert!(e.to_string().contains("ca-certificates"), "{e}")
            }
            Err(e) => panic!("{e}"),
        }
        cfg.client_certificate = Some(cert.to_certificate_source());
        cfg.verification = CertVerification::DangerousNoVerify;
        client_crypto(&cfg).unwrap();
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
}
