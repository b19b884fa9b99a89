#![allow(dead_code)] // Each test binary uses the helpers it needs.
//! A raw HTTP/3 peer on plain quinn, for tests that need a server misbehaving (or behaving
//! like another implementation) in ways our own `Server` never does.

pub mod peer;

use webtransport::proto::frame::Frame;
use webtransport::proto::headers::ConnectResponse;
use webtransport::proto::qpack;
use webtransport::proto::settings::{id, Settings};
use webtransport::proto::stream_header::UniStreamHeader;
use webtransport::*;

/// A quinn endpoint on 127.0.0.1:0 with a self-signed certificate, and a client that pins
/// that certificate's hash.
pub struct RawServer {
    pub endpoint: quinn::Endpoint,
    pub port: u16,
    pub client: Client,
}

pub fn raw_server() -> RawServer {
    raw_server_with(|_| {})
}

/// [`raw_server`] with the client's config changed by `tweak`.
pub fn raw_server_with(tweak: impl FnOnce(&mut ClientConfig)) -> RawServer {
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cfg = ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    };
    let (quinn_cfg, _) = tls::quinn_server_config(&cfg).unwrap();
    let endpoint = quinn::Endpoint::server(quinn_cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let port = endpoint.local_addr().unwrap().port();
    let mut config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        ..ClientConfig::default()
    };
    tweak(&mut config);
    let client = Client::new(config).unwrap();
    RawServer {
        endpoint,
        port,
        client,
    }
}

/// Opens the server's control stream with SETTINGS offering WebTransport (draft-02) and
/// returns it, still open.
pub async fn open_control(conn: &quinn::Connection) -> anyhow::Result<quinn::SendStream> {
    let mut control = conn.open_uni().await?;
    let mut settings = Settings::new();
    settings.set(id::ENABLE_CONNECT_PROTOCOL, 1);
    settings.set(id::H3_DATAGRAM, 1);
    settings.set(id::ENABLE_WEBTRANSPORT, 1);
    let mut out = Vec::new();
    UniStreamHeader::Control.encode(&mut out);
    Frame::Settings(settings).encode(&mut out);
    control.write_all(&out).await?;
    Ok(control)
}

/// A HEADERS frame answering a CONNECT with `status`.
pub fn response(status: u16) -> Vec<u8> {
    let mut block = Vec::new();
    qpack::encode_field_section(&ConnectResponse::new(status).to_fields(), &mut block);
    let mut out = Vec::new();
    Frame::Headers(block.into()).encode(&mut out);
    out
}

/// SETTINGS of a client that speaks draft-15 with session flow control (`max_data`,
/// `max_streams` of each kind announced as its WT_INITIAL_* settings).
pub fn client_settings(max_data: u64, max_streams: u64) -> Settings {
    let mut s = Settings::new();
    s.set(id::QPACK_MAX_TABLE_CAPACITY, 0);
    s.set(id::H3_DATAGRAM, 1);
    s.set(id::WT_ENABLED, 1);
    s.set(id::WT_INITIAL_MAX_DATA, max_data);
    s.set(id::WT_INITIAL_MAX_STREAMS_BIDI, max_streams);
    s.set(id::WT_INITIAL_MAX_STREAMS_UNI, max_streams);
    s
}

/// A raw quinn client connected to `addr`, pinning `hash`: a peer that can send what a
/// correct one never does.
pub async fn raw_client(addr: std::net::SocketAddr, hash: [u8; 32]) -> quinn::Connection {
    let cfg = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![hash]),
        ..ClientConfig::default()
    };
    let quinn_cfg = tls::quinn_client_config(&cfg).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn_cfg);
    ep.connect(addr, "localhost").unwrap().await.unwrap()
}

/// Opens our side's control stream with `settings`; returns it, still open.
pub async fn control_with(
    conn: &quinn::Connection,
    settings: Settings,
) -> anyhow::Result<quinn::SendStream> {
    let mut control = conn.open_uni().await?;
    let mut out = Vec::new();
    UniStreamHeader::Control.encode(&mut out);
    Frame::Settings(settings).encode(&mut out);
    control.write_all(&out).await?;
    Ok(control)
}

/// A HEADERS frame with a draft-15 extended CONNECT for `path`.
pub fn connect_request(path: &str) -> Vec<u8> {
    use webtransport::proto::headers::{ConnectRequest, UpgradeToken};
    let request = ConnectRequest {
        authority: "localhost".into(),
        path: path.into(),
        protocol: UpgradeToken::WebTransportH3,
        ..ConnectRequest::default()
    };
    let mut block = Vec::new();
    qpack::encode_field_section(&request.to_fields(), &mut block);
    let mut out = Vec::new();
    Frame::Headers(block.into()).encode(&mut out);
    out
}

/// A capsule inside a DATA frame, as it travels on a CONNECT stream.
pub fn framed_capsule(capsule: &webtransport::proto::capsule::Capsule) -> Vec<u8> {
    use webtransport::proto::frame::{ty, FrameHeader};
    let mut out = Vec::new();
    FrameHeader {
        ty: ty::DATA,
        len: capsule.encoded_len() as u64,
    }
    .encode(&mut out);
    capsule.encode(&mut out);
    out
}

/// The receiving half of a CONNECT stream, read frame by frame.
pub struct ConnectStream {
    pub recv: quinn::RecvStream,
    frames: webtransport::proto::frame::FrameReader,
    capsules: webtransport::proto::capsule::CapsuleReader,
    /// How reading the stream failed (a reset, the connection's loss), once it has.
    pub error: Option<quinn::ReadError>,
}

impl ConnectStream {
    pub fn new(recv: quinn::RecvStream) -> Self {
        use webtransport::proto::frame::{FrameLimits, FrameReader};
        ConnectStream {
            recv,
            frames: FrameReader::new(FrameLimits::default()),
            capsules: webtransport::proto::capsule::CapsuleReader::new(1 << 16),
            error: None,
        }
    }

    /// The next frame event; `None` at the end of the stream or on an error.
    async fn next(&mut self) -> Option<webtransport::proto::frame::FrameEvent> {
        loop {
            if let Some(ev) = self.frames.poll().ok()? {
                return Some(ev);
            }
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.frames.push(&chunk.bytes),
                Ok(None) => return None,
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
    }

    /// Reads the response's HEADERS frame and decodes it; `None` if the stream ends first
    /// or the answer is not a valid response. What follows stays for [`Self::next_capsule`].
    pub async fn response(&mut self) -> Option<ConnectResponse> {
        use webtransport::proto::frame::FrameEvent;
        loop {
            if let FrameEvent::Frame(Frame::Headers(block)) = self.next().await? {
                let fields = qpack::decode_field_section(&block, 1 << 16).ok()?;
                return ConnectResponse::from_fields(&fields).ok();
            }
        }
    }

    /// The next capsule, read the way RFC 9297 §3.2 puts capsules on HTTP/3: inside DATA
    /// frames. `Ok(None)` at the end of the stream (see [`Self::error`] for a reset);
    /// `Err` for a capsule that is malformed or arrives bare (a frame whose type is a
    /// WebTransport capsule type, which a peer that only reads framed capsules refuses).
    pub async fn next_capsule(
        &mut self,
    ) -> Result<Option<webtransport::proto::capsule::Capsule>, String> {
        use webtransport::proto::capsule::ty;
        use webtransport::proto::frame::FrameEvent;
        loop {
            if let Some(c) = self.capsules.poll().map_err(|e| e.to_string())? {
                return Ok(Some(c));
            }
            match self.next().await {
                None => return Ok(None),
                Some(FrameEvent::DataChunk(chunk)) => self.capsules.push(&chunk),
                Some(FrameEvent::Frame(Frame::Unknown { ty: t, .. }))
                    if ty::is_session_capsule(t) =>
                {
                    return Err(format!(
                        "a bare capsule of type {t:#x} (not in a DATA frame)"
                    ));
                }
                Some(_) => {}
            }
        }
    }

    /// Reads until the HEADERS frame (the request or the response) came.
    pub async fn headers(&mut self) -> Option<()> {
        use webtransport::proto::frame::FrameEvent;
        loop {
            if let FrameEvent::Frame(Frame::Headers(_)) = self.next().await? {
                return Some(());
            }
        }
    }

    /// Reads until a whole capsule of type `ty` came (skipping others); `None` if the
    /// stream ends first.
    pub async fn capsule(&mut self, ty: u64) -> Option<webtransport::proto::capsule::Capsule> {
        use webtransport::proto::frame::FrameEvent;
        loop {
            while let Some(c) = self.capsules.poll().ok()? {
                if c.ty() == ty {
                    return Some(c);
                }
            }
            if let FrameEvent::DataChunk(chunk) = self.next().await? {
                self.capsules.push(&chunk);
            }
        }
    }
}

/// A `Server` on 127.0.0.1:0 with a fresh self-signed certificate and these session limits,
/// serving nothing until the test accepts or routes its requests.
pub async fn limited_server(
    limits: SessionLimits,
) -> (std::sync::Arc<Server>, SelfSignedCertificate) {
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let server = std::sync::Arc::new(
        Server::bind(ServerConfig {
            bind: vec!["127.0.0.1:0".parse().unwrap()],
            certificate: cert.to_certificate_source(),
            limits,
            ..ServerConfig::default()
        })
        .await
        .unwrap(),
    );
    (server, cert)
}
