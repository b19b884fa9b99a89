//! The baseline: the same scenarios over quinn's own streams and datagrams, with quinn
//! configs built by `webtransport::tls` from the same [`Configs`] our stack uses (same
//! transport settings, certificate, ALPN and certificate verifier). What it does not do
//! is HTTP/3: no control streams, no CONNECT, no stream preambles.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};

use super::api::{Conn, DatagramSource, Listener, RecvHalf, SendHalf, Stack};
use super::ours::Configs;

/// A quinn client endpoint on a socket with the kernel buffers our client's sockets have
/// (`webtransport::socket`), so that every implementation drops or keeps the same bursts.
pub fn client_endpoint(configs: &Configs) -> std::io::Result<quinn::Endpoint> {
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let socket = webtransport::socket::bind(any, &configs.client.transport)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
}

/// A quinn server endpoint at `addr` on a socket with our server's kernel buffers.
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    configs: &Configs,
) -> std::io::Result<quinn::Endpoint> {
    let socket = webtransport::socket::bind(addr, &configs.server.transport)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
}

/// quinn with one client endpoint for every connection, as a quinn application has.
#[derive(Debug)]
pub struct RawQuinn {
    configs: Configs,
    client: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    server_config: quinn::ServerConfig,
}

impl RawQuinn {
    /// A baseline with these configs. Needs a tokio runtime (for the client endpoint).
    pub fn new(configs: &Configs) -> Result<Self> {
        let client_config = webtransport::tls::quinn_client_config(&configs.client)?;
        let (server_config, _) = webtransport::tls::quinn_server_config(&configs.server)?;
        let client = client_endpoint(configs).context("cannot bind the quinn client endpoint")?;
        Ok(RawQuinn {
            configs: configs.clone(),
            client,
            client_config,
            server_config,
        })
    }
}

impl Stack for RawQuinn {
    type Conn = quinn::Connection;
    type Server = QuinnServer;

    fn name(&self) -> &'static str {
        "quinn"
    }

    async fn bind(&self, addr: SocketAddr) -> Result<QuinnServer> {
        let endpoint = server_endpoint(addr, self.server_config.clone(), &self.configs)
            .with_context(|| format!("cannot bind {addr}"))?;
        let local = endpoint.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Handshakes run in tasks of their own, as our server's do, so that a slow one
        // does not hold up the next.
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        let _ = tx.send(conn);
                    }
                });
            }
        });
        Ok(QuinnServer {
            endpoint,
            addr: local,
            accepted: Mutex::new(rx),
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection> {
        let host = addr.ip().to_string();
        Ok(self
            .client
            .connect_with(self.client_config.clone(), addr, &host)?
            .await?)
    }

    fn without_tls_resumption(&self) -> Result<Option<Self>> {
        RawQuinn::new(&self.configs.without_tls_resumption()).map(Some)
    }
}

/// A quinn server endpoint.
#[derive(Debug)]
pub struct QuinnServer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    accepted: Mutex<mpsc::UnboundedReceiver<quinn::Connection>>,
}

impl Drop for QuinnServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"");
    }
}

impl Listener for QuinnServer {
    type Conn = quinn::Connection;

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn accept(&self) -> Option<quinn::Connection> {
        self.accepted.lock().await.recv().await
    }
}

impl Conn for quinn::Connection {
    type Send = quinn::SendStream;
    type Recv = quinn::RecvStream;

    async fn open_bi(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        Ok(quinn::Connection::open_bi(self).await?)
    }

    async fn accept_bi(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        Ok(quinn::Connection::accept_bi(self).await?)
    }

    fn send_datagram(&self, source: &mut DatagramSource) -> Result<()> {
        Ok(quinn::Connection::send_datagram(
            self,
            source.next().clone(),
        )?)
    }

    async fn read_datagram(&self) -> Result<Bytes> {
        Ok(quinn::Connection::read_datagram(self).await?)
    }

    fn datagram_send_buffer_space(&self) -> usize {
        quinn::Connection::datagram_send_buffer_space(self)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        quinn::Connection::max_datagram_size(self)
    }

    fn close(&self) {
        quinn::Connection::close(self, 0u32.into(), b"");
    }
}

impl SendHalf for quinn::SendStream {
    async fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        Ok(quinn::SendStream::write_all(self, buf).await?)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(quinn::SendStream::finish(self)?)
    }
}

impl RecvHalf for quinn::RecvStream {
    async fn read_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(quinn::RecvStream::read_chunk(self, usize::MAX, true)
            .await?
            .map(|c| c.bytes))
    }
}
