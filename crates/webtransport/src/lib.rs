//! WebTransport over HTTP/3 on quinn and tokio.

pub mod config;
pub mod tls;

pub use config::{
    CertVerification, CertificateSource, ClientConfig, ConfigError, CongestionController,
    ServerConfig, SessionLimits, TransportConfig,
};
pub use tls::{generate_self_signed, SelfSignedCertificate, TlsError};
