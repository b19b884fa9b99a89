//! Headless Chromium (Debian's package) against our server: the page
//! `pages/browser.html` runs every check and prints one `RESULT {json}` line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

const CHROMIUM: &str = "/usr/lib/chromium/chromium";

struct Browser(tokio::process::Child);

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium runs in its own process group (setsid): end the whole group, but
        // only while that group is still Chromium's (its leader's command line names
        // chromium), never a group whose id was reused. The signal goes through libc,
        // not the `kill` utility: procps-ng 4.0.2's `kill -KILL -PGID` sends the signal
        // to every process on the machine (kill(-1, SIGKILL)).
        if let Some(pid) = self.0.id() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let pgrp = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(2));
            let ours = String::from_utf8_lossy(&cmdline).contains("chromium")
                && pgrp == Some(&pid.to_string());
            let group = i32::try_from(pid).ok().filter(|g| *g > 1);
            if let (true, Some(group)) = (ours, group) {
                // SIGTERM, a short grace for Chromium to end its children, then SIGKILL.
                // SAFETY: kill(2) has no memory effects; a negative pid names a group.
                unsafe { libc::kill(-group, libc::SIGTERM) };
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while std::time::Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None))
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                // SAFETY: as above.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
        }
        let _ = self.0.start_kill();
    }
}

async fn run_page(port: u16, hash: &str, extra_flags: &[&str]) -> serde_json::Value {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (interop/run does)"
    );
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pages/browser.html");
    let url = format!(
        "file://{}?browser=chromium&port={port}&hash={hash}",
        page.display()
    );
    let profile = std::env::temp_dir().join(format!("wt-chromium-{}-{port}", std::process::id()));
    let mut cmd = tokio::process::Command::new("setsid");
    cmd.arg(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra_flags)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start chromium");
    let stderr = child.stderr.take().unwrap();
    let _browser = Browser(child);
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(i) = line.find("STEP ") {
                eprintln!("  page: {}", &line[i..]);
            } else if let Some(i) = line.find("CHECK ") {
                eprintln!("  page: {}", &line[i..]);
            } else if std::env::var_os("WT_CHROMIUM_LOG").is_some() {
                eprintln!("  chromium: {line}");
            }
            if let Some(i) = line.find("RESULT ") {
                let json = line[i + 7..].trim_end_matches(['"', ')', ' ']);
                let json = json.split("\", source:").next().unwrap_or(json);
                return Some(json.to_owned());
            }
        }
        None
    })
    .await
    .expect("chromium produced no RESULT line within 120 s")
    .expect("chromium exited without a RESULT line");
    let _ = std::fs::remove_dir_all(&profile);
    serde_json::from_str(&found).unwrap_or_else(|e| panic!("bad RESULT json {found:?}: {e}"))
}

async fn run_matrix(extra_flags: &[&str], label: &str) {
    interop::init_log();
    let srv = interop::start(|_| {}).await;
    let result = run_page(srv.port, &srv.hash_hex, extra_flags).await;
    let obj = result.as_object().expect("RESULT is an object");
    let mut failed = Vec::new();
    for (name, r) in obj {
        let ok = r["ok"].as_bool().unwrap_or(false);
        println!(
            "[{label}] {name:28} {} {}ms {}",
            if ok { "ok  " } else { "FAIL" },
            r["ms"],
            r["detail"]
        );
        if !ok {
            failed.push(name.clone());
        }
    }
    assert_eq!(obj.len(), 10, "every check reported: {obj:?}");
    assert!(failed.is_empty(), "[{label}] failed checks: {failed:?}");
    // What the server saw of the page.
    let seen = srv.observed.lock().unwrap().clone();
    assert!(
        seen.closes
            .iter()
            .any(|(p, code, reason, remote)| p == "/close-watch"
                && *code == 4242
                && reason == "bye from chromium"
                && *remote),
        "server did not see the page's close code and reason: {:?}",
        seen.closes
    );
    assert_eq!(seen.reset_seen, Some(Some(7)), "reset code the server read");
    assert_eq!(
        seen.stop_seen,
        Some(Some(10)),
        "stop code the server's stream saw"
    );
    assert!(seen.paths.contains(&"/nope".to_owned()));
    let draft = srv
        .server
        .connections()
        .iter()
        .filter_map(|c| c.protocol().draft)
        .next_back();
    println!("[{label}] draft chosen for Chromium: {draft:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_default() {
    run_matrix(&[], "chromium").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_draft07() {
    run_matrix(
        &["--enable-features=EnableWebTransportDraft07"],
        "chromium-draft07",
    )
    .await;
}
