//! Loading certificates and private keys from PEM text and files.

use std::io;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::generate::generate_self_signed;
use super::TlsError;
use crate::config::CertificateSource;

pub(super) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
