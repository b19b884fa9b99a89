//! What a client's connect reports when the server breaks HTTP/3 while the request is
//! pending. Found against web-transport-quinn 0.13 (interop/tests/rust_peers.rs): its
//! `Request::reject` drops its control stream, which ends it with FIN
//! (H3_CLOSED_CRITICAL_STREAM, RFC 9114 §6.2.1), and our connect said "connection is
//! going away" instead of naming that error.

use std::time::Duration;

use webtransport::proto::frame::Frame;
use webtransport::proto::settings::{id, Settings};
use webtransport::proto::stream_header::UniStreamHeader;
use webtransport::*;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn control_stream_closed_while_request_pending_names_the_error() {
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cfg = ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    };
    let (quinn_cfg, _) = tls::quinn_server_config(&cfg).unwrap();
    let endpoint = quinn::Endpoint::server(quinn_cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let port = endpoint.local_addr().unwrap().port();

    // A raw HTTP/3 server: SETTINGS offering WebTransport, then, once the CONNECT request
    // arrived, FIN on its control stream.
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let mut control = conn.open_uni().await.unwrap();
        let mut settings = Settings::new();
        settings.set(id::ENABLE_CONNECT_PROTOCOL, 1);
        settings.set(id::H3_DATAGRAM, 1);
        settings.set(id::ENABLE_WEBTRANSPORT, 1);
        let mut out = Vec::new();
        UniStreamHeader::Control.encode(&mut out);
        Frame::Settings(settings).encode(&mut out);
        control.write_all(&out).await.unwrap();
        let (_send, mut request) = conn.accept_bi().await.unwrap();
        let mut first = [0u8; 1];
        request.read_exact(&mut first).await.unwrap();
        control.finish().unwrap();
        let _ = tokio::time::timeout(T, conn.closed()).await;
    });

    let client = Client::new(ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = tokio::time::timeout(T, client.connect(&format!("https://127.0.0.1:{port}/")))
        .await
        .expect("connect answered")
        .expect_err("the server broke HTTP/3");
    match err {
        ConnectError::ConnectionLost(ConnectionError::Protocol {
            code,
            remote: false,
            ..
        }) => assert_eq!(code, Code::H3_CLOSED_CRITICAL_STREAM),
        other => panic!("connect reported {other:?}"),
    }
    tokio::time::timeout(T, server).await.unwrap().unwrap();
}
