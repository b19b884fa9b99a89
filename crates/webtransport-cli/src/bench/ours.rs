//! Our stack under the benchmark traits, and the configuration every implementation that
//! can take it shares (the raw-quinn baseline builds its quinn configs from the same
//! structs, so transport settings, certificate and TLS setup are identical).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use webtransport::{
    tls, CertVerification, CertificateSource, Client, ClientConfig, Code, RecvStream, SendStream,
    Server, ServerConfig, Session, TransportConfig,
};

use tokio::sync::mpsc;
use webtransport::app::{
    AppLimits, HandlerError, OriginAllowList, RateLimit, RequestContext, ServerApp,
};

use super::api::{Conn, DatagramSource, Listener, RecvHalf, SendHalf, Stack};

/// The configuration of a benchmark run.
#[derive(Debug, Clone)]
pub struct Configs {
    /// Server side (its `bind` is replaced by the address given to `bind`).
    pub server: ServerConfig,
    /// Client side.
    pub client: ClientConfig,
}

impl Configs {
    /// Default transport settings, one fresh self-signed certificate that the clients pin
    /// by its hash (as a browser's `serverCertificateHashes` does), and caps raised so a
    /// benchmark is never refused by a limit meant for production (connections per
    /// server, retries).
    pub fn new() -> Result<Self> {
        let cert = tls::generate_self_signed(&["localhost", "127.0.0.1", "::1"])
            .context("cannot make a certificate")?;
        Ok(Self::with_certificate(
            cert.to_certificate_source(),
            cert.sha256,
        ))
    }

    /// As [`Configs::new`] with a given certificate and its SHA-256.
    pub fn with_certificate(certificate: CertificateSource, sha256: [u8; 32]) -> Self {
        let transport = TransportConfig::default();
        let server = ServerConfig {
            transport: transport.clone(),
            certificate,
            max_connections: 1_000_000,
            ..ServerConfig::default()
        };
        let client = ClientConfig {
            transport,
            verification: CertVerification::ServerCertificateHashes(vec![sha256]),
            max_retries: 0,
            ..ClientConfig::default()
        };
        Configs { server, client }
    }

    /// The same with TLS session resumption off on the client.
    pub fn without_tls_resumption(&self) -> Self {
        let mut c = self.clone();
        c.client.tls_resumption = false;
        c
    }
}

/// Our client and server.
#[derive(Debug)]
pub struct WebTransport {
    configs: Configs,
    client: Client,
}

impl WebTransport {
    /// A stack with these configs.
    pub fn new(configs: &Configs) -> Result<Self> {
        Ok(WebTransport {
            client: Client::new(configs.client.clone())?,
            configs: configs.clone(),
        })
    }
}

impl Stack for WebTransport {
    type Conn = Session;
    type Server = WebTransportServer;

    fn name(&self) -> &'static str {
        "webtransport"
    }

    async fn bind(&self, addr: SocketAddr) -> Result<WebTransportServer> {
        let config = ServerConfig {
            bind: vec![addr],
            ..self.configs.server.clone()
        };
        let server = Server::bind(config).await?;
        let addr = *server
            .local_addrs()
            .first()
            .context("the server bound no address")?;
        Ok(WebTransportServer { server, addr })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Session> {
        Ok(self
            .client
            .connect(&format!("https://{addr}/bench"))
            .await?)
    }

    fn without_tls_resumption(&self) -> Result<Option<Self>> {
        WebTransport::new(&self.configs.without_tls_resumption()).map(Some)
    }
}

/// Our server.
#[derive(Debug)]
pub struct WebTransportServer {
    server: Server,
    addr: SocketAddr,
}

impl Listener for WebTransportServer {
    type Conn = Session;

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn accept(&self) -> Option<Session> {
        loop {
            let request = self.server.accept().await?;
            if let Ok(session) = request.accept() {
                return Some(session);
            }
        }
    }
}

/// Our stack with its server behind a [`ServerApp`] (a route and two middleware: an origin
/// allow-list and a per-IP rate limit, both set never to refuse), to measure what the
/// framework adds to a session's setup over a bare [`Server`].
#[derive(Debug)]
pub struct WebTransportApp(WebTransport);

impl WebTransportApp {
    /// A stack with these configs.
    pub fn new(configs: &Configs) -> Result<Self> {
        Ok(WebTransportApp(WebTransport::new(configs)?))
    }
}

impl Stack for WebTransportApp {
    type Conn = Session;
    type Server = AppServer;

    fn name(&self) -> &'static str {
        "webtransport-app"
    }

    async fn bind(&self, addr: SocketAddr) -> Result<AppServer> {
        let config = ServerConfig {
            bind: vec![addr],
            ..self.0.configs.server.clone()
        };
        let server = Arc::new(Server::bind(config).await?);
        let addr = *server
            .local_addrs()
            .first()
            .context("the server bound no address")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let app = ServerApp::with_limits(AppLimits {
            max_sessions: usize::MAX,
            max_sessions_per_ip: usize::MAX,
            ..AppLimits::default()
        })
        .middleware(OriginAllowList::new(["*"]))
        .middleware(RateLimit::per_ip(u32::MAX, Duration::from_secs(1)))
        .route("/bench", move |session: Session, _ctx: RequestContext| {
            let tx = tx.clone();
            async move {
                // The bench drives the session; the handler keeps it until it closes.
                let _ = tx.send(session.clone());
                let _ = session.closed().await;
                Ok::<_, HandlerError>(())
            }
        });
        let serving = tokio::spawn(app.serve(server.clone()));
        Ok(AppServer {
            _server: server,
            addr,
            sessions: tokio::sync::Mutex::new(rx),
            serving: serving.abort_handle(),
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Session> {
        self.0.connect(addr).await
    }
}

/// Our server behind a [`ServerApp`]: the sessions its handler hands over.
#[derive(Debug)]
pub struct AppServer {
    _server: Arc<Server>,
    addr: SocketAddr,
    sessions: tokio::sync::Mutex<mpsc::UnboundedReceiver<Session>>,
    serving: tokio::task::AbortHandle,
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl Listener for AppServer {
    type Conn = Session;

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn accept(&self) -> Option<Session> {
        self.sessions.lock().await.recv().await
    }
}

impl Conn for Session {
    type Send = SendStream;
    type Recv = RecvStream;

    async fn open_bi(&self) -> Result<(SendStream, RecvStream)> {
        Ok(Session::open_bi(self).await?)
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream)> {
        Ok(Session::accept_bi(self).await?)
    }

    fn send_datagram(&self, source: &mut DatagramSource) -> Result<()> {
        let mut buf = self.datagram_buffer(source.size());
        source.next_into(&mut buf);
        Ok(self.send_datagram_buffer(buf)?)
    }

    async fn read_datagram(&self) -> Result<Bytes> {
        Ok(Session::read_datagram(self).await?)
    }

    fn datagram_send_buffer_space(&self) -> usize {
        Session::datagram_send_buffer_space(self)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        Session::max_datagram_size(self)
    }

    fn close(&self) {
        self.connection().abort(Code::H3_NO_ERROR, "");
    }
}

impl SendHalf for SendStream {
    async fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        Ok(SendStream::write_all(self, buf).await?)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(SendStream::finish(self)?)
    }
}

impl RecvHalf for RecvStream {
    async fn read_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(RecvStream::read_chunk(self, usize::MAX).await?)
    }
}
