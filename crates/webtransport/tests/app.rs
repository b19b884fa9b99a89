//! The server framework on real sockets: routes, middleware, hooks, handler failures,
//! groups and broadcast, statistics and Prometheus text.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use webtransport::app::{
    handlers, AccessLog, AppLimits, Auth, AuthRequest, OriginAllowList, RateLimit, Rejection,
    RequestContext, RouteOptions, ServerApp, HANDLER_FAILED_CODE,
};
use webtransport::*;

const T: Duration = Duration::from_secs(20);

struct Running {
    server: Arc<Server>,
    cert: SelfSignedCertificate,
    serving: tokio::task::JoinHandle<Result<(), webtransport::app::AppError>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.server.local_addrs()[0].port()
        )
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![self.cert.sha256]),
            ..ClientConfig::default()
        })
        .unwrap()
    }

    async fn connect(&self, path: &str) -> Result<Session, ConnectError> {
        self.connect_with(path, ConnectOptions::default()).await
    }

    async fn connect_with(
        &self,
        path: &str,
        opts: ConnectOptions,
    ) -> Result<Session, ConnectError> {
        tokio::time::timeout(T, self.client().connect_with(&self.url(path), opts))
            .await
            .expect("connect finished in time")
    }

    async fn stop(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
        tokio::time::timeout(T, self.serving)
            .await
            .expect("the app ended after the server's shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn start(app: ServerApp) -> Running {
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let server = Arc::new(
        Server::bind(ServerConfig {
            bind: vec!["127.0.0.1:0".parse().unwrap()],
            certificate: cert.to_certificate_source(),
            ..ServerConfig::default()
        })
        .await
        .unwrap(),
    );
    let serving = tokio::spawn(app.serve(server.clone()));
    Running {
        server,
        cert,
        serving,
    }
}

fn status(r: Result<Session, ConnectError>) -> u16 {
    match r {
        Err(ConnectError::Rejected(s)) => s,
        Ok(_) => 200,
        Err(e) => panic!("not a status: {e}"),
    }
}

/// Sends back on a uni stream what the handler saw: route, params, query.
fn describe() -> impl webtransport::app::Handler {
    |session: Session, ctx: RequestContext| async move {
        let params: Vec<String> = ctx
            .params()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let text = format!(
            "route={} params={} q={} protocol={}",
            ctx.route().unwrap_or("-"),
            params.join(","),
            ctx.query_param("q").unwrap_or("-"),
            ctx.protocol().unwrap_or("-"),
        );
        let mut s = session.open_uni().await?;
        s.write_all(text.as_bytes()).await?;
        s.finish()?;
        session.closed().await?;
        Ok::<_, webtransport::app::HandlerError>(())
    }
}

async fn described(session: &Session) -> String {
    let mut r = tokio::time::timeout(T, session.accept_uni())
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(r.read_to_end(4096).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_pattern_routes_with_parameters_and_404() {
    let app = ServerApp::new()
        .route("/echo", handlers::echo())
        .route("/rooms/{id}", describe())
        .route("/rooms/{id}/users/{user}", describe())
        .route_with(
            "/proto",
            RouteOptions::new().protocols(["chat-v2", "chat-v1"]),
            describe(),
        )
        .route_with(
            "/strict",
            RouteOptions::new().protocols(["a"]).require_protocol(true),
            describe(),
        );
    let run = start(app).await;
    let s = run.connect("/rooms/42?q=hello%20there").await.unwrap();
    assert_eq!(
        described(&s).await,
        "route=/rooms/{id} params=id=42 q=hello there protocol=-"
    );
    let s = run.connect("/rooms/a%2Fb/users/x").await.unwrap();
    assert_eq!(
        described(&s).await,
        "route=/rooms/{id}/users/{user} params=id=a/b,user=x q=- protocol=-"
    );
    // The echo route works end to end.
    let echo = run.connect("/echo").await.unwrap();
    let (mut send, mut recv) = echo.open_bi().await.unwrap();
    send.write_all(b"ping").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(16).await.unwrap(), b"ping");
    // The server's preference among what the client offers.
    let opts = ConnectOptions {
        protocols: vec!["chat-v1".into(), "chat-v2".into()],
        ..ConnectOptions::default()
    };
    let s = run.connect_with("/proto", opts).await.unwrap();
    assert_eq!(s.protocol().as_deref(), Some("chat-v2"));
    assert!(described(&s).await.ends_with("protocol=chat-v2"));
    // Nothing in common: a required protocol refuses, an optional one does without.
    let none = || ConnectOptions {
        protocols: vec!["zzz".into()],
        ..ConnectOptions::default()
    };
    assert_eq!(status(run.connect_with("/strict", none()).await), 400);
    let s = run.connect_with("/proto", none()).await.unwrap();
    assert_eq!(s.protocol(), None);
    for p in ["/", "/nope", "/rooms", "/rooms/1/users", "/echo/x"] {
        assert_eq!(status(run.connect(p).await), 404, "{p}");
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_first_offered_takes_the_clients_first_choice() {
    // Middleware see the connection the request came on (here: the draft chosen for it),
    // for 404s as well, in `answered`.
    struct Drafts(Arc<Mutex<Vec<(String, bool)>>>);
    impl webtransport::app::Middleware for Drafts {
        fn check<'a>(
            &'a self,
            _ctx: &'a mut RequestContext,
        ) -> webtransport::app::BoxFuture<'a, Result<(), Rejection>> {
            Box::pin(async { Ok(()) })
        }
        fn answered(&self, ctx: &RequestContext, _status: u16, _reason: Option<&str>) {
            let draft = ctx.connection().protocol().draft.is_some();
            self.0.lock().unwrap().push((ctx.path().to_owned(), draft));
        }
    }
    let drafts = Arc::new(Mutex::new(Vec::new()));
    let app = ServerApp::new()
        .middleware(Drafts(drafts.clone()))
        .route_with(
            "/any",
            // Replaces the list given before it.
            RouteOptions::new()
                .protocols(["chat-v1"])
                .accept_first_offered(),
            describe(),
        )
        .route_with(
            "/any-strict",
            RouteOptions::new()
                .accept_first_offered()
                .require_protocol(true),
            describe(),
        );
    let run = start(app).await;
    let offer = |p: &[&str]| ConnectOptions {
        protocols: p.iter().map(|p| p.to_string()).collect(),
        ..ConnectOptions::default()
    };
    for (offered, chosen) in [
        (&["echo-v2", "echo-v1"][..], "echo-v2"),
        (&["echo-v1", "echo-v2"][..], "echo-v1"),
        (&["chat-v2", "chat-v1"][..], "chat-v2"),
    ] {
        let s = run.connect_with("/any", offer(offered)).await.unwrap();
        assert_eq!(s.protocol().as_deref(), Some(chosen), "{offered:?}");
        assert!(described(&s).await.ends_with(&format!("protocol={chosen}")));
    }
    // Nothing offered: no protocol, or 400 when one is required.
    let s = run.connect_with("/any", offer(&[])).await.unwrap();
    assert_eq!(s.protocol(), None);
    assert!(described(&s).await.ends_with("protocol=-"));
    assert_eq!(
        status(run.connect_with("/any-strict", offer(&[])).await),
        400
    );
    let s = run
        .connect_with("/any-strict", offer(&["x"]))
        .await
        .unwrap();
    assert_eq!(s.protocol().as_deref(), Some("x"));
    assert!(described(&s).await.ends_with("protocol=x"));
    // Every 200 was answered before its handler ran, the 404 before it was sent.
    assert_eq!(status(run.connect("/nope").await), 404);
    let seen = drafts.lock().unwrap().clone();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.iter().all(|(_, draft)| *draft), "{seen:?}");
    assert_eq!(seen.last().map(|(p, _)| p.as_str()), Some("/nope"));
    run.stop().await;
}

#[derive(Debug, PartialEq)]
struct User(String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_and_auth_middleware_accept_and_reject() {
    let app = ServerApp::new()
        .middleware(AccessLog)
        .middleware(OriginAllowList::new(["https://good.example"]))
        .middleware(Auth::new(|req: AuthRequest| async move {
            match req.header("authorization") {
                Some("Bearer sesame") => Ok(User(format!("alice@{}", req.remote.ip()))),
                Some(_) => Err(Rejection::new(403, "auth").with_header("x-why", "bad token")),
                None => Err(Auth::<User>::unauthorized()),
            }
        }))
        .route("/me", |session: Session, ctx: RequestContext| async move {
            let who = ctx.get::<User>().map(|u| u.0.clone()).unwrap_or_default();
            let mut s = session.open_uni().await?;
            s.write_all(who.as_bytes()).await?;
            s.finish()?;
            session.closed().await?;
            Ok::<_, webtransport::app::HandlerError>(())
        });
    let run = start(app).await;
    let opts = |origin: Option<&str>, token: Option<&str>| ConnectOptions {
        origin: origin.map(str::to_owned),
        headers: token
            .map(|t| vec![("authorization".to_owned(), format!("Bearer {t}"))])
            .unwrap_or_default(),
        ..ConnectOptions::default()
    };
    let s = run
        .connect_with("/me", opts(Some("https://good.example"), Some("sesame")))
        .await
        .unwrap();
    assert_eq!(described(&s).await, "alice@127.0.0.1");
    // Without an origin (not a browser) the list lets it through; auth still applies.
    assert_eq!(
        status(run.connect_with("/me", opts(None, Some("sesame"))).await),
        200
    );
    assert_eq!(
        status(
            run.connect_with("/me", opts(Some("https://evil.example"), Some("sesame")))
                .await
        ),
        403
    );
    assert_eq!(
        status(
            run.connect_with("/me", opts(Some("https://good.example"), None))
                .await
        ),
        401
    );
    assert_eq!(
        status(
            run.connect_with("/me", opts(Some("https://good.example"), Some("x")))
                .await
        ),
        403
    );
    assert_eq!(run.server.connections_accepted(), 5);
    run.stop().await;
}

/// The rate limit on real sockets: the fourth request in the window gets 429; once the
/// window has passed (tokio's clock, advanced while no connection is open) requests pass
/// again.
#[tokio::test]
async fn the_rate_limit_hits_its_window_and_recovers() {
    let app = ServerApp::new()
        .middleware(RateLimit::per_ip(3, Duration::from_secs(60)))
        .route("/echo", handlers::echo());
    let handle = app.handle();
    let run = start(app).await;
    for _ in 0..3 {
        let s = run.connect("/echo").await.unwrap();
        s.close(0, "").unwrap();
    }
    assert_eq!(status(run.connect("/echo").await), 429);
    let d = handle.diagnostics();
    assert_eq!(d.rejected, vec![("rate_limit".to_owned(), 429, 1)]);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(121)).await;
    tokio::time::resume();
    let s = run.connect("/echo").await.unwrap();
    s.close(0, "").unwrap();
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_called_once_each_in_order() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = |log: &Arc<Mutex<Vec<String>>>, s: String| log.lock().unwrap().push(s);
    let (a, b, c, d) = (log.clone(), log.clone(), log.clone(), log.clone());
    let app = ServerApp::new()
        .on_startup(move || {
            let a = a.clone();
            async move { l(&a, "startup".into()) }
        })
        .on_session_open(move |_s, ctx| l(&b, format!("open {}", ctx.path())))
        .on_session_close(move |closed| {
            let code = closed.close.as_ref().map(|c| c.code);
            l(&c, format!("close {} {code:?}", closed.route))
        })
        .on_shutdown(move || {
            let d = d.clone();
            async move { l(&d, "shutdown".into()) }
        })
        .route("/echo", handlers::echo());
    let run = start(app).await;
    let s = run.connect("/echo").await.unwrap();
    s.close(7, "bye").unwrap();
    tokio::time::timeout(T, async {
        while log.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    run.stop().await;
    assert_eq!(
        *log.lock().unwrap(),
        ["startup", "open /echo", "close /echo Some(7)", "shutdown"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_handler_is_counted_and_harms_no_other_session() {
    let app = ServerApp::new()
        .route("/echo", handlers::echo())
        .route("/fail", |_s: Session, _c: RequestContext| async move {
            Err::<(), _>("no luck")
        })
        .route("/panic", |_s: Session, _c: RequestContext| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, webtransport::app::HandlerError>(())
        });
    let handle = app.handle();
    let run = start(app).await;
    let echo = run.connect("/echo").await.unwrap();
    for path in ["/fail", "/panic", "/fail"] {
        let s = run.connect(path).await.unwrap();
        let closed = tokio::time::timeout(T, s.closed()).await.unwrap().unwrap();
        assert_eq!(closed.code, HANDLER_FAILED_CODE, "{path}");
    }
    // The echo session on the same server still works.
    let (mut send, mut recv) = echo.open_bi().await.unwrap();
    send.write_all(b"still here").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"still here");
    let d = handle.diagnostics();
    assert_eq!((d.handler_errors, d.handler_panics), (2, 1));
    // A client that vanishes (its connection aborted) ends the echo normally: the
    // session is counted closed, not as a handler failure.
    let closed_before = d.sessions_closed;
    echo.connection().abort(Code::H3_NO_ERROR, "gone");
    let deadline = Instant::now() + T;
    while handle.diagnostics().sessions_closed == closed_before {
        assert!(
            Instant::now() < deadline,
            "the echo session's end was not seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = handle.diagnostics();
    assert_eq!((d.handler_errors, d.handler_panics), (2, 1));
    run.stop().await;
}

/// 200 sessions join one room; a stream broadcast and a datagram broadcast reach every
/// one of them; sessions leave the room as they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_two_hundred_members_and_closing_leaves_the_room() {
    let app = ServerApp::with_limits(AppLimits {
        max_sessions_per_ip: 1000,
        ..AppLimits::default()
    })
    .route(
        "/room",
        |session: Session, ctx: RequestContext| async move {
            ctx.app().registry().join("lobby", ctx.key())?;
            session.closed().await?;
            Ok::<_, webtransport::app::HandlerError>(())
        },
    );
    let handle = app.handle();
    let run = start(app).await;
    let client = run.client();
    let mut members = Vec::new();
    for _ in 0..200 {
        let s = tokio::time::timeout(T, client.connect(&run.url("/room")))
            .await
            .unwrap()
            .unwrap();
        members.push(s);
    }
    let registry = handle.registry();
    tokio::time::timeout(T, async {
        while registry.members("lobby").len() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every session joined");
    let report = registry.broadcast_stream("lobby", Bytes::from_static(b"hello room"));
    assert_eq!((report.delivered, report.skipped), (200, 0));
    for s in &members {
        let mut r = tokio::time::timeout(T, s.accept_uni())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.read_to_end(64).await.unwrap(), b"hello room");
    }
    // Datagrams may be lost (200 arrive at once at the client's one socket): broadcast
    // again until every member has one, a few rounds at most.
    let mut waiting: Vec<&Session> = members.iter().collect();
    for _ in 0..5 {
        let report = registry.broadcast_datagram("lobby", b"dgram");
        assert_eq!(report.delivered, 200);
        let mut still = Vec::new();
        for s in waiting {
            match tokio::time::timeout(Duration::from_millis(500), s.read_datagram()).await {
                Ok(d) => assert_eq!(&d.unwrap()[..], b"dgram"),
                Err(_) => still.push(s),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
    }
    assert!(
        waiting.is_empty(),
        "{} members never got a datagram",
        waiting.len()
    );
    for s in members.drain(..100) {
        s.close(0, "").unwrap();
    }
    tokio::time::timeout(T, async {
        while registry.members("lobby").len() > 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("closed sessions left the room");
    drop(members);
    tokio::time::timeout(T, async {
        while !registry.groups().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the empty room is forgotten");
    run.stop().await;
}

/// A member that never reads its streams does not slow the others: with a queue of 8,
/// 200 messages reach each of the nine readers, sent as fast as the slowest reader takes
/// them (never more than 4 ahead of it, so a reader is never skipped however loaded the
/// machine is), while the stalled member's queue fills and the rest of its messages are
/// skipped. Were the stalled member to hold up the others, the readers would stop
/// receiving and the sender's wait for them would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_does_not_slow_the_others() {
    let app = ServerApp::with_limits(AppLimits {
        broadcast_queue: 8,
        ..AppLimits::default()
    })
    .route(
        "/room",
        |session: Session, ctx: RequestContext| async move {
            ctx.app().registry().join("r", ctx.key())?;
            session.closed().await?;
            Ok::<_, webtransport::app::HandlerError>(())
        },
    );
    let handle = app.handle();
    // The stalled member lets the server open few streams to it.
    let run = start(app).await;
    let stalled_client = Client::new(ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![run.cert.sha256]),
        limits: SessionLimits {
            max_streams_uni: 2,
            ..SessionLimits::default()
        },
        ..ClientConfig::default()
    })
    .unwrap();
    let stalled = stalled_client.connect(&run.url("/room")).await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..9 {
        readers.push(run.connect("/room").await.unwrap());
    }
    let registry = handle.registry();
    tokio::time::timeout(T, async {
        while registry.members("r").len() < 10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    const N: usize = 200;
    const AHEAD: usize = 4;
    let received: Arc<Vec<AtomicUsize>> =
        Arc::new((0..readers.len()).map(|_| Default::default()).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in readers.clone().into_iter().enumerate() {
        let received = received.clone();
        tasks.spawn(async move {
            for _ in 0..N {
                let mut r = s.accept_uni().await.unwrap();
                assert_eq!(r.read_to_end(64).await.unwrap().len(), 32);
                received[i].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let slowest = || {
        received
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    let (mut delivered, mut skipped) = (0, 0);
    for sent in 0..N {
        tokio::time::timeout(T, async {
            while slowest() + AHEAD < sent {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the readers stopped at {} of {sent} messages", slowest()));
        let r = registry.broadcast_stream("r", Bytes::from(vec![7u8; 32]));
        delivered += r.delivered;
        skipped += r.skipped;
    }
    while let Some(done) = tokio::time::timeout(T, tasks.join_next()).await.unwrap() {
        done.unwrap();
    }
    // Each of the nine readers got all N; the stalled one at most its queue and the two
    // streams it allows.
    assert!(delivered >= 9 * N, "delivered {delivered}");
    assert!(skipped >= N - 8 - 2 - 1, "skipped {skipped}");
    assert!(!stalled.is_closed());
    let d = handle.diagnostics();
    assert!(d
        .broadcasts
        .iter()
        .any(|(k, o, n)| k == "stream" && o == "skipped" && *n as usize == skipped));
    run.stop().await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counters_move_as_sessions_open_and_close() {
    let app = ServerApp::new().route("/echo", handlers::echo());
    let handle = app.handle();
    let run = start(app).await;
    let before = handle.prometheus_text();
    assert!(
        before.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    assert_eq!(metric(&before, "webtransport_sessions_accepted_total"), 0);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(run.connect("/echo").await.unwrap());
    }
    assert_eq!(status(run.connect("/missing").await), 404);
    let (mut send, mut recv) = open[0].open_bi().await.unwrap();
    send.write_all(&[1u8; 1000]).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(2000).await.unwrap();
    let mid = handle.prometheus_text();
    assert_eq!(metric(&mid, "webtransport_sessions_accepted_total"), 3);
    assert_eq!(metric(&mid, "webtransport_sessions"), 3);
    assert_eq!(metric(&mid, "webtransport_session_requests_total"), 4);
    assert_eq!(
        metric(
            &mid,
            "webtransport_sessions_rejected_total{reason=\"not_found\",status=\"404\"}"
        ),
        1
    );
    assert_eq!(
        metric(&mid, "webtransport_route_sessions_total{route=\"/echo\"}"),
        3
    );
    assert!(metric(&mid, "webtransport_bytes_received_total") >= 1000);
    assert!(metric(&mid, "webtransport_bytes_sent_total") >= 1000);
    for s in open.drain(..) {
        s.close(0, "").unwrap();
    }
    tokio::time::timeout(T, async {
        while metric(
            &handle.prometheus_text(),
            "webtransport_sessions_closed_total",
        ) < 3
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let after = handle.prometheus_text();
    assert_eq!(metric(&after, "webtransport_sessions"), 0);
    // Traffic of ended sessions is kept.
    assert!(metric(&after, "webtransport_bytes_received_total") >= 1000);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_connections_are_freed_and_their_traffic_still_counted() {
    // The statistics used to hold every connection that carried a session (its whole
    // QUIC and HTTP/3 state, ~75 KB) until 1024 of them had piled up: a server with a few
    // live sessions kept ~75 MiB of ended ones (found by `wt soak`). They must go when
    // they end, and the bytes they moved must still be counted, though no one read the
    // statistics while they lived.
    let seen: Arc<Mutex<Vec<WeakConnection>>> = Arc::default();
    let handler_seen = seen.clone();
    let app = ServerApp::new().route("/echo", move |session: Session, _ctx: RequestContext| {
        let seen = handler_seen.clone();
        async move {
            seen.lock().unwrap().push(session.connection().downgrade());
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                let Ok(data) = recv.read_to_end(4096).await else {
                    break;
                };
                if send.write_all(&data).await.is_err() || send.finish().is_err() {
                    break;
                }
            }
            Ok::<_, webtransport::app::HandlerError>(())
        }
    });
    let handle = app.handle();
    let run = start(app).await;
    for _ in 0..5 {
        let session = run.connect("/echo").await.unwrap();
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(&[7u8; 1000]).await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(2000).await.unwrap().len(), 1000);
        session.close(0, "").unwrap();
        let _ = session.closed().await;
        session.connection().close(0, "").await;
    }
    let held = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|w| w.upgrade().is_some())
            .count()
    };
    tokio::time::timeout(T, async {
        while seen.lock().unwrap().len() < 5 || held() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of 5 ended connections still held", held()));
    let d = handle.diagnostics();
    assert_eq!(d.sessions_closed, 5, "{d:?}");
    assert!(d.bytes_received >= 5000, "{d:?}");
    assert!(d.bytes_sent >= 5000, "{d:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_refuse_with_503_and_429() {
    let app = ServerApp::with_limits(AppLimits {
        max_sessions: 3,
        max_sessions_per_ip: 2,
        ..AppLimits::default()
    })
    .route("/echo", handlers::echo());
    let handle = app.handle();
    let run = start(app).await;
    let a = run.connect("/echo").await.unwrap();
    let _b = run.connect("/echo").await.unwrap();
    assert_eq!(status(run.connect("/echo").await), 429);
    a.close(0, "").unwrap();
    tokio::time::timeout(T, async {
        while handle.registry().len() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let _c = run.connect("/echo").await.unwrap();
    let d = handle.diagnostics();
    assert_eq!(d.rejected, vec![("max_sessions_per_ip".to_owned(), 429, 1)]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_routes_fail_serve_with_a_typed_error() {
    let app = ServerApp::new()
        .route("/a/{x}", handlers::echo())
        .route("/a/{y}", handlers::echo());
    let run = start(app).await;
    let r = tokio::time::timeout(T, run.serving).await.unwrap().unwrap();
    assert!(matches!(
        r,
        Err(webtransport::app::AppError::Route(
            webtransport::app::RouteError::Duplicate(_)
        ))
    ));
}
