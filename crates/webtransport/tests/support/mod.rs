//! A raw HTTP/3 peer on plain quinn, for tests that need a server misbehaving (or behaving
//! like another implementation) in ways our own `Server` never does.

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
