//! Headless Firefox ESR (Debian's `firefox-esr`) against our server: the same page as
//! Chromium's (`pages/browser.html`), run the same way (`interop::browser`).
//!
//! Two cells differ from Chromium, both by Firefox's own behaviour (docs/interop.md,
//! "Firefox ESR"), and are asserted as such:
//!
//! - `subprotocol`: Firefox ignores the `protocols` option (its request carries no
//!   `wt-available-protocols`) and has no `WebTransport.protocol` attribute.
//! - `stream_codes`: cancelling a receive stream sends no STOP_SENDING, so the server's
//!   stream never learns the page's code 10 (the other three codes pass).
//!
//! `firefox_vs_web_transport_quinn` shows both against a second server, on which
//! Chromium passes the same two checks (`chromium_vs_web_transport_quinn`).

mod support;

use interop::browser::{self, Kind};
use support::{judge, route_server_saw, Known, CHECKS};

/// Firefox's documented failure of the page's `subprotocol` check.
const NO_SUBPROTOCOLS: Known = Known {
    check: "subprotocol",
    detail: "protocol undefined (no WebTransport.protocol attribute)",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_esr() {
    let label = "firefox";
    interop::init_log();
    let srv = interop::start(|_| {}).await;
    let query = format!("port={}&hash={}", srv.port, srv.hash_hex);
    let run = browser::run_page(Kind::Firefox, &query, &[]).await;
    let wrong = judge(label, &run, &CHECKS, &[NO_SUBPROTOCOLS]);
    assert!(wrong.is_empty(), "[{label}] {wrong:#?}");
    // The page saw codes 8 and 9 (its check passed); the server read the page's reset 7
    // and no STOP_SENDING.
    let seen = srv.observed.lock().unwrap().clone();
    route_server_saw(Kind::Firefox, &seen, None, false);
    // Every request's connection spoke draft-02.
    for (draft, settings) in &seen.peers {
        assert_eq!(draft, "draft-02", "Firefox's SETTINGS: {settings}");
    }
    let (_, settings) = seen.peers.first().expect("requests seen");
    println!("[{label}] Firefox's SETTINGS: {settings}; we chose draft-02");
}

/// The two Firefox cells against web-transport-quinn: the same outcome as against our
/// server, so they are Firefox's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_vs_web_transport_quinn() {
    let label = "firefox vs web-transport-quinn";
    let srv = support::web_transport_quinn_server().await;
    let checks = ["stream_codes", "subprotocol"];
    let query = format!(
        "port={}&hash={}&only={}",
        srv.port,
        srv.hash_hex,
        checks.join(",")
    );
    let run = browser::run_page(Kind::Firefox, &query, &[]).await;
    let wrong = judge(label, &run, &checks, &[NO_SUBPROTOCOLS]);
    assert!(wrong.is_empty(), "[{label}] {wrong:#?}");
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.reset_seen, Some(Some(7)), "{seen:?}");
    assert_eq!(seen.stop_seen, Some(None), "{seen:?}");
    assert!(
        seen.offered.iter().all(Vec::is_empty),
        "Firefox offered subprotocols: {seen:?}"
    );
}
