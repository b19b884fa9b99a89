//! Headless browsers as WebTransport clients, for the browser tests.
//!
//! [`run_page`] starts a browser on `pages/browser.html` in a fresh profile, reads its
//! console until the page prints its `RESULT {json}` line (or a deadline passes), then
//! ends the browser and removes the profile. Both browsers go through the same code:
//!
//! - The browser is the leader of a process group of its own, and is ended as a group:
//!   SIGTERM, a grace period, then SIGKILL, sent with `kill(2)` through libc. Never with
//!   the `kill` utility: procps-ng 4.0.2 reads `kill -KILL -PGID` as `kill(-1, SIGKILL)`,
//!   which ends every process on the machine.
//! - The group is signalled only while its leader is still the browser we started: the
//!   leader is not reaped until the group has been sent SIGKILL, so its id cannot have
//!   been reused by then.
//! - Firefox also starts a `crashhelper` that leaves the group (it runs in a session of its
//!   own, adopted by init) and exits once the browser is gone; it is waited for and, if it
//!   stays, ended by its own process id.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// How long a page may take to print its RESULT line: a run takes a few seconds, this
/// only bounds a hung browser.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// How long a browser gets to exit after SIGTERM before its group gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A browser the tests can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's `chromium` package.
    Chromium,
    /// Debian's `firefox-esr` package.
    Firefox,
}

impl Kind {
    /// The binary, called directly (`/usr/bin/chromium` is a wrapper script that adds flags).
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Chromium => "/usr/lib/chromium/chromium",
            Kind::Firefox => "/usr/lib/firefox-esr/firefox-esr",
        }
    }

    /// The name the page and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chromium => "chromium",
            Kind::Firefox => "firefox",
        }
    }

    /// The Debian package that provides [`binary`](Self::binary).
    fn package(self) -> &'static str {
        match self {
            Kind::Chromium => "chromium",
            Kind::Firefox => "firefox-esr",
        }
    }

    /// The command line: fixed flags, the profile, the caller's flags, the page.
    fn command(self, profile: &Path, extra_args: &[&str], url: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.binary());
        match self {
            Kind::Chromium => {
                // --no-sandbox: it refuses to start as root without it. The --disable-*
                // flags stop it from calling out to the internet (there is none here).
                // Console messages go to stderr with --enable-logging=stderr.
                cmd.args([
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
                .arg(format!("--user-data-dir={}", profile.display()));
            }
            Kind::Firefox => {
                // --no-remote: never hand the page to another Firefox running on the
                // machine. The prefs that silence it are in the profile's user.js.
                cmd.args(["--headless", "--no-remote", "--profile"])
                    .arg(profile)
                    // Lets `services.settings.server` in user.js take effect: release
                    // builds ignore that pref without it and poll Mozilla's servers.
                    .env("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1")
                    // No crash reports written or sent.
                    .env("MOZ_CRASHREPORTER_DISABLE", "1");
            }
        }
        cmd.args(extra_args).arg(url);
        cmd
    }

    /// Prepares a fresh profile directory.
    fn init_profile(self, dir: &Path) {
        if self == Kind::Firefox {
            std::fs::write(dir.join("user.js"), FIREFOX_PREFS).expect("write user.js");
        }
    }

    /// The text of a console message, from one line of the browser's output.
    ///
    /// Chromium (stderr): `[...:INFO:CONSOLE:12] "TEXT", source: file:///... (12)`, the text
    /// as is. Firefox (stdout, with `devtools.console.stdout.content`): `console.log: "TEXT"`,
    /// the text as a quoted string literal with `\"` and `\\` escapes (and `\xNN` /
    /// `\uNNNN` for anything outside printable ASCII, which the page never prints).
    pub fn console_message(self, line: &str) -> Option<String> {
        match self {
            Kind::Chromium => {
                let start = line.find(":CONSOLE")?;
                let rest = &line[start..];
                let open = rest.find("] \"")? + 3;
                let close = rest.rfind("\", source: ")?;
                (close >= open).then(|| rest[open..close].to_owned())
            }
            Kind::Firefox => {
                let literal = line.strip_prefix("console.log: ")?;
                serde_json::from_str::<String>(literal).ok()
            }
        }
    }
}

/// The profile prefs for Firefox (its `user.js`), grouped by purpose. Without them, an
/// idle run of 20 s in a fresh profile resolved the host names named in the comments
/// (measured with `MOZ_LOG=nsHostResolver:3`); with all of them, it resolved none and
/// sent nothing off the machine. See docs/interop.md.
const FIREFOX_PREFS: &str = r#"// Written by interop/src/browser.rs for one test run.
// Console messages of pages on stdout: how the test reads the page's RESULT line.
user_pref("devtools.console.stdout.content", true);
// A fresh profile starts straight on the page: no first-run, welcome or default-browser
// pages, no session restore.
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.page", 0);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("startup.homepage_welcome_url", "");
user_pref("startup.homepage_welcome_url.additional", "");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("browser.sessionstore.resume_from_crash", false);
user_pref("toolkit.startup.max_resumed_crashes", -1);
// Telemetry and usage pings (incoming.telemetry.mozilla.org); -1 makes Glean drop its
// uploads instead of sending them.
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.policy.firstRunURL", "");
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("datareporting.usage.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.server", "");
user_pref("telemetry.fog.test.localhost_port", -1);
// Remote settings (firefox.settings.services.mozilla.com and its CDN); only honoured
// with MOZ_REMOTE_SETTINGS_DEVTOOLS=1 in the environment.
user_pref("services.settings.server", "data:,#remote-settings-dummy/v1");
// Captive-portal and connectivity probes (detectportal.firefox.com, ipv4only.arpa), DNS
// over HTTPS (cloudflare-dns.com), push (push.services.mozilla.com).
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.trr.mode", 5);
user_pref("dom.push.enabled", false);
user_pref("dom.push.connection.enabled", false);
// Region and geolocation lookups (location.services.mozilla.com).
user_pref("browser.region.network.url", "");
user_pref("browser.region.update.enabled", false);
user_pref("geo.provider.network.url", "");
// New-tab page content: top sites and sponsored tiles (ads.mozilla.org, and
// preconnects to the default top sites).
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.newtabpage.activity-stream.feeds.topsites", false);
user_pref("browser.newtabpage.activity-stream.feeds.system.topstories", false);
user_pref("browser.newtabpage.activity-stream.feeds.section.topstories", false);
user_pref("browser.newtabpage.activity-stream.showSponsored", false);
user_pref("browser.newtabpage.activity-stream.showSponsoredTopSites", false);
user_pref("browser.newtabpage.activity-stream.default.sites", "");
user_pref("browser.topsites.contile.enabled", false);
// Speculative connections and prefetching.
user_pref("network.predictor.enabled", false);
user_pref("network.prefetch-next", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("browser.urlbar.speculativeConnect.enabled", false);
// Safe Browsing lists (safebrowsing.googleapis.com).
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.blockedURIs.enabled", false);
user_pref("browser.safebrowsing.update.enabled", false);
// Studies and experiments (normandy.cdn.mozilla.net).
user_pref("app.normandy.enabled", false);
user_pref("app.normandy.api_url", "");
user_pref("app.shield.optoutstudies.enabled", false);
// Add-on, plugin (GMP: update.googleapis.com) and app updates, translation models.
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.systemAddon.update.enabled", false);
user_pref("extensions.blocklist.enabled", false);
user_pref("media.gmp-manager.url", "");
user_pref("media.gmp-manager.updateEnabled", false);
user_pref("media.gmp-widevinecdm.enabled", false);
user_pref("media.gmp-widevinecdm.autoupdate", false);
user_pref("media.gmp-gmpopenh264.autoupdate", false);
user_pref("media.eme.enabled", false);
user_pref("browser.translations.enable", false);
user_pref("app.update.auto", false);
"#;

/// What a page run gave.
#[derive(Debug)]
pub struct PageRun {
    /// The page's RESULT object: check name → `{ok, ms, detail}`.
    pub result: serde_json::Map<String, serde_json::Value>,
    /// From starting the browser to reading the RESULT line.
    pub elapsed: Duration,
}

/// Opens `pages/browser.html?browser=NAME&QUERY` in a fresh headless `kind` and returns
/// the page's RESULT object, as [`run_url`] does.
pub async fn run_page(kind: Kind, query: &str, extra_args: &[&str]) -> PageRun {
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pages/browser.html");
    let url = format!("file://{}?browser={}&{query}", page.display(), kind.name());
    run_url(kind, &url, extra_args).await
}

/// Opens `url` in a fresh headless `kind`, prints the page's progress lines, and returns
/// its RESULT object. Panics (failing the test) when the browser is missing, exits
/// without a RESULT line, prints a malformed one, or takes longer than
/// [`PAGE_DEADLINE`]; the panic message carries the browser's last lines.
///
/// Set `WT_BROWSER_LOG=1` to see every line the browser prints.
pub async fn run_url(kind: Kind, url: &str, extra_args: &[&str]) -> PageRun {
    let binary = kind.binary();
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install Debian's {} package (interop/run does)",
        kind.package()
    );
    let profile = Profile::new(kind);
    let mut cmd = kind.command(&profile.0, extra_args, url);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Leader of a new process group whose id is its pid.
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let (tx, mut lines) = mpsc::unbounded_channel();
    spawn_reader(child.stdout.take(), tx.clone());
    spawn_reader(child.stderr.take(), tx);
    let group = Group::new(child, kind);
    let label = kind.name();
    let verbose = std::env::var_os("WT_BROWSER_LOG").is_some();
    let mut tail: VecDeque<String> = VecDeque::new();
    let outcome = tokio::time::timeout(PAGE_DEADLINE, async {
        while let Some(line) = lines.recv().await {
            if verbose {
                eprintln!("  {label}: {line}");
            }
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            let Some(message) = kind.console_message(&line) else {
                assert!(
                    !line.contains("RESULT "),
                    "{label}: a RESULT line that is not a console message: {line:?}"
                );
                continue;
            };
            if message.starts_with("STEP ") || message.starts_with("CHECK ") {
                eprintln!("  {label} page: {message}");
            }
            if let Some(json) = message.strip_prefix("RESULT ") {
                return Some(json.to_owned());
            }
        }
        None
    })
    .await;
    let elapsed = started.elapsed();
    drop(group);
    drop(profile);
    let tail: Vec<String> = tail.into();
    let json = match outcome {
        Ok(Some(json)) => json,
        Ok(None) => panic!(
            "{label} exited without a RESULT line; its last lines:\n{}",
            tail.join("\n")
        ),
        Err(_) => panic!(
            "{label} printed no RESULT line within {PAGE_DEADLINE:?}; its last lines:\n{}",
            tail.join("\n")
        ),
    };
    let value: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{label}: bad RESULT json {json:?}: {e}"));
    let serde_json::Value::Object(result) = value else {
        panic!("{label}: RESULT is not an object: {json}");
    };
    PageRun { result, elapsed }
}

fn spawn_reader(
    stream: Option<impl AsyncRead + Unpin + Send + 'static>,
    tx: mpsc::UnboundedSender<String>,
) {
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// A fresh profile directory, removed on drop.
struct Profile(PathBuf);

impl Profile {
    fn new(kind: Kind) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wt-{}-{}-{}",
            kind.name(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory left by an earlier process with the same pid is stale.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the browser profile directory");
        kind.init_profile(&dir);
        Profile(dir)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The browser's process group, ended on drop.
struct Group {
    child: tokio::process::Child,
    kind: Kind,
}

impl Group {
    fn new(child: tokio::process::Child, kind: Kind) -> Self {
        Group { child, kind }
    }

    /// The group id (the leader's pid) while the leader is unreaped and is our browser.
    fn ours(&self) -> Option<i32> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may contain spaces:
        // state, ppid, pgrp.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let _state = fields.next()?;
        let _ppid = fields.next()?;
        let pgrp: u32 = fields.next()?.parse().ok()?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // A zombie has no exe link left; its cmdline is empty too, so accept it only
        // by the group id, which is still ours because the zombie holds the pid.
        let is_browser = match exe {
            Some(exe) => exe == Path::new(self.kind.binary()),
            None => cmdline.is_empty(),
        };
        (pgrp == pid && is_browser)
            .then(|| i32::try_from(pid).ok())
            .flatten()
            .filter(|g| *g > 1)
    }

    /// Whether the leader has exited (it stays a zombie until reaped).
    fn leader_exited(&self) -> bool {
        let Some(pid) = self.child.id() else {
            return true;
        };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state == "Z" || state == "X"),
            Err(_) => true,
        }
    }

    /// Firefox's crash helper for this browser: it runs outside the group and names the
    /// browser's pid as its first argument.
    fn crash_helpers(&self, browser_pid: u32) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let helper = Path::new(self.kind.binary()).with_file_name("crashhelper");
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let mut args = cmdline.split(|b| *b == 0);
            let program = args.next().unwrap_or_default();
            let first = args.next().unwrap_or_default();
            if program == helper.as_os_str().as_encoded_bytes()
                && first == browser_pid.to_string().as_bytes()
            {
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let browser_pid = self.child.id();
        if let Some(group) = self.ours() {
            // SAFETY: kill(2) has no memory effects; a negative pid names a process group.
            unsafe { libc::kill(-group, libc::SIGTERM) };
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline && !self.leader_exited() {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The leader is not reaped yet, so the group id is still this browser's: end
            // whatever of the group is left (content processes that outlived the leader).
            // SAFETY: as above.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
        if let (Kind::Firefox, Some(pid)) = (self.kind, browser_pid) {
            // The crash helper exits by itself once the browser is gone; give it a moment.
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut helpers = self.crash_helpers(pid);
            while !helpers.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                helpers = self.crash_helpers(pid);
            }
            for helper in helpers {
                eprintln!("  firefox: crashhelper {helper} outlived the browser; ending it");
                // SAFETY: as above; a positive pid names one process, checked just now to
                // be the crash helper of the browser we started.
                unsafe { libc::kill(helper, libc::SIGKILL) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn chromium_console_lines() {
        let line = r#"[31339:31339:1204/155029.511445:INFO:CONSOLE:2] "RESULT {"q":"a\"b"}", source: file:///tmp/p.html?x=1 (2)"#;
        assert_eq!(
            Kind::Chromium.console_message(line).as_deref(),
            Some(r#"RESULT {"q":"a\"b"}"#)
        );
        assert_eq!(Kind::Chromium.console_message("[GFX1-]: no dt"), None);
    }

    #[test]
    fn firefox_console_lines() {
        let line = r#"console.log: "RESULT {\"q\":\"a\\\"b\",\"n\":\"\\u00e9\"}""#;
        assert_eq!(
            Kind::Firefox.console_message(line).as_deref(),
            Some(r#"RESULT {"q":"a\"b","n":"\u00e9"}"#)
        );
        assert_eq!(
            Kind::Firefox.console_message("*** You are running in headless mode."),
            None
        );
    }
}
