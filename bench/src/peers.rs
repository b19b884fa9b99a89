//! wtransport 0.7 and web-transport-quinn 0.13 under the benchmark traits, each built on
//! the quinn configs of `webtransport::tls` (same transport settings, certificate, ALPN
//! and verifier as our stack and the raw-quinn baseline).
//!
//! Every endpoint's UDP socket has the kernel buffers our stack's have
//! (`webtransport::socket::bind`).
//!
//! Where a crate offers a zero-copy path it is used: reads take quinn's chunks directly
//! (web-transport-quinn's `read_chunk`; wtransport's stream exposes its quinn stream, and
//! its own `read` would add a copy), and `finish` does not wait for acknowledgements
//! (wtransport's own `finish` does).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};

use crate::api::{Conn, DatagramSource, Listener, RecvHalf, SendHalf, Stack};
use crate::ours::Configs;

fn quinn_configs(configs: &Configs) -> Result<(quinn::ClientConfig, quinn::ServerConfig)> {
    let client = webtransport::tls::quinn_client_config(&configs.client)?;
    let (server, _) = webtransport::tls::quinn_server_config(&configs.server)?;
    Ok((client, server))
}

// ---------------------------------------------------------------------------------------
// wtransport
// ---------------------------------------------------------------------------------------

/// wtransport 0.7 with one client endpoint.
pub struct Wtransport {
    client: wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    server_config: quinn::ServerConfig,
    configs: Configs,
}

impl Wtransport {
    pub fn new(configs: &Configs) -> Result<Self> {
        let (client_config, server_config) = quinn_configs(configs)?;
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let socket = webtransport::socket::bind(any, &configs.client.transport)?;
        let config = wtransport::ClientConfig::builder()
            .with_bind_socket(socket)
            .build_with_quic_config(client_config);
        Ok(Wtransport {
            client: wtransport::Endpoint::client(config)?,
            server_config,
            configs: configs.clone(),
        })
    }
}

impl Stack for Wtransport {
    type Conn = wtransport::Connection;
    type Server = Accepted<wtransport::Connection>;

    fn name(&self) -> &'static str {
        "wtransport"
    }

    async fn bind(&self, addr: SocketAddr) -> Result<Self::Server> {
        let socket = webtransport::socket::bind(addr, &self.configs.server.transport)?;
        let config = wtransport::ServerConfig::builder()
            .with_bind_socket(socket)
            .build_with_quic_config(self.server_config.clone());
        let endpoint = wtransport::Endpoint::server(config)?;
        let local = endpoint.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let incoming = endpoint.accept().await;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(request) = incoming.await else { return };
                    if let Ok(conn) = request.accept().await {
                        let _ = tx.send(conn);
                    }
                });
            }
        });
        Ok(Accepted::new(local, rx))
    }

    async fn connect(&self, addr: SocketAddr) -> Result<wtransport::Connection> {
        Ok(self.client.connect(format!("https://{addr}/bench")).await?)
    }
}

impl Conn for wtransport::Connection {
    type Send = wtransport::SendStream;
    type Recv = wtransport::RecvStream;

    async fn open_bi(&self) -> Result<(wtransport::SendStream, wtransport::RecvStream)> {
        Ok(wtransport::Connection::open_bi(self).await?.await?)
    }

    async fn accept_bi(&self) -> Result<(wtransport::SendStream, wtransport::RecvStream)> {
        Ok(wtransport::Connection::accept_bi(self).await?)
    }

    fn send_datagram(&self, source: &mut DatagramSource) -> Result<()> {
        Ok(wtransport::Connection::send_datagram(self, source.next())?)
    }

    async fn read_datagram(&self) -> Result<Bytes> {
        let d = self.receive_datagram().await?;
        Ok(d.payload())
    }

    fn datagram_send_buffer_space(&self) -> usize {
        self.quic_connection().datagram_send_buffer_space()
    }

    fn max_datagram_size(&self) -> Option<usize> {
        wtransport::Connection::max_datagram_size(self)
    }

    fn close(&self) {
        wtransport::Connection::close(self, 0u32.into(), b"");
    }
}

impl SendHalf for wtransport::SendStream {
    async fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        Ok(wtransport::SendStream::write_all(self, buf).await?)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(self.quic_stream_mut().finish()?)
    }
}

impl RecvHalf for wtransport::RecvStream {
    async fn read_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self
            .quic_stream_mut()
            .read_chunk(usize::MAX, true)
            .await?
            .map(|c| c.bytes))
    }
}

// ---------------------------------------------------------------------------------------
// web-transport-quinn
// ---------------------------------------------------------------------------------------

/// web-transport-quinn 0.13 with one client endpoint.
pub struct WebTransportQuinn {
    client: web_transport_quinn::Client,
    server_config: quinn::ServerConfig,
    configs: Configs,
}

impl WebTransportQuinn {
    pub fn new(configs: &Configs) -> Result<Self> {
        let (client_config, server_config) = quinn_configs(configs)?;
        let endpoint = crate::raw_quinn::client_endpoint(configs)?;
        Ok(WebTransportQuinn {
            client: web_transport_quinn::Client::new(endpoint, client_config),
            server_config,
            configs: configs.clone(),
        })
    }
}

impl Stack for WebTransportQuinn {
    type Conn = web_transport_quinn::Session;
    type Server = Accepted<web_transport_quinn::Session>;

    fn name(&self) -> &'static str {
        "web-transport-quinn"
    }

    async fn bind(&self, addr: SocketAddr) -> Result<Self::Server> {
        let endpoint =
            crate::raw_quinn::server_endpoint(addr, self.server_config.clone(), &self.configs)?;
        let local = endpoint.local_addr()?;
        let mut server = web_transport_quinn::Server::new(endpoint);
        let (tx, rx) = mpsc::unbounded_channel();
        // The crate's `accept` runs handshakes concurrently itself.
        tokio::spawn(async move {
            while let Some(request) = server.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(session) = request.ok().await {
                        let _ = tx.send(session);
                    }
                });
            }
        });
        Ok(Accepted::new(local, rx))
    }

    async fn connect(&self, addr: SocketAddr) -> Result<web_transport_quinn::Session> {
        let url = url::Url::parse(&format!("https://{addr}/bench")).context("URL")?;
        Ok(self.client.connect(url).await?)
    }
}

impl Conn for web_transport_quinn::Session {
    type Send = web_transport_quinn::SendStream;
    type Recv = web_transport_quinn::RecvStream;

    async fn open_bi(
        &self,
    ) -> Result<(
        web_transport_quinn::SendStream,
        web_transport_quinn::RecvStream,
    )> {
        Ok(web_transport_quinn::Session::open_bi(self).await?)
    }

    async fn accept_bi(
        &self,
    ) -> Result<(
        web_transport_quinn::SendStream,
        web_transport_quinn::RecvStream,
    )> {
        Ok(web_transport_quinn::Session::accept_bi(self).await?)
    }

    fn send_datagram(&self, source: &mut DatagramSource) -> Result<()> {
        Ok(web_transport_quinn::Session::send_datagram(
            self,
            source.next().clone(),
        )?)
    }

    async fn read_datagram(&self) -> Result<Bytes> {
        Ok(web_transport_quinn::Session::read_datagram(self).await?)
    }

    fn datagram_send_buffer_space(&self) -> usize {
        web_transport_quinn::Session::datagram_send_buffer_space(self)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        Some(web_transport_quinn::Session::max_datagram_size(self)).filter(|n| *n > 0)
    }

    fn close(&self) {
        web_transport_quinn::Session::close(self, 0, b"");
    }
}

impl SendHalf for web_transport_quinn::SendStream {
    async fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        Ok(web_transport_quinn::SendStream::write_all(self, buf).await?)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(web_transport_quinn::SendStream::finish(self)?)
    }
}

impl RecvHalf for web_transport_quinn::RecvStream {
    async fn read_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(
            web_transport_quinn::RecvStream::read_chunk(self, usize::MAX, true)
                .await?
                .map(|c| c.bytes),
        )
    }
}

// ---------------------------------------------------------------------------------------

/// A server whose sessions an accept task hands over through a channel.
pub struct Accepted<C> {
    addr: SocketAddr,
    rx: Mutex<mpsc::UnboundedReceiver<C>>,
}

impl<C> Accepted<C> {
    fn new(addr: SocketAddr, rx: mpsc::UnboundedReceiver<C>) -> Self {
        Accepted {
            addr,
            rx: Mutex::new(rx),
        }
    }
}

impl<C: Conn> Listener for Accepted<C> {
    type Conn = C;

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn accept(&self) -> Option<C> {
        self.rx.lock().await.recv().await
    }
}
