//! `wt serve`'s chat room in headless Chromium (Debian's package): two pages from the
//! allowed origin join one room and each hears the other; a page from another origin is
//! refused with 403 before it joins. The pages are `wt serve`'s own `/chat` page in its
//! `auto` mode (crates/webtransport-cli/src/chat.html), which prints one RESULT line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop::browser::{self, Kind};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// `wt serve --json` with its stdout read line by line; ended with SIGKILL (by pid,
/// through tokio's `Child`) when dropped.
struct WtServe {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl WtServe {
    fn spawn(args: &[&str]) -> WtServe {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let wt = target.join("debug/wt");
        assert!(
            wt.exists(),
            "{} is missing: build it with `cargo build -p webtransport-cli` at the repository \
             root (interop/setup-python.sh does)",
            wt.display()
        );
        let mut child = Command::new(&wt)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", wt.display()));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        WtServe {
            _child: child,
            lines,
        }
    }

    /// The next line with `"event": event`, skipping others.
    async fn event(&mut self, event: &str) -> Value {
        let wait = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("wt serve exited");
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["event"] == event {
                    return v;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("wt serve printed no {event} event"))
    }
}

fn free_tcp_port() -> u16 {
    let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    probe.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_and_a_foreign_origin_is_refused() {
    interop::init_log();
    let http = free_tcp_port().to_string();
    let allowed = format!("http://127.0.0.1:{http}");
    let mut serve = WtServe::spawn(&[
        "serve",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--http-port",
        &http,
        "--allow-origin",
        &allowed,
    ]);
    serve.event("listening").await;
    serve.event("http").await;

    let page = |origin: &str, name: &str| format!("{origin}/chat?room=interop&name={name}&auto=1");
    let (ann_url, bob_url) = (page(&allowed, "ann"), page(&allowed, "bob"));
    let (ann, bob) = tokio::join!(
        browser::run_url(Kind::Chromium, &ann_url, &[]),
        browser::run_url(Kind::Chromium, &bob_url, &[]),
    );
    for (me, other, run) in [("ann", "bob", &ann), ("bob", "ann", &bob)] {
        let result = &run.result;
        assert_eq!(result["joined"], true, "{me}: {result:?}");
        assert_eq!(
            result["heard"],
            serde_json::json!([other]),
            "{me} should have heard {other}: {result:?}"
        );
    }

    // `localhost` is a secure context too, but another origin than 127.0.0.1.
    let foreign = format!("http://localhost:{http}");
    let refused = browser::run_url(Kind::Chromium, &page(&foreign, "eve"), &[]).await;
    assert_eq!(refused.result["joined"], false, "{:?}", refused.result);
    assert_eq!(refused.result["origin"], foreign.as_str());
    let rejected = serve.event("session_rejected").await;
    assert_eq!(rejected["status"], 403, "{rejected}");
    assert_eq!(rejected["path"], "/chat/interop", "{rejected}");
}
