//! [`CertVerification`] (how a client trusts a server) and [`CertificateSource`] (where a
//! certificate and its key come from).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::serde_util::{hashes_hex, pem_text};
use super::validate::file_exists;
use super::ConfigError;

/// How a client decides whether to trust the server's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertVerification {
    /// The operating system's trust store (via `rustls-native-certs`; honours `SSL_CERT_FILE`
    /// and `SSL_CERT_DIR`), with the server name checked. The default.
    #[default]
    SystemRoots,
    /// Trust the CA certificates (or self-signed certificates) in this PEM file, with the
    /// server name checked.
    CaFile(PathBuf),
    /// Trust the CA certificates in this PEM text, with the server name checked.
    CaPem(#[serde(with = "pem_text")] Vec<u8>),
    /// Trust exactly the certificates with these SHA-256 hashes, as a browser's
    /// `serverCertificateHashes` does: the certificate must also be ECDSA P-256, X.509v3,
    /// currently valid and valid for at most 14 days. The server name is not checked.
    ServerCertificateHashes(#[serde(with = "hashes_hex")] Vec<[u8; 32]>),
    /// Accept any certificate. The TLS handshake signature is still checked, so the peer
    /// holds the key of the certificate it sent, but anyone can be that peer: use only on
    /// networks you control.
    DangerousNoVerify,
}

/// Where a certificate chain and its private key come from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertificateSource {
    /// PEM files: `cert` holds the chain, leaf first; `key` a PKCS#8, PKCS#1 or SEC1 key.
    Files {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// PEM text in memory.
    Pem {
        /// The certificate chain, leaf first.
        #[serde(with = "pem_text")]
        cert: Vec<u8>,
        /// The private key.
        #[serde(with = "pem_text")]
        key: Vec<u8>,
    },
    /// A fresh ECDSA P-256 certificate valid for just under 14 days, made at startup, that a
    /// browser accepts through `serverCertificateHashes` (see `tls::generate_self_signed`).
    /// Each name becomes a SAN: an IP address when it parses as one, a DNS name otherwise.
    SelfSigned {
        /// The subject alternative names.
        names: Vec<String>,
    },
}

impl Default for CertificateSource {
    fn default() -> Self {
        Self::SelfSigned {
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

// Hand-written so a private key given as PEM never ends up in a log line.
impl fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Pem { cert, key } => f
                .debug_struct("Pem")
                .field("cert", &format_args!("<{} bytes>", cert.len()))
                .field("key", &format_args!("<redacted, {} bytes>", key.len()))
                .finish(),
            Self::SelfSigned { names } => {
                f.debug_struct("SelfSigned").field("names", names).finish()
            }
        }
    }
}

impl CertificateSource {
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Self::Files { cert, key } => {
                file_exists(&format!("{field}.files.cert"), cert)?;
                file_exists(&format!("{field}.files.key"), key)
            }
            Self::Pem { cert, key } => {
                if cert.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{field}.pem.cert"),
                        "is empty",
                    ));
                }
                if key.is_empty() {
                    return Err(ConfigError::invalid(format!("{field}.pem.key"), "is empty"));
                }
                Ok(())
            }
            Self::SelfSigned { names } => {
                let field = format!("{field}.self_signed.names");
                if names.is_empty() {
                    return Err(ConfigError::invalid(
                        field,
                        "needs at least one DNS name or IP address",
                    ));
                }
                for name in names {
                    if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                        return Err(ConfigError::invalid(
                            field,
                            format!("{name:?} is neither a DNS name nor an IP address"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_key_is_not_debug_printed() {
        let s = CertificateSource::Pem {
            cert: b"CERT".to_vec(),
            key: b"SECRET-KEY-MATERIAL".to_vec(),
        };
        let text = format!("{s:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}
