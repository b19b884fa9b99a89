//! Devious Baton (draft-frindell-webtrans-devious-baton-00) on real UDP sockets: our
//! server (`baton::serve` behind a router on `baton::PATH`) against our client
//! (`baton::run_client`), against deliberately wrong clients written here on the session
//! API, and our client against a wrong server.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use webtransport::baton::{
    self, session_code, stream_code, BatonError, BatonOutcome, BatonParams, Carrier, MessageError,
};
use webtransport::*;

/// The bound of every network wait.
const T: Duration = Duration::from_secs(30);

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

type ServerResult = Result<BatonOutcome, BatonError>;

/// A server routing [`baton::PATH`] to `baton::serve` (the query parsed over `base`, a bad
/// one rejected with the error's status) and every other path to 404; each session's
/// result comes out of `results`.
struct Fixture {
    server: Arc<Server>,
    hash: [u8; 32],
    results: mpsc::UnboundedReceiver<ServerResult>,
}

async fn fixture_with(base: BatonParams, tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
    init_log();
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let mut config = ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    let server = Arc::new(Server::bind(config).await.unwrap());
    let (tx, results) = mpsc::unbounded_channel();
    let s = server.clone();
    tokio::spawn(async move {
        while let Some(req) = s.accept().await {
            let Some(query) = baton::query_of(req.path()) else {
                req.reject(404);
                continue;
            };
            let params = match base.clone().with_query(query) {
                Ok(p) => p,
                Err(e) => {
                    req.reject(e.http_status().unwrap_or(400));
                    continue;
                }
            };
            let Ok(session) = req.accept() else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(baton::serve(session, params).await);
            });
        }
    });
    Fixture {
        server,
        hash: cert.sha256,
        results,
    }
}

async fn fixture() -> Fixture {
    fixture_with(BatonParams::default(), |_| {}).await
}

impl Fixture {
    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![self.hash]),
            ..ClientConfig::default()
        }
    }

    fn url(&self, path: &str) -> String {
        let port = self.server.local_addrs()[0].port();
        format!("https://127.0.0.1:{port}{path}")
    }

    async fn connect_with(
        &self,
        config: ClientConfig,
        path: &str,
    ) -> Result<Session, ConnectError> {
        let client = Client::new(config).unwrap();
        tokio::time::timeout(T, client.connect(&self.url(path)))
            .await
            .expect("connect timed out")
    }

    async fn connect(&self, path: &str) -> Result<Session, ConnectError> {
        self.connect_with(self.client_config(), path).await
    }

    /// The result of the next session the server ran.
    async fn server_result(&mut self) -> ServerResult {
        tokio::time::timeout(T, self.results.recv())
            .await
            .expect("the server's session ended")
            .expect("the router is running")
    }

    /// Our client against our server with `params`: both outcomes.
    async fn pair(&mut self, params: &BatonParams) -> (BatonOutcome, BatonOutcome) {
        let session = self.connect(&params.to_path()).await.unwrap();
        let client = tokio::time::timeout(T, baton::run_client(session, params))
            .await
            .expect("the client finished")
            .unwrap_or_else(|e| panic!("client failed for {params:?}: {e:?}"));
        let server = self
            .server_result()
            .await
            .unwrap_or_else(|e| panic!("server failed for {params:?}: {e:?}"));
        (client, server)
    }
}

/// What each side must count for `count` batons starting at `initial` (the draft's passing
/// rule, §4.2, and datagram rule, §4.4): messages `initial, initial + 1, ..., 255, 0`, the
/// server sending the first and the sides alternating.
struct Expected {
    server_sent: u64,
    client_sent: u64,
    server_datagrams: u64,
    client_datagrams: u64,
    /// Whether the client receives the last 0 (and so closes).
    client_closes: bool,
}

fn expected(initial: u8, count: u64) -> Expected {
    let mut e = Expected {
        server_sent: 0,
        client_sent: 0,
        server_datagrams: 0,
        client_datagrams: 0,
        client_closes: false,
    };
    let values = (u16::from(initial)..=255).map(|v| v as u8).chain([0]);
    for (i, v) in values.enumerate() {
        let server_sends = i % 2 == 0;
        if server_sends {
            e.server_sent += count;
            // The client receives it.
            if v % 7 == 1 {
                e.client_datagrams += count;
            }
        } else {
            e.client_sent += count;
            if v % 7 == 0 {
                e.server_datagrams += count;
            }
        }
        e.client_closes = server_sends;
    }
    e
}

/// Both outcomes agree with the draft's sequence for `count` batons from `initial`.
fn check(client: &BatonOutcome, server: &BatonOutcome, initial: u8, count: u64) {
    let e = expected(initial, count);
    let ctx = format!("initial {initial}, count {count}: {client:?} / {server:?}");
    assert_eq!(server.initial, Some(initial), "{ctx}");
    assert_eq!(client.initial, Some(initial), "{ctx}");
    assert_eq!((client.count, server.count), (count, count), "{ctx}");
    assert_eq!(server.batons_sent, e.server_sent, "{ctx}");
    assert_eq!(client.batons_received, e.server_sent, "{ctx}");
    assert_eq!(client.batons_sent, e.client_sent, "{ctx}");
    assert_eq!(server.batons_received, e.client_sent, "{ctx}");
    assert_eq!(
        (client.batons_finished, server.batons_finished),
        (count, count),
        "{ctx}"
    );
    assert_eq!((client.batons_reset, server.batons_reset), (0, 0), "{ctx}");
    assert_eq!(server.datagrams_sent, e.server_datagrams, "{ctx}");
    assert_eq!(client.datagrams_sent, e.client_datagrams, "{ctx}");
    assert_eq!(
        (client.datagrams_not_sent, server.datagrams_not_sent),
        (0, 0),
        "{ctx}"
    );
    // Datagrams may be lost (the last ones race the close); never more than were sent.
    assert!(client.datagrams_received <= e.server_datagrams, "{ctx}");
    assert!(server.datagrams_received <= e.client_datagrams, "{ctx}");
    // §4.5: a close without error, by the side that received the last 0.
    assert_eq!((client.close.code, server.close.code), (0, 0), "{ctx}");
    assert_eq!(client.close.remote, !e.client_closes, "{ctx}");
    assert_eq!(server.close.remote, e.client_closes, "{ctx}");
}

#[test]
fn the_expected_sequence_is_the_drafts() {
    // 250 (S) 251 (C) 252 (S) 253 (C) 254 (S) 255 (C) 0 (S): the server sends 4 and the
    // client 3. The client receives 250, 252, 254, 0 (none is 1 mod 7), the server 251,
    // 253, 255 (none is 0 mod 7): no datagram. The client receives the 0 and closes.
    let e = expected(250, 1);
    assert_eq!((e.server_sent, e.client_sent), (4, 3));
    assert_eq!((e.server_datagrams, e.client_datagrams), (0, 0));
    assert!(e.client_closes);
    // 251 (S) 252 (C) 253 (S) 254 (C) 255 (S) 0 (C): the server receives 252 and 0 (both
    // 0 mod 7), the client 253 (1 mod 7); twice over for two batons. The server closes.
    let e = expected(251, 2);
    assert_eq!((e.server_sent, e.client_sent), (6, 6));
    assert_eq!((e.server_datagrams, e.client_datagrams), (4, 2));
    assert!(!e.client_closes);
}

/// The draft's defaults: version 0, one baton, an initial value the server picks at random.
#[tokio::test]
async fn default_parameters_complete() {
    let mut fx = fixture().await;
    let params = BatonParams::default();
    assert_eq!(
        params.to_path(),
        "/webtransport/devious-baton?version=0&count=1"
    );
    let (client, server) = fx.pair(&params).await;
    let initial = server.initial.expect("the server picked a baton");
    assert_ne!(initial, 0);
    check(&client, &server, initial, 1);
}

/// One, three and ten batons in parallel.
#[tokio::test]
async fn counts_of_1_3_and_10_complete() {
    let mut fx = fixture().await;
    for count in [1, 3, 10] {
        let params = BatonParams {
            count,
            baton: Some(240),
            ..BatonParams::default()
        };
        let (client, server) = fx.pair(&params).await;
        check(&client, &server, 240, count);
    }
}

/// Initial batons from the longest run (1: 256 messages, every datagram residue) to the
/// shortest (255: the client answers 0 at once), each parity of who sends the last 0.
#[tokio::test]
async fn initial_batons_1_128_250_251_and_255_complete() {
    let mut fx = fixture().await;
    for baton in [1, 128, 250, 251, 255] {
        let params = BatonParams {
            count: 2,
            baton: Some(baton),
            ..BatonParams::default()
        };
        let (client, server) = fx.pair(&params).await;
        check(&client, &server, baton, 2);
    }
}

/// Padding over several writes and reads, and no padding at all.
#[tokio::test]
async fn large_and_zero_padding_complete() {
    for padding in [0, 100_000] {
        let base = BatonParams {
            padding,
            ..BatonParams::default()
        };
        let mut fx = fixture_with(base.clone(), |_| {}).await;
        let params = BatonParams {
            baton: Some(245),
            ..base
        };
        let (client, server) = fx.pair(&params).await;
        check(&client, &server, 245, 1);
    }
}

/// §3.1: an unsupported version, an invalid baton, a count that is not positive or over
/// what the server runs are rejected with a 4xx (this server: 400); other paths are 404.
#[tokio::test]
async fn bad_queries_are_refused_with_400() {
    let fx = fixture().await;
    for query in [
        "version=1",
        "baton=0",
        "baton=256",
        "count=0",
        "count=101",
        "count=many",
        "baton=-1",
        "baton=1&baton=2",
    ] {
        let err = fx
            .connect(&format!("{}?{query}", baton::PATH))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectError::Rejected(400)),
            "{query}: {err:?}"
        );
    }
    let err = fx
        .connect("/webtransport/devious-baton-not")
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Rejected(404)), "{err:?}");
    // The limit is the server's: count=100 is fine.
    let params = BatonParams {
        count: 100,
        baton: Some(255),
        ..BatonParams::default()
    };
    let mut fx = fx;
    let (client, server) = fx.pair(&params).await;
    check(&client, &server, 255, 100);
}

/// Accepts the server's first unidirectional stream and returns its baton.
async fn first_baton(session: &Session) -> u8 {
    let mut uni = tokio::time::timeout(T, session.accept_uni())
        .await
        .expect("the server opened a stream")
        .unwrap();
    let bytes = tokio::time::timeout(T, uni.read_to_end(1 << 21))
        .await
        .expect("the server finished its stream")
        .unwrap();
    baton::decode_message(&bytes, 1 << 21).unwrap()
}

/// The session's end as the client sees it.
async fn closed(session: &Session) -> CloseInfo {
    tokio::time::timeout(T, session.closed())
        .await
        .expect("the server closed the session")
        .unwrap()
}

fn message(baton: u8, padding: usize) -> Vec<u8> {
    baton::encode_message(baton, padding)
}

/// §4.2: a client answering the server's 10 with 99 instead of 11 gets SUS.
#[tokio::test]
async fn a_wrong_baton_value_gets_sus() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    assert_eq!(first_baton(&session).await, 10);
    let (mut send, _recv) = session.open_bi().await.unwrap();
    send.write_all(&message(99, 5)).await.unwrap();
    send.finish().unwrap();
    let close = closed(&session).await;
    assert_eq!(close.code, session_code::SUS);
    assert!(close.remote);
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::Unexpected {
                value: 99,
                carrier: Carrier::PeerBidi
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.session_code(), Some(session_code::SUS));
}

/// A stream nobody asked for (the client speaks first) is unexpected too.
#[tokio::test]
async fn an_unsolicited_stream_gets_sus() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    let mut uni = session.open_uni().await.unwrap();
    uni.write_all(&message(11, 0)).await.unwrap();
    uni.finish().unwrap();
    assert_eq!(closed(&session).await.code, session_code::SUS);
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::Unexpected {
                value: 11,
                carrier: Carrier::Uni
            }
        ),
        "{err:?}"
    );
}

/// A padding length over the server's limit gets BRUH as soon as the length is read,
/// without the server waiting for (or reading) the padding.
#[tokio::test]
async fn over_long_padding_gets_bruh() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    assert_eq!(first_baton(&session).await, 10);
    let (mut send, _recv) = session.open_bi().await.unwrap();
    let too_long = baton::DEFAULT_MAX_PADDING + 1;
    let mut start = Vec::new();
    webtransport::proto::varint::encode(too_long, &mut start);
    start.extend([0u8; 100]);
    send.write_all(&start).await.unwrap();
    // No FIN: the length alone condemns the message.
    let close = closed(&session).await;
    assert_eq!(close.code, session_code::BRUH);
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::Malformed(MessageError::PaddingTooLong { len, max })
                if len == too_long && max == baton::DEFAULT_MAX_PADDING
        ),
        "{err:?}"
    );
    assert_eq!(err.session_code(), Some(session_code::BRUH));
}

/// §4.6: a gracefully closed stream with an incomplete message gets BRUH.
#[tokio::test]
async fn a_truncated_message_gets_bruh() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    assert_eq!(first_baton(&session).await, 10);
    let (mut send, _recv) = session.open_bi().await.unwrap();
    let whole = message(11, 50);
    send.write_all(&whole[..20]).await.unwrap();
    send.finish().unwrap();
    assert_eq!(closed(&session).await.code, session_code::BRUH);
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::Malformed(MessageError::Truncated { have: 20 })
        ),
        "{err:?}"
    );
}

/// Bytes after the baton are malformed too (a stream carries one message).
#[tokio::test]
async fn bytes_after_the_baton_get_bruh() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    assert_eq!(first_baton(&session).await, 10);
    let (mut send, _recv) = session.open_bi().await.unwrap();
    let mut bytes = message(11, 3);
    bytes.push(12);
    send.write_all(&bytes).await.unwrap();
    send.finish().unwrap();
    assert_eq!(closed(&session).await.code, session_code::BRUH);
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(err, BatonError::Malformed(MessageError::TrailingBytes)),
        "{err:?}"
    );
}

/// §4.6: an incomplete Baton message in a datagram gets BRUH.
#[tokio::test]
async fn a_truncated_datagram_gets_bruh() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    // Five bytes of padding announced, two present, no baton.
    session.send_datagram(&[0x05, 0, 0]).unwrap();
    assert_eq!(closed(&session).await.code, session_code::BRUH);
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::Malformed(MessageError::Truncated { have: 3 })
        ),
        "{err:?}"
    );
}

/// §4.6: a reset of a peer-opened bidirectional stream is answered with WHATEVER on the
/// server's half, and §4.5: its baton counts as reset while the other one goes on.
#[tokio::test]
async fn a_reset_baton_stream_is_answered_with_whatever() {
    let mut fx = fixture().await;
    let session = fx
        .connect("/webtransport/devious-baton?baton=10&count=2")
        .await
        .unwrap();
    assert_eq!(first_baton(&session).await, 10);
    // Baton A: a partial answer, held open.
    let (mut send_a, mut recv_a) = session.open_bi().await.unwrap();
    send_a.write_all(&[0x05, 0]).await.unwrap();
    // Baton B: a whole answer. The server's reply on it shows that it has A's stream too
    // (opened and written first), so the reset below reaches a stream it knows.
    let (mut send_b, mut recv_b) = session.open_bi().await.unwrap();
    send_b.write_all(&message(11, 0)).await.unwrap();
    send_b.finish().unwrap();
    let reply = tokio::time::timeout(T, recv_b.read_to_end(1 << 21))
        .await
        .expect("the server answered baton B")
        .unwrap();
    assert_eq!(baton::decode_message(&reply, 1 << 21), Ok(12));
    send_a.reset(stream_code::I_LIED).unwrap();
    let reset = tokio::time::timeout(T, recv_a.received_reset())
        .await
        .expect("the server answered the reset")
        .unwrap();
    assert_eq!(reset, Some(Some(stream_code::WHATEVER)));
    assert!(!session.is_closed(), "baton B is still active");
    session.close(0, "").unwrap();
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::PeerClosed {
                code: 0,
                active: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

/// §4.6 BORED: a client that never answers is given up on after the idle timeout. The
/// session is made on the running clock; the wait runs on the paused one.
#[tokio::test]
async fn a_silent_client_gets_bored() {
    let quiet = |t: &mut TransportConfig| {
        t.keep_alive_interval = None;
        t.max_idle_timeout = Duration::from_secs(600);
    };
    let mut fx = fixture_with(BatonParams::default(), |c| quiet(&mut c.transport)).await;
    let mut config = fx.client_config();
    quiet(&mut config.transport);
    let session = fx
        .connect_with(config, "/webtransport/devious-baton?baton=10")
        .await
        .unwrap();
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let close = closed(&session).await;
    assert_eq!(close.code, session_code::BORED);
    // The server's timer started at its last event, a moment before the clock was paused:
    // the close comes after the idle timeout less that moment, not at once.
    let waited = start.elapsed();
    assert!(
        waited + Duration::from_secs(1) >= baton::DEFAULT_IDLE_TIMEOUT,
        "{waited:?}"
    );
    let err = fx.server_result().await.unwrap_err();
    assert!(
        matches!(err, BatonError::TimedOut(d) if d == baton::DEFAULT_IDLE_TIMEOUT),
        "{err:?}"
    );
}

/// Our client against a server that breaks the protocol: asked for 10, it sends 11. The
/// client closes with SUS and says why.
#[tokio::test]
async fn the_client_closes_a_wrong_server_with_sus() {
    init_log();
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let server = Server::bind(ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let port = server.local_addrs()[0].port();
    let wrong = tokio::spawn(async move {
        let session = server.accept().await.unwrap().accept().unwrap();
        let mut uni = session.open_uni().await.unwrap();
        uni.write_all(&message(11, 0)).await.unwrap();
        uni.finish().unwrap();
        let close = tokio::time::timeout(T, session.closed()).await;
        drop(server);
        close
    });
    let client = Client::new(ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        ..ClientConfig::default()
    })
    .unwrap();
    let params = BatonParams {
        baton: Some(10),
        ..BatonParams::default()
    };
    let url = format!("https://127.0.0.1:{port}{}", params.to_path());
    let session = tokio::time::timeout(T, client.connect(&url))
        .await
        .unwrap()
        .unwrap();
    let err = tokio::time::timeout(T, baton::run_client(session, &params))
        .await
        .expect("the client gave up")
        .unwrap_err();
    assert!(
        matches!(
            err,
            BatonError::Unexpected {
                value: 11,
                carrier: Carrier::Uni
            }
        ),
        "{err:?}"
    );
    let close = wrong
        .await
        .unwrap()
        .expect("the client closed the session")
        .unwrap();
    assert_eq!(close.code, session_code::SUS);
    assert!(close.remote);
}
