//! Peer-initiated streams of a type we do not know (RFC 9114 §6.2): reading is aborted
//! with H3_STREAM_CREATION_ERROR, and the connection carries on.

use std::time::Duration;

use webtransport::*;

mod support;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_unknown_uni_stream_is_stopped_with_h3_stream_creation_error() {
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let server = Server::bind(ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    let conn = support::raw_client(addr, cert.sha256).await;
    let _control = support::control_with(&conn, support::client_settings(1 << 20, 100))
        .await
        .unwrap();

    // 0x3f: a stream type no spec we speak defines, and not a GREASE value either.
    let mut unknown = conn.open_uni().await.unwrap();
    unknown.write_all(&[0x3f, 1, 2, 3]).await.unwrap();
    let code = tokio::time::timeout(T, unknown.stopped())
        .await
        .expect("the server stops the stream")
        .unwrap();
    assert_eq!(
        code.map(|c| c.into_inner()),
        Some(webtransport::proto::Code::H3_STREAM_CREATION_ERROR.0)
    );
    // Not a connection error: a session still opens on the same connection.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&support::connect_request("/echo"))
        .await
        .unwrap();
    let request = tokio::time::timeout(T, server.accept())
        .await
        .unwrap()
        .unwrap();
    let _session = request.accept().unwrap();
    let mut first = [0u8; 1];
    tokio::time::timeout(T, recv.read_exact(&mut first))
        .await
        .expect("the 200 arrives")
        .unwrap();
    assert!(conn.close_reason().is_none());
}
