//! The rustls configurations: [`server_crypto`] and [`client_crypto`].

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::RootCertStore;

use super::hashes::{
    certificate_sha256, check_certificate_hash_requirements, CertificateHashVerifier,
    NoCertificateVerification,
};
use super::pem::{certificates_from_pem, load_certificate, read_file};
use super::resumption::{CountingSessionStore, ResumptionCount};
use super::TlsError;
use crate::config::{CertVerification, CertificateSource, ClientConfig, ServerConfig};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn alpn_bytes(alpn: &[String]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
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
    server_crypto_counted(cfg, Arc::default())
}

/// [`server_crypto`] with a session store that counts resumed handshakes in `resumed`.
pub(super) fn server_crypto_counted(
    cfg: &ServerConfig,
    resumed: Arc<ResumptionCount>,
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
    tls.session_storage = Arc::new(CountingSessionStore::new(resumed));
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
    // rustls keeps tickets in memory by default (256 servers); early data stays off.
    if !cfg.tls_resumption {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::generate::cert_valid_for;
    use crate::tls::{generate_self_signed, quinn_client_config};

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
}
