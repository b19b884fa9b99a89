//! Shared by the browser tests (`chromium.rs`, `firefox.rs`): judging a run of
//! `pages/browser.html`, what our route server must have seen of it, and a second server
//! written with web-transport-quinn that runs the page's `/echo` (with subprotocols) and
//! `/codes` routes, to tell a browser's behaviour from our server's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interop::browser::{Kind, PageRun};
use interop::Observed;
use web_transport_quinn::{ReadError, ReadToEndError};

/// Every check of `pages/browser.html`, in the order it runs them.
pub const CHECKS: [&str; 10] = [
    "bidi_echo_concurrent",
    "uni_both_ways",
    "server_initiated_bidi",
    "datagrams_both_ways",
    "client_close_code_reason",
    "server_close_code_reason",
    "stream_codes",
    "subprotocol",
    "rejected_path_404",
    "two_sessions_in_turn",
];

/// The subprotocols the page's `subprotocol` check offers, in its order.
pub const OFFERED: [&str; 2] = ["echo-v2", "echo-v1"];

/// A check that fails in a browser because of that browser's documented behaviour (see
/// docs/interop.md): the page must report exactly `detail` for it.
pub struct Known {
    pub check: &'static str,
    pub detail: &'static str,
}

/// Prints one line per check (`ok`, `ok*` for a failure that is the browser's documented
/// behaviour, `FAIL`) and returns what is wrong: missing or unexpected checks, failures,
/// and known failures that now pass or fail differently (the docs need updating then).
pub fn judge(label: &str, run: &PageRun, expected: &[&str], known: &[Known]) -> Vec<String> {
    let mut wrong = Vec::new();
    let names: Vec<&str> = run.result.keys().map(String::as_str).collect();
    for name in expected {
        if !names.contains(name) {
            wrong.push(format!("{name}: not reported"));
        }
    }
    for (name, r) in &run.result {
        let ok = r["ok"].as_bool().unwrap_or(false);
        let detail = r["detail"].as_str().unwrap_or_default();
        let status = match (ok, known.iter().find(|k| k.check == name)) {
            (true, None) => "ok  ",
            (false, Some(k)) if detail == k.detail => "ok* ",
            (true, Some(k)) => {
                wrong.push(format!(
                    "{name}: passes, but is documented to fail with {:?}",
                    k.detail
                ));
                "FAIL"
            }
            (false, _) => {
                wrong.push(format!("{name}: {detail}"));
                "FAIL"
            }
        };
        println!("[{label}] {name:26} {status} {:>5}ms {detail}", r["ms"]);
        if !expected.contains(&name.as_str()) {
            wrong.push(format!("{name}: not a check this run asked for"));
        }
    }
    println!("[{label}] RESULT after {:.1?}", run.elapsed);
    wrong
}

/// What our route server must have seen of a whole page run by `kind`: the page's close
/// (4242, "bye from NAME"), the page's reset code 7, `stop` as the code of the page's
/// STOP_SENDING (`None`: none came), [`OFFERED`] with the `subprotocol` check's request
/// when `offers` (and no subprotocols offered otherwise), and the rejected path.
pub fn route_server_saw(kind: Kind, seen: &Observed, stop: Option<u32>, offers: bool) {
    let reason = format!("bye from {}", kind.name());
    assert!(
        seen.closes
            .iter()
            .any(|(path, code, r, remote)| path == "/close-watch"
                && *code == 4242
                && *r == reason
                && *remote),
        "server did not see the page's close code and reason: closes {:?}, lost {:?}",
        seen.closes,
        seen.lost
    );
    assert_eq!(seen.reset_seen, Some(Some(7)), "reset code the server read");
    assert_eq!(
        seen.stop_seen,
        Some(stop),
        "stop code the server's stream saw"
    );
    assert!(
        seen.paths.contains(&"/nope".to_owned()),
        "paths: {:?}",
        seen.paths
    );
    // The subprotocol check is the only request that offers any.
    let offered: Vec<&Vec<String>> = seen.offered.iter().filter(|o| !o.is_empty()).collect();
    let expected = OFFERED.map(String::from).to_vec();
    match offers {
        true => assert_eq!(offered, [&expected], "offered subprotocols"),
        false => assert!(offered.is_empty(), "offered subprotocols: {offered:?}"),
    }
}

/// What the second server saw.
#[derive(Debug, Default, Clone)]
pub struct SecondSeen {
    /// Subprotocols offered with each request, in order.
    pub offered: Vec<Vec<String>>,
    /// The reset code read on `/codes` stream 1 (`Some(None)`: not a reset).
    pub reset_seen: Option<Option<u32>>,
    /// The stop code the `/codes` uni stream saw (`Some(None)`: none within the grace).
    pub stop_seen: Option<Option<u32>>,
    /// The reason `/codes` closed its session with.
    pub codes_reason: Option<String>,
}

/// A web-transport-quinn 0.13 server on 127.0.0.1 (certificate from
/// `webtransport::generate_self_signed`), stopped on drop.
pub struct SecondServer {
    pub port: u16,
    pub hash_hex: String,
    pub seen: Arc<Mutex<SecondSeen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SecondServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the second server: `/echo` accepts the first subprotocol offered (answering
/// `wt-protocol`) and echoes bidi streams; `/codes` runs the same choreography as our
/// route server's `/codes`; anything else is refused with 404.
pub async fn web_transport_quinn_server() -> SecondServer {
    let cert =
        webtransport::generate_self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
    let mut server = web_transport_quinn::ServerBuilder::new()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_certificate(vec![cert.cert_der.clone()], cert.private_key())
        .expect("web-transport-quinn server");
    let port = server.local_addr().expect("local address").port();
    let seen: Arc<Mutex<SecondSeen>> = Arc::default();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(req) = server.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let routed = tokio::time::timeout(Duration::from_secs(30), route(req, seen));
                    match routed.await {
                        Ok(Err(e)) => eprintln!("  web-transport-quinn server: {e}"),
                        Err(_) => {
                            eprintln!("  web-transport-quinn server: a session outlived 30 s")
                        }
                        Ok(Ok(())) => {}
                    }
                });
            }
        })
    };
    SecondServer {
        port,
        hash_hex: cert.sha256_hex(),
        seen,
        task,
    }
}

async fn route(
    req: web_transport_quinn::Request,
    seen: Arc<Mutex<SecondSeen>>,
) -> Result<(), String> {
    let path = req.url.path().to_owned();
    seen.lock().unwrap().offered.push(req.protocols.clone());
    let session = match path.as_str() {
        "/echo" => {
            let mut response = web_transport_quinn::proto::ConnectResponse::OK;
            if let Some(first) = req.protocols.first() {
                response = response.with_protocol(first.clone());
            }
            let session = req.respond(response).await.map_err(|e| e.to_string())?;
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(data) = recv.read_to_end(1 << 20).await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
            session
        }
        "/codes" => {
            let session = req.ok().await.map_err(|e| e.to_string())?;
            let reason = codes(&session, &seen).await;
            seen.lock().unwrap().codes_reason = Some(reason.clone());
            session.close(0, reason.as_bytes());
            session
        }
        _ => {
            return req
                .reject(web_transport_quinn::http::StatusCode::NOT_FOUND)
                .await
                .map_err(|e| e.to_string());
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), session.closed()).await;
    Ok(())
}

/// Our route server's `/codes` (`src/lib.rs`), step by step, on web-transport-quinn.
async fn codes(session: &web_transport_quinn::Session, seen: &Mutex<SecondSeen>) -> String {
    let steps = async {
        // 1. The page resets its stream with 7 after our acknowledgement byte.
        let (mut send, mut recv) = session.accept_bi().await.ok()?;
        let mut first = [0u8; 3];
        recv.read_exact(&mut first).await.ok()?;
        send.write_all(b"k").await.ok()?;
        let reset = match recv.read_to_end(1 << 20).await {
            Err(ReadToEndError::ReadError(ReadError::Reset(code))) => Some(code),
            _ => None,
        };
        seen.lock().unwrap().reset_seen = Some(reset);
        // 2. We stop the page's second stream with 8.
        let (_send2, mut recv2) = session.accept_bi().await.ok()?;
        let mut b = [0u8; 3];
        recv2.read_exact(&mut b).await.ok()?;
        recv2.stop(8).ok()?;
        // 3. We reset our own stream with 9 once the page acknowledged its first byte.
        let (mut send3, mut recv3) = session.open_bi().await.ok()?;
        send3.write_all(b"x").await.ok()?;
        let mut ack = [0u8; 1];
        recv3.read_exact(&mut ack).await.ok()?;
        send3.reset(9).ok()?;
        // 4. The page stops our uni stream with 10, then says so on a uni stream.
        let mut send4 = session.open_uni().await.ok()?;
        send4.write_all(b"y").await.ok()?;
        let stop = send4.stopped();
        let marker = async {
            let mut marker = session.accept_uni().await.ok()?;
            marker.read_to_end(64).await.ok()
        };
        tokio::pin!(stop, marker);
        let stopped = tokio::select! {
            stopped = &mut stop => {
                let _ = (&mut marker).await;
                stopped.ok().flatten()
            }
            _ = &mut marker => tokio::time::timeout(interop::STOP_GRACE, &mut stop)
                .await
                .ok()
                .and_then(|stopped| stopped.ok())
                .flatten(),
        };
        seen.lock().unwrap().stop_seen = Some(stopped);
        Some((reset, stopped))
    };
    match tokio::time::timeout(Duration::from_secs(10), steps).await {
        Ok(Some((reset, stopped))) => format!("reset={reset:?} stopped={stopped:?}"),
        _ => "choreography failed".into(),
    }
}
