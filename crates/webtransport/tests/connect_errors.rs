//! What a client's connect reports when the server ends the connection around its answer.
//! Both cases were found against the Rust peers (interop/tests/rust_peers.rs):
//!
//! - web-transport-quinn 0.13's `Request::reject` drops its control stream, which ends it
//!   with FIN (H3_CLOSED_CRITICAL_STREAM, RFC 9114 §6.2.1), and our connect said
//!   "connection is going away" instead of naming that error;
//! - wtransport 0.7 closes the connection as soon as its 404 is acknowledged, and our
//!   connect sometimes reported the lost connection instead of the 404 it had received.
//!
//! And what a request the server never answers reports.

use std::time::Duration;

use webtransport::*;

mod support;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn control_stream_closed_while_request_pending_names_the_error() {
    let support::RawServer {
        endpoint,
        port,
        client,
    } = support::raw_server();

    // A raw HTTP/3 server: SETTINGS offering WebTransport, then, once the CONNECT request
    // arrived, FIN on its control stream.
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let mut control = support::open_control(&conn).await.unwrap();
        let (_send, mut request) = conn.accept_bi().await.unwrap();
        let mut first = [0u8; 1];
        request.read_exact(&mut first).await.unwrap();
        control.finish().unwrap();
        let _ = tokio::time::timeout(T, conn.closed()).await;
    });

    let err = tokio::time::timeout(T, client.connect(&format!("https://127.0.0.1:{port}/")))
        .await
        .expect("connect answered")
        .expect_err("the server broke HTTP/3");
    match err {
        ConnectError::ConnectionLost(ConnectionError::Protocol(e)) => {
            assert_eq!(e.code(), Code::H3_CLOSED_CRITICAL_STREAM)
        }
        other => panic!("connect reported {other:?}"),
    }
    tokio::time::timeout(T, server).await.unwrap().unwrap();
}

/// A raw HTTP/3 server that answers every CONNECT with 404 and closes the connection (code
/// 0, as a dropped quinn connection does) once the answer is acknowledged.
async fn refuse_then_close(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let conn = incoming.await?;
            let _control = support::open_control(&conn).await?;
            let (mut send, mut request) = conn.accept_bi().await?;
            let mut first = [0u8; 1];
            request.read_exact(&mut first).await?;
            send.write_all(&support::response(404)).await?;
            send.finish()?;
            let _ = send.stopped().await;
            conn.close(0u32.into(), b"");
            anyhow::Ok(())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_acknowledged_then_connection_closed_still_reads_as_the_status() {
    let support::RawServer {
        endpoint,
        port,
        client,
    } = support::raw_server();
    let server = tokio::spawn(refuse_then_close(endpoint));
    // The close races the reading of the answer: try often enough to lose that race.
    for attempt in 0..40 {
        let r = tokio::time::timeout(T, client.connect(&format!("https://127.0.0.1:{port}/")))
            .await
            .expect("connect answered");
        match r {
            Err(ConnectError::Rejected(404)) => {}
            other => panic!("attempt {attempt}: connect reported {other:?}"),
        }
    }
    server.abort();
}

/// A second session on an open connection whose CONNECT the server reads and never
/// answers: the request gives up after the client's `connect_timeout` and says so.
#[tokio::test]
async fn unanswered_session_request_times_out_after_connect_timeout() {
    const LIMIT: Duration = Duration::from_millis(400);
    let support::RawServer {
        endpoint,
        port,
        client,
    } = support::raw_server_with(|c| c.connect_timeout = LIMIT);
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let _control = support::open_control(&conn).await.unwrap();
        let (mut send, mut first) = conn.accept_bi().await.unwrap();
        let mut byte = [0u8; 1];
        first.read_exact(&mut byte).await.unwrap();
        send.write_all(&support::response(200)).await.unwrap();
        let (_unanswered, mut second) = conn.accept_bi().await.unwrap();
        second.read_exact(&mut byte).await.unwrap();
        let _ = tokio::time::timeout(T, conn.closed()).await;
    });

    let session = tokio::time::timeout(T, client.connect(&format!("https://127.0.0.1:{port}/")))
        .await
        .expect("connect answered")
        .expect("first session");
    let request = session
        .request()
        .expect("a client session keeps its request");
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(T, session.connection().open_session(request))
        .await
        .expect("open_session gave up by itself")
        .expect_err("the server never answered");
    let waited = started.elapsed();
    assert!(
        matches!(err, ConnectError::Timeout(d) if d == LIMIT),
        "open_session reported {err:?}"
    );
    assert_eq!(err.to_string(), "timed out after 400ms");
    assert!(
        waited >= LIMIT && waited < Duration::from_secs(5),
        "gave up after {waited:?}"
    );
    session.connection().abort(Code::H3_NO_ERROR, "done");
    tokio::time::timeout(T, server).await.unwrap().unwrap();
}
