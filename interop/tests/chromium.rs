//! Headless Chromium (Debian's package) against our server: `pages/browser.html` runs
//! every check and prints one `RESULT {json}` line (`interop::browser` runs the browser).
//! Every check passes in Chromium 156, in its default draft-02 mode and with draft-07.
//! `chromium_vs_web_transport_quinn` runs the subprotocol and stream-code checks against
//! a second server: the control for Firefox's results there (tests/firefox.rs).

mod support;

use interop::browser::{self, Kind};
use support::{judge, route_server_saw, CHECKS, OFFERED};

async fn run_matrix(extra_args: &[&str], label: &str, draft: &str) {
    interop::init_log();
    let srv = interop::start(|_| {}).await;
    let query = format!("port={}&hash={}", srv.port, srv.hash_hex);
    let run = browser::run_page(Kind::Chromium, &query, extra_args).await;
    let wrong = judge(label, &run, &CHECKS, &[]);
    assert!(wrong.is_empty(), "[{label}] {wrong:#?}");
    let seen = srv.observed.lock().unwrap().clone();
    route_server_saw(Kind::Chromium, &seen, Some(10), true);
    for (chosen, settings) in &seen.peers {
        assert_eq!(chosen, draft, "Chromium's SETTINGS: {settings}");
    }
    let (_, settings) = seen.peers.first().expect("requests seen");
    println!("[{label}] Chromium's SETTINGS: {settings}; we chose {draft}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_default() {
    run_matrix(&[], "chromium", "draft-02").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_draft07() {
    run_matrix(
        &["--enable-features=EnableWebTransportDraft07"],
        "chromium-draft07",
        "draft-07",
    )
    .await;
}

/// The page's `subprotocol` and `stream_codes` checks against web-transport-quinn: it
/// sees Chromium's offer and its STOP_SENDING, as our server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_vs_web_transport_quinn() {
    let label = "chromium vs web-transport-quinn";
    let srv = support::web_transport_quinn_server().await;
    let checks = ["stream_codes", "subprotocol"];
    let query = format!(
        "port={}&hash={}&only={}",
        srv.port,
        srv.hash_hex,
        checks.join(",")
    );
    let run = browser::run_page(Kind::Chromium, &query, &[]).await;
    let wrong = judge(label, &run, &checks, &[]);
    assert!(wrong.is_empty(), "[{label}] {wrong:#?}");
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.reset_seen, Some(Some(7)), "{seen:?}");
    assert_eq!(seen.stop_seen, Some(Some(10)), "{seen:?}");
    assert!(
        seen.offered.contains(&OFFERED.map(String::from).to_vec()),
        "{seen:?}"
    );
}
