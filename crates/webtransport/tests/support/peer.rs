//! A hostile WebTransport client on raw quinn: it writes HTTP/3 (control stream,
//! SETTINGS, QPACK-encoded CONNECT requests, capsules, WebTransport preambles, datagrams)
//! itself with the protocol core's encoders, so that it can send what a correct peer
//! never sends. Shared by `tests/hostile.rs` and the `wt serve` hostile tests of the CLI
//! crate (included there by path), so it uses nothing but quinn, tokio and this crate.
#![allow(dead_code)] // Each test binary uses the helpers it needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use webtransport::proto::capsule::Capsule;
use webtransport::proto::frame::{ty, Frame, FrameEvent, FrameHeader, FrameLimits, FrameReader};
use webtransport::proto::headers::{ConnectRequest, ConnectResponse, UpgradeToken};
use webtransport::proto::qpack;
use webtransport::proto::settings::{id, Settings};
use webtransport::proto::stream_header::{BidiStreamHeader, SessionId, UniStreamHeader};
use webtransport::{tls, CertVerification, ClientConfig, Code};

/// Every wait on the network is bounded by this.
pub const T: Duration = Duration::from_secs(10);

/// The address hostile peers send from: another loopback address than the well-behaved
/// clients' 127.0.0.1, so that per-address limits (the app's `max_sessions_per_ip`) count
/// them apart, as they would two hosts.
pub const HOSTILE_IP: [u8; 4] = [127, 0, 0, 2];

/// A raw QUIC connection speaking HTTP/3 by hand.
pub struct Peer {
    pub conn: quinn::Connection,
    pub endpoint: quinn::Endpoint,
    /// Our control stream, once opened (kept open: closing it is a connection error).
    pub control: Option<quinn::SendStream>,
}

/// The quinn client config a hostile peer uses: ALPN `h3`, the server's certificate
/// pinned, and `tweak` applied to QUIC's transport settings (stream windows, stream
/// limits).
pub fn quinn_config(
    hash: [u8; 32],
    tweak: impl FnOnce(&mut quinn::TransportConfig),
) -> quinn::ClientConfig {
    let cfg = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![hash]),
        ..ClientConfig::default()
    };
    let mut quinn_cfg = tls::quinn_client_config(&cfg).expect("client TLS config");
    let mut transport = cfg.transport.to_quinn();
    tweak(&mut transport);
    quinn_cfg.transport_config(Arc::new(transport));
    quinn_cfg
}

/// A quinn client endpoint on [`HOSTILE_IP`]. One endpoint can make many connections.
pub fn endpoint(
    hash: [u8; 32],
    tweak: impl FnOnce(&mut quinn::TransportConfig),
) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client(SocketAddr::from((HOSTILE_IP, 0))).expect("bind");
    ep.set_default_client_config(quinn_config(hash, tweak));
    ep
}

impl Peer {
    /// Connects (QUIC only: no HTTP/3 stream is opened).
    pub async fn connect(addr: SocketAddr, hash: [u8; 32]) -> Peer {
        Self::connect_with(addr, hash, |_| {}).await
    }

    /// Connects with QUIC transport settings changed by `tweak`.
    pub async fn connect_with(
        addr: SocketAddr,
        hash: [u8; 32],
        tweak: impl FnOnce(&mut quinn::TransportConfig),
    ) -> Peer {
        let endpoint = endpoint(hash, tweak);
        Self::connect_on(&endpoint, addr).await
    }

    /// Connects through an endpoint made by [`endpoint`].
    pub async fn connect_on(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Peer {
        let conn = tokio::time::timeout(T, endpoint.connect(addr, "localhost").unwrap())
            .await
            .expect("QUIC handshake in time")
            .expect("QUIC handshake");
        Peer {
            conn,
            endpoint: endpoint.clone(),
            control: None,
        }
    }

    /// Opens our control stream with `settings` and keeps it open.
    pub async fn settings(&mut self, settings: Settings) {
        let mut control = self.conn.open_uni().await.expect("open control stream");
        let mut out = Vec::new();
        UniStreamHeader::Control.encode(&mut out);
        Frame::Settings(settings).encode(&mut out);
        control.write_all(&out).await.expect("write SETTINGS");
        self.control = Some(control);
    }

    /// Opens a request stream and writes `bytes` on it; returns its halves.
    pub async fn request_stream(&self, bytes: &[u8]) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.conn.open_bi().await.expect("open request stream");
        send.write_all(bytes).await.expect("write request");
        (send, recv)
    }

    /// Sends a CONNECT for `path` and reads the status of the answer. The CONNECT stream
    /// stays open; its halves come back with the status.
    pub async fn open_session(&self, path: &str) -> (u16, quinn::SendStream, quinn::RecvStream) {
        let (send, mut recv) = self.request_stream(&connect_request(path)).await;
        let status = tokio::time::timeout(T, read_status(&mut recv))
            .await
            .expect("answer in time")
            .expect("an answer");
        (status, send, recv)
    }

    /// Opens a unidirectional WebTransport stream of `session` and writes its preamble
    /// and `payload` on it.
    pub async fn wt_uni(&self, session: SessionId, payload: &[u8]) -> quinn::SendStream {
        let mut s = self.conn.open_uni().await.expect("open uni");
        let mut out = Vec::new();
        UniStreamHeader::WebTransport(session).encode(&mut out);
        out.extend_from_slice(payload);
        s.write_all(&out).await.expect("write uni");
        s
    }

    /// Opens a bidirectional WebTransport stream of `session` with its preamble and
    /// `payload`.
    pub async fn wt_bidi(
        &self,
        session: SessionId,
        payload: &[u8],
    ) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.conn.open_bi().await.expect("open bidi");
        let mut out = Vec::new();
        BidiStreamHeader::encode_webtransport(session, &mut out);
        out.extend_from_slice(payload);
        send.write_all(&out).await.expect("write bidi");
        (send, recv)
    }

    /// Sends an HTTP datagram of `session` (quarter stream id, then `payload`).
    pub fn datagram(
        &self,
        session: SessionId,
        payload: &[u8],
    ) -> Result<(), quinn::SendDatagramError> {
        self.conn
            .send_datagram(webtransport::proto::datagram::encode(session, payload))
    }

    /// Starts sorting the server's unidirectional streams by their preamble: the SETTINGS
    /// of its control stream (which stays open, read to its end), and its WebTransport
    /// streams, handed over with their session and the bytes that came after the preamble.
    /// QPACK and unknown streams are read and dropped.
    pub fn server_streams(&self) -> ServerStreams {
        let (settings_tx, settings) = tokio::sync::watch::channel(None);
        let (wt_tx, webtransport) = tokio::sync::mpsc::unbounded_channel();
        let conn = self.conn.clone();
        let task = tokio::spawn(async move {
            let settings_tx = Arc::new(settings_tx);
            while let Ok(recv) = conn.accept_uni().await {
                let settings_tx = settings_tx.clone();
                let wt_tx = wt_tx.clone();
                tokio::spawn(sort_server_stream(recv, settings_tx, wt_tx));
            }
        });
        ServerStreams {
            settings,
            webtransport,
            task,
        }
    }

    /// How the server closed the connection, waiting for it up to `limit`: the
    /// application error code, or `None` if it is still open then (or closed otherwise).
    pub async fn closed_with(&self, limit: Duration) -> Option<Code> {
        let e = tokio::time::timeout(limit, self.conn.closed()).await.ok()?;
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => Some(Code(c.error_code.into_inner())),
            _ => None,
        }
    }
}

/// SETTINGS of a draft-02 WebTransport client (what Chromium sends, less GREASE).
pub fn draft02_settings() -> Settings {
    let mut s = Settings::new();
    s.set(id::QPACK_MAX_TABLE_CAPACITY, 0);
    s.set(id::QPACK_BLOCKED_STREAMS, 0);
    s.set(id::H3_DATAGRAM, 1);
    s.set(id::ENABLE_WEBTRANSPORT, 1);
    s
}

/// SETTINGS of a draft-13/14 client: `WT_MAX_SESSIONS` (the draft's way of saying it
/// speaks WebTransport) and its session flow-control windows as the three WT_INITIAL_*
/// settings; no draft-02 or draft-15 setting and no ENABLE_CONNECT_PROTOCOL (RFC 9220 §3
/// gives it a meaning only from servers).
pub fn draft13_settings(max_data: u64, max_streams_uni: u64, max_streams_bidi: u64) -> Settings {
    let mut s = Settings::new();
    s.set(id::QPACK_MAX_TABLE_CAPACITY, 0);
    s.set(id::QPACK_BLOCKED_STREAMS, 0);
    s.set(id::H3_DATAGRAM, 1);
    s.set(id::WT_MAX_SESSIONS, 1);
    s.set(id::WT_INITIAL_MAX_DATA, max_data);
    s.set(id::WT_INITIAL_MAX_STREAMS_UNI, max_streams_uni);
    s.set(id::WT_INITIAL_MAX_STREAMS_BIDI, max_streams_bidi);
    s
}

/// SETTINGS of a draft-15 client with session flow control: `max_data` bytes and
/// `max_streams` streams of each kind per session.
pub fn draft15_settings(max_data: u64, max_streams: u64) -> Settings {
    let mut s = Settings::new();
    s.set(id::QPACK_MAX_TABLE_CAPACITY, 0);
    s.set(id::H3_DATAGRAM, 1);
    s.set(id::WT_ENABLED, 1);
    s.set(id::WT_INITIAL_MAX_DATA, max_data);
    s.set(id::WT_INITIAL_MAX_STREAMS_BIDI, max_streams);
    s.set(id::WT_INITIAL_MAX_STREAMS_UNI, max_streams);
    s
}

/// An extended CONNECT for `path` as a HEADERS frame (`webtransport`, draft-02 style, so
/// it suits a peer of either SETTINGS above: the server accepts both tokens).
pub fn connect_request(path: &str) -> Vec<u8> {
    connect_request_with(path, Vec::new())
}

/// [`connect_request`] with extra header fields.
pub fn connect_request_with(path: &str, headers: Vec<qpack::HeaderField>) -> Vec<u8> {
    let request = ConnectRequest {
        authority: "localhost".into(),
        path: path.into(),
        protocol: UpgradeToken::WebTransport,
        headers,
        ..ConnectRequest::default()
    };
    let mut block = Vec::new();
    qpack::encode_field_section(&request.to_fields(), &mut block);
    let mut out = Vec::new();
    Frame::Headers(block.into()).encode(&mut out);
    out
}

/// A frame header alone: type and announced payload length.
pub fn frame_header(ty: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader { ty, len }.encode(&mut out);
    out
}

/// A capsule inside a DATA frame, as it travels on a CONNECT stream.
pub fn framed_capsule(capsule: &Capsule) -> Vec<u8> {
    let mut out = frame_header(ty::DATA, capsule.encoded_len() as u64);
    capsule.encode(&mut out);
    out
}

/// A capsule of type `ty` with a raw `value`, inside a DATA frame: any value, also one
/// that [`Capsule`] refuses to build.
pub fn framed_raw_capsule(capsule_ty: u64, value: &[u8]) -> Vec<u8> {
    let mut capsule = Vec::new();
    webtransport::proto::varint::encode(capsule_ty, &mut capsule);
    webtransport::proto::varint::encode(value.len() as u64, &mut capsule);
    capsule.extend_from_slice(value);
    let mut out = frame_header(ty::DATA, capsule.len() as u64);
    out.extend_from_slice(&capsule);
    out
}

/// Reads a response's HEADERS frame from a request stream and returns its status; `None`
/// if the stream ends or is reset first, or the answer is not a response.
pub async fn read_status(recv: &mut quinn::RecvStream) -> Option<u16> {
    let mut frames = FrameReader::new(FrameLimits::default());
    loop {
        while let Some(ev) = frames.poll().ok()? {
            if let FrameEvent::Frame(Frame::Headers(block)) = ev {
                let fields = qpack::decode_field_section(&block, 1 << 16).ok()?;
                return ConnectResponse::from_fields(&fields).ok().map(|r| r.status);
            }
        }
        let chunk = recv.read_chunk(usize::MAX, true).await.ok()??;
        frames.push(&chunk.bytes);
    }
}

/// How a stream's receiving half ends: the reset code, or `None` for a clean end (or
/// the connection's loss). Discards what it reads; bounded by [`T`].
pub async fn reset_code(recv: &mut quinn::RecvStream) -> Option<Code> {
    let end = tokio::time::timeout(T, async {
        loop {
            match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(quinn::ReadError::Reset(code)) => return Some(Code(code.into_inner())),
                Err(_) => return None,
            }
        }
    })
    .await;
    end.expect("the stream ended in time")
}

/// The STOP_SENDING code the peer sent for a stream we write, waiting up to [`T`].
pub async fn stop_code(send: &mut quinn::SendStream) -> Option<Code> {
    match tokio::time::timeout(T, send.stopped()).await {
        Ok(Ok(Some(code))) => Some(Code(code.into_inner())),
        _ => None,
    }
}

/// A WebTransport stream the server opened: its session, the stream, and the payload bytes
/// that came with the preamble.
pub type ServerUni = (SessionId, quinn::RecvStream, Vec<u8>);

/// The server's unidirectional streams, sorted by [`Peer::server_streams`].
pub struct ServerStreams {
    /// The server's SETTINGS, once its control stream brought them.
    pub settings: tokio::sync::watch::Receiver<Option<Settings>>,
    /// The server's WebTransport streams, in the order their preambles completed.
    pub webtransport: tokio::sync::mpsc::UnboundedReceiver<ServerUni>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerStreams {
    /// The server's SETTINGS, waiting for them up to [`T`]; `None` if they never came.
    pub async fn settings(&mut self) -> Option<Settings> {
        let got = tokio::time::timeout(T, self.settings.wait_for(|s| s.is_some())).await;
        got.ok()?.ok().and_then(|s| s.clone())
    }
}

impl Drop for ServerStreams {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one server stream's preamble and hands the stream where it belongs.
async fn sort_server_stream(
    mut recv: quinn::RecvStream,
    settings_tx: Arc<tokio::sync::watch::Sender<Option<Settings>>>,
    wt_tx: tokio::sync::mpsc::UnboundedSender<ServerUni>,
) {
    let mut buf = Vec::new();
    let (header, used) = loop {
        match UniStreamHeader::decode(&buf) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(_) => return,
        }
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            _ => return,
        }
    };
    let rest = buf.split_off(used);
    match header {
        UniStreamHeader::Control => {
            let mut frames = FrameReader::new(FrameLimits::default());
            frames.push(&rest);
            loop {
                while let Ok(Some(ev)) = frames.poll() {
                    if let FrameEvent::Frame(Frame::Settings(s)) = ev {
                        settings_tx.send_replace(Some(s));
                    }
                }
                match recv.read_chunk(usize::MAX, true).await {
                    Ok(Some(chunk)) => frames.push(&chunk.bytes),
                    _ => return,
                }
            }
        }
        UniStreamHeader::WebTransport(session) => {
            let _ = wt_tx.send((session, recv, rest));
        }
        _ => while let Ok(Some(_)) = recv.read_chunk(usize::MAX, true).await {},
    }
}
