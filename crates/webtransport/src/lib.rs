//! WebTransport over HTTP/3 on quinn and tokio.
//!
//! ```text
//!  Client ──connect(url)──▶ Connection ──▶ Session ──▶ SendStream / RecvStream, datagrams
//!  Server ──accept()─────▶ SessionRequest ──accept()/reject(status)──▶ Session
//! ```
//!
//! Each [`Connection`] runs the sans-IO core of `webtransport-proto` in one driver task;
//! WebTransport stream payload goes straight between the application and quinn.
#![warn(missing_docs)]

mod arena;
pub mod client;
pub mod config;
pub mod connection;
mod driver;
pub mod echo;
pub mod error;
pub mod manage;
pub mod server;
pub mod session;
pub mod stream;
pub mod tls;

pub use client::{Client, WebTransportUrl};
pub use config::{
    CertVerification, CertificateSource, ClientConfig, ConfigError, CongestionController,
    ServerConfig, SessionLimits, TransportConfig,
};
pub use connection::{
    ConnectOptions, Connection, ConnectionDiagnostics, ConnectionEvent, ConnectionInfo,
    ConnectionState, Issue, ProtocolInfo,
};
pub use error::{
    ConnectError, ConnectionError, DatagramError, OpenStreamError, ReadError, SessionError,
    WriteError,
};
pub use manage::{
    ClientDiagnostics, ClientFleet, ClientStats, ConnectionPool, LoadBalancer, LoadBalancerConfig,
    LoadBalancerError, ReconnectingClient, SessionPool, Strategy,
};
/// The time type of [`tls::check_certificate_hash_requirements`].
pub use rustls_pki_types::UnixTime;
pub use server::{Server, ServerError, SessionRequest};
pub use session::{CloseInfo, Session, SessionEvent, SessionEvents, SessionInfo, SessionStats};
pub use stream::{RecvStream, SendStream};
pub use tls::{generate_self_signed, SelfSignedCertificate, TlsError};
pub use webtransport_proto as proto;
pub use webtransport_proto::stream_header::SessionId;
pub use webtransport_proto::Code;
