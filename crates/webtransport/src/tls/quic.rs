//! The quinn configurations: [`quinn_server_config`] and [`quinn_client_config`].

use std::sync::Arc;

use super::crypto::{client_crypto, server_crypto_counted};
use super::resumption::ResumptionCount;
use super::TlsError;
use crate::config::{ClientConfig, ServerConfig};

/// Validates `cfg` and builds a quinn server config from [`server_crypto`](super::server_crypto) and
/// [`TransportConfig::to_quinn`](crate::config::TransportConfig::to_quinn). The hash is as
/// [`server_crypto`](super::server_crypto) returns it.
pub fn quinn_server_config(
    cfg: &ServerConfig,
) -> Result<(quinn::ServerConfig, Option<[u8; 32]>), TlsError> {
    quinn_server_config_counted(cfg, Arc::default())
}

/// [`quinn_server_config`] counting resumed handshakes in `resumed`.
pub(crate) fn quinn_server_config_counted(
    cfg: &ServerConfig,
    resumed: Arc<ResumptionCount>,
) -> Result<(quinn::ServerConfig, Option<[u8; 32]>), TlsError> {
    cfg.validate()?;
    let (tls, hash) = server_crypto_counted(cfg, resumed)?;
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
