//! A peer may write the WebTransport bidi preamble (0x41, then the session id) in pieces:
//! wtransport 0.7 writes the two varints with two writes, and now and then they travel in
//! separate packets. Found by interop/tests/rust_peers.rs: our client dropped such a
//! stream (quinn then sends STOP_SENDING 0) instead of handing it to `accept_bi`.

use std::time::Duration;

mod support;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn server_bidi_stream_with_preamble_in_pieces_reaches_accept_bi() {
    let support::RawServer {
        endpoint,
        port,
        client,
    } = support::raw_server();

    // A raw HTTP/3 server: SETTINGS, a 200 to the CONNECT, then a bidi stream whose
    // preamble comes in two pieces far enough apart to be read separately.
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let _control = support::open_control(&conn).await.unwrap();

        let (mut connect_send, mut connect_recv) = conn.accept_bi().await.unwrap();
        let mut first = [0u8; 1];
        connect_recv.read_exact(&mut first).await.unwrap();
        connect_send
            .write_all(&support::response(200))
            .await
            .unwrap();

        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x40, 0x41]).await.unwrap(); // WT_STREAM as a 2-byte varint
        tokio::time::sleep(Duration::from_millis(50)).await;
        send.write_all(&[0x00]).await.unwrap(); // session 0
        send.write_all(b"hello").await.unwrap();
        send.finish().unwrap();
        let reply = tokio::time::timeout(T, recv.read_to_end(64)).await;
        (reply, conn)
    });

    let session = tokio::time::timeout(T, client.connect(&format!("https://127.0.0.1:{port}/")))
        .await
        .expect("connect answered")
        .expect("session");
    let (mut send, mut recv) = tokio::time::timeout(T, session.accept_bi())
        .await
        .expect("the server's stream reached accept_bi")
        .unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"hello");
    send.write_all(b"hi").await.unwrap();
    send.finish().unwrap();
    let (reply, _conn) = tokio::time::timeout(T, server).await.unwrap().unwrap();
    assert_eq!(reply.expect("reply in time").unwrap(), b"hi");
    session.close(0, "done").unwrap();
}
