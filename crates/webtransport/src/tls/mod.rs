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
//!
//! # Layout
//!
//! `generate` makes self-signed certificates, `pem` loads certificates and keys, `hashes` holds
//! the `serverCertificateHashes` rules and the certificate verifiers, `x509` reads what those
//! rules need from a certificate, `crypto` builds the rustls configurations and `quic` the
//! quinn ones. This module uses [`crate::config`]; the config module does not use this one.
//!
//! [`ClientConfig`]: crate::config::ClientConfig
//! [`ServerConfig`]: crate::config::ServerConfig
//! [`CertVerification::ServerCertificateHashes`]: crate::config::CertVerification::ServerCertificateHashes

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;

mod crypto;
mod generate;
mod hashes;
mod pem;
mod quic;
mod resumption;
mod x509;

// The text form of SHA-256 hashes belongs to the config format (config::hex).
pub use crate::config::hex::sha256_hex;
pub use crypto::{client_crypto, server_crypto};
pub use generate::{
    generate_self_signed, SelfSignedCertificate, SELF_SIGNED_BACKDATE, SELF_SIGNED_VALIDITY,
};
pub use hashes::{
    certificate_sha256, check_certificate_hash_requirements, parse_sha256_hex, spki_sha256_base64,
    CertificateHashError, CertificateHashVerifier, MAX_PINNED_VALIDITY,
};
pub use pem::{
    certificates_from_file, certificates_from_pem, load_certificate, private_key_from_file,
    private_key_from_pem,
};
pub(crate) use quic::quinn_server_config_counted;
pub use quic::{quinn_client_config, quinn_server_config};
pub(crate) use resumption::ResumptionCount;

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
    ///
    /// [`CertVerification::SystemRoots`]: crate::config::CertVerification::SystemRoots
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
    ///
    /// [`ClientConfig::validate`]: crate::config::ClientConfig::validate
    /// [`ServerConfig::validate`]: crate::config::ServerConfig::validate
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
