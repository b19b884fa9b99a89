//! Connecting: a client [`Connection`] goes Idle → Connecting → Connected and opens its
//! first session (pywebtransport's `create_client`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use webtransport_proto::connection::Role;
use webtransport_proto::headers::{ConnectRequest, UpgradeToken};
use webtransport_proto::qpack::HeaderField;

use super::Reuse;
use crate::config::ClientConfig;
use crate::connection::{Connection, WeakConnection};
use crate::engine::{reader, ConfigRef, EndpointUse, Engine, EngineSetup};
use crate::error::{ConnectError, ConnectionError, HandshakeError};
use crate::lifecycle::ConnectionState;
use crate::session::Session;

/// What to open with [`Connection::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Host name for SNI, certificate checks and `:authority`.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Request path (default `/`).
    pub path: String,
    /// Send the QUIC packets here instead of to `host` (SNI and `:authority` stay the
    /// host's).
    pub proxy: Option<SocketAddr>,
    /// Subprotocols offered in `wt-available-protocols`.
    pub protocols: Vec<String>,
    /// Extra request headers (in addition to the config's).
    pub headers: Vec<(String, String)>,
    /// `origin` header.
    pub origin: Option<String>,
}

impl ConnectOptions {
    /// `path` on `host:port`, everything else default.
    pub fn to(host: &str, port: u16, path: &str) -> Self {
        ConnectOptions {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            ..ConnectOptions::default()
        }
    }
}

impl Connection {
    /// Connects to `host:port` and opens a session on `path` (pywebtransport's
    /// `create_client`). The session lives as long as the connection's handles and is
    /// available as [`Connection::wait_for_ready_session`] / [`Connection::session`].
    pub async fn connect(
        config: &ClientConfig,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<Connection, ConnectError> {
        let opts = ConnectOptions::to(host, port, path);
        let (conn, _session) = Self::connect_with(config, opts).await?;
        Ok(conn)
    }

    /// Connects with all options and returns the connection and its first session.
    pub async fn connect_with(
        config: &ClientConfig,
        opts: ConnectOptions,
    ) -> Result<(Connection, Session), ConnectError> {
        let conn = Self::new_client(config, opts)?;
        let session = conn.establish().await?;
        Ok((conn, session))
    }

    /// A client connection that has not started: state [`ConnectionState::Idle`], nothing
    /// sent yet. [`Connection::start`] connects it in the background (then
    /// [`Connection::wait_ready`] and [`Connection::wait_for_ready_session`] wait for it),
    /// [`Connection::establish`] connects it and returns its first session.
    pub fn new_client(
        config: &ClientConfig,
        opts: ConnectOptions,
    ) -> Result<Connection, ConnectError> {
        new_client(config, opts, None)
    }

    /// Starts connecting in the background (Idle → Connecting); does nothing if it has
    /// started already or is not a client connection.
    pub fn start(&self) {
        if let Some(connect) = self.engine().take_start() {
            self.engine()
                .lifecycle()
                .advance(ConnectionState::Connecting);
            tokio::spawn(connect);
        }
    }

    /// Connects an Idle client connection and returns its first session, or waits for a
    /// started one to have it. The whole connect takes at most the config's
    /// `connect_timeout`.
    pub async fn establish(&self) -> Result<Session, ConnectError> {
        let engine = self.engine();
        if let Some(connect) = engine.take_start() {
            engine.lifecycle().advance(ConnectionState::Connecting);
            connect.await;
        }
        if let Some(e) = engine.failure() {
            return Err(e);
        }
        // The first session, even if it ended already (its end is then what the
        // application sees); or, for a connect started elsewhere, the first ready one.
        let id = match self.initial_session() {
            Some(id) => id,
            None => {
                let timeout = engine.config().session_timeout;
                self.wait_for_ready_session(timeout).await?
            }
        };
        self.session(id)
            .ok_or(ConnectError::ConnectionLost(ConnectionError::LocallyClosed))
    }

    /// Opens another session on this (client) connection and waits for the server's
    /// answer (at most the config's `connect_timeout`).
    pub async fn open_session(&self, request: ConnectRequest) -> Result<Session, ConnectError> {
        open_session(self, request).await
    }
}

/// A client connection in the Idle state whose connect waits in its engine; `reuse` is a
/// [`Client`](super::Client)'s endpoint and TLS configuration.
pub(super) fn new_client(
    config: &ClientConfig,
    opts: ConnectOptions,
    reuse: Option<Arc<Reuse>>,
) -> Result<Connection, ConnectError> {
    config.validate()?;
    let config = Arc::new(config.clone());
    let engine = Engine::new(
        Role::Client,
        &EngineSetup::new(ConfigRef::Client(config.clone())),
        ConnectionState::Idle,
        None,
        None,
    );
    let conn = Connection::from_engine(engine.clone(), true);
    let weak = conn.downgrade();
    let timeout = config.connect_timeout;
    let connect = async move {
        let run = connect(&engine, &config, opts, reuse.as_deref(), weak);
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(timeout)),
        };
        if let Err(e) = result {
            engine.fail(e);
        }
    };
    conn.engine().set_start(Box::pin(connect));
    Ok(conn)
}

/// Resolves, handshakes, links the engine and opens the first session.
async fn connect(
    engine: &Arc<Engine>,
    config: &ClientConfig,
    opts: ConnectOptions,
    reuse: Option<&Reuse>,
    conn: WeakConnection,
) -> Result<(), ConnectError> {
    let addr = match opts.proxy {
        Some(p) => p,
        None => resolve(&opts.host, opts.port).await?,
    };
    let (quinn_config, endpoint) = match reuse {
        Some(r) => (
            r.quinn_config(config)?,
            EndpointUse::Shared(r.endpoint(addr.is_ipv6(), &config.transport)?),
        ),
        None => (
            crate::tls::quinn_client_config(config)?,
            EndpointUse::Own(Arc::new(super::bind_endpoint(
                addr.is_ipv6(),
                &config.transport,
            )?)),
        ),
    };
    let (EndpointUse::Own(ep) | EndpointUse::Shared(ep)) = &endpoint;
    let sni = opts.host.trim_start_matches('[').trim_end_matches(']');
    let connecting = ep
        .connect_with(quinn_config, addr, sni)
        .map_err(|e| ConnectError::Handshake(HandshakeError::from_quinn_connect(e)))?;
    let quic = connecting
        .await
        .map_err(|e| ConnectError::Handshake(HandshakeError::from_quinn(&e)))?;
    engine
        .link_quic(quic, endpoint, None)
        .await
        .map_err(ConnectError::ConnectionLost)?;
    let Some(conn) = conn.upgrade() else {
        // Every handle was dropped while connecting: nobody wants this connection.
        return Err(ConnectError::Cancelled);
    };
    let session = open_session(&conn, request(config, &opts)).await?;
    conn.keep_session(session.guard());
    Ok(())
}

/// The extended CONNECT request for `opts`.
fn request(config: &ClientConfig, opts: &ConnectOptions) -> ConnectRequest {
    let mut headers: Vec<HeaderField> = config
        .headers
        .iter()
        .chain(opts.headers.iter())
        .map(|(k, v)| HeaderField::new(k.clone().into_bytes(), v.clone().into_bytes()))
        .collect();
    if let Some(ua) = &config.user_agent {
        if !headers.iter().any(|h| &h.name[..] == b"user-agent") {
            headers.push(HeaderField::new("user-agent", ua.clone().into_bytes()));
        }
    }
    ConnectRequest {
        scheme: "https".into(),
        authority: authority(&opts.host, opts.port),
        path: if opts.path.is_empty() {
            "/".into()
        } else {
            opts.path.clone()
        },
        // The core chooses the token once it knows the server's draft.
        protocol: UpgradeToken::WebTransport,
        origin: opts.origin.clone(),
        draft02: false,
        available_protocols: opts.protocols.clone(),
        headers,
    }
}

/// Sends an extended CONNECT on a new stream of `conn` and waits for the answer.
pub(crate) async fn open_session(
    conn: &Connection,
    request: ConnectRequest,
) -> Result<Session, ConnectError> {
    let engine = conn.engine();
    let deadline = Instant::now() + engine.config().session_timeout;
    let Some(link) = engine.link() else {
        return Err(ConnectError::ConnectionLost(ConnectionError::LocallyClosed));
    };
    let (send, recv) = link
        .quic
        .open_bi()
        .await
        .map_err(|e| ConnectError::ConnectionLost(ConnectionError::from_quinn(&e)))?;
    let stream: u64 = send.id().into();
    let id = engine.update(|st| st.open_session(stream, send, request))?;
    let session = Session::attach(conn.clone(), id)
        .ok_or(ConnectError::ConnectionLost(ConnectionError::LocallyClosed))?;
    if let Some(reader) = reader::start(engine, recv, None) {
        engine.reader_inbox().adopt(engine, reader);
    }
    match tokio::time::timeout_at(deadline, session.ready()).await {
        Ok(Ok(())) => Ok(session),
        Ok(Err(e)) => Err(Session::connect_error(e)),
        Err(_) => Err(ConnectError::Timeout(engine.config().session_timeout)),
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs = tokio::net::lookup_host((host_for_lookup, port))
        .await
        .map_err(|e| ConnectError::Resolve {
            host: host.to_owned(),
            source: Some(Arc::new(e)),
        })?;
    addrs.next().ok_or_else(|| ConnectError::Resolve {
        host: host.to_owned(),
        source: None,
    })
}

pub(super) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
