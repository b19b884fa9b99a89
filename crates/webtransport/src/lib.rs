//! WebTransport over HTTP/3 on quinn and tokio.
//!
//! ```text
//!  Client ──connect(url)──▶ Connection ──▶ Session ──▶ SendStream / RecvStream, datagrams
//!  Server ──accept()─────▶ SessionRequest ──accept()/reject(status)──▶ Session
//! ```
//!
//! Each [`Connection`] runs the sans-IO core of `webtransport-proto` in an engine that
//! owns its state (`engine/`); the handles ([`Connection`], [`Session`], the streams) call
//! its methods, and one driver task per connection moves the bytes. WebTransport stream
//! payload goes straight between the application and quinn.
//!
//! Modules, bottom up: `config` and `tls` (what to build quinn from); `error`, `events`,
//! `info`, `lifecycle` (plain types); `quic` (every quinn conversion); `engine` (the
//! per-connection state and tasks); `connection`, `session`, `stream` (the handles);
//! `client`, `server` (how connections are made); `echo`, `manage` (built on the public
//! API only).
#![warn(missing_docs)]

pub mod app;
mod arena;
pub mod baton;
pub mod client;
pub mod config;
mod congestion;
pub mod connection;
mod engine;
pub mod error;
pub mod events;
pub mod info;
pub mod lifecycle;
pub mod manage;
mod quic;
pub mod server;
pub mod session;
pub mod socket;
pub mod stream;
pub mod tls;
mod weak_list;

pub use client::{Client, ConnectOptions, WebTransportUrl};
pub use config::{
    CertVerification, CertificateSource, ClientConfig, ConfigError, CongestionController,
    ServerConfig, SessionLimits, TransportConfig,
};
pub use connection::{ConfigRef, Connection, WeakConnection};
pub use error::{
    ConnectError, ConnectionError, DatagramError, HandshakeError, OpenStreamError, ReadError,
    SessionError, TransportError, WriteError,
};
pub use events::ConnectionEvent;
pub use info::{
    CloseInfo, ConnectionDiagnostics, ConnectionInfo, Issue, ProtocolInfo, SessionInfo,
    SessionStats,
};
pub use lifecycle::ConnectionState;
pub use manage::{
    ClientDiagnostics, ClientFleet, ClientStats, ConnectionPool, LoadBalancer, LoadBalancerConfig,
    LoadBalancerError, ReconnectingClient, SessionPool, Strategy,
};
/// The time type of [`tls::check_certificate_hash_requirements`].
pub use rustls_pki_types::UnixTime;
pub use server::{Server, ServerError, SessionRequest};
pub use session::{DatagramBuffer, Session, SessionEvent, SessionEvents};
pub use stream::{RecvStream, SendStream};
pub use tls::{generate_self_signed, SelfSignedCertificate, TlsError};
pub use webtransport_proto as proto;
pub use webtransport_proto::connection::CapsuleFraming;
pub use webtransport_proto::stream_header::SessionId;
pub use webtransport_proto::Code;
