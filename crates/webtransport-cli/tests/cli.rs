//! End-to-end tests of the `wt` binary: a real `wt serve` on 127.0.0.1:0 and real
//! `wt connect` runs against it, over UDP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls_pki_types::UnixTime;
use serde_json::Value;

const WT: &str = env!("CARGO_BIN_EXE_wt");
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `wt` process, killed when dropped so a failing test leaves nothing behind.
struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = Command::new(WT)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wt");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(LINE_TIMEOUT)
            .expect("wt printed no further line in time")
    }

    fn next_json(&self) -> Value {
        let line = self.next_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Waits for the next line with `"event": event`, skipping others.
    fn event(&self, event: &str) -> Value {
        loop {
            let v = self.next_json();
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) to the process by its id, through kill(2).
    fn interrupt(&self) {
        let raw = i32::try_from(self.child.id()).expect("a pid fits in i32");
        let pid = rustix::process::Pid::from_raw(raw).expect("a child's pid is positive");
        // The child is not reaped until `wait_exit` or drop, so the pid is still ours.
        rustix::process::kill_process(pid, rustix::process::Signal::INT)
            .unwrap_or_else(|e| panic!("kill({raw}, SIGINT): {e}"));
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for wt") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wt did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON `wt serve` on a free port of 127.0.0.1; returns it with its port and hash.
fn json_server() -> (Running, u16, String) {
    let server = Running::spawn(&["serve", "--json", "--bind", "127.0.0.1:0"]);
    let line = server.next_line();
    assert!(
        line.starts_with(r#"{"event":"listening","addrs":["127.0.0.1:"#),
        "first line: {line}"
    );
    let v: Value = serde_json::from_str(&line).unwrap();
    let addrs = v["addrs"].as_array().unwrap();
    assert_eq!(addrs.len(), 1, "{line}");
    let port = addrs[0]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let hash = v["cert_sha256"].as_str().unwrap().to_owned();
    assert!(is_sha256_hex(&hash), "{hash}");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{line}");
    (server, port, hash)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn wt(args: &[&str]) -> Output {
    let mut child = Command::new(WT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wt");
    // Read both pipes while waiting, with a deadline, so a hang fails instead of blocking.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wt {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn connect_passes_every_check_against_serve() {
    let (server, port, hash) = json_server();
    let url = format!("https://127.0.0.1:{port}/echo");
    let output = wt(&["connect", &url, "--cert-hash", &hash, "--json"]);
    assert!(output.status.success(), "{}", describe(&output));
    let lines = json_lines(&output);
    let checks: Vec<&Value> = lines.iter().filter(|v| v.get("check").is_some()).collect();
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "session",
            "bidi_echo",
            "bidi_echo_1mib",
            "uni_round_trip",
            "datagram_round_trip",
            "close"
        ]
    );
    for check in &checks {
        assert_eq!(check["ok"], true, "{check}");
        assert!(
            check["ms"].is_number() && check["detail"].is_string(),
            "{check}"
        );
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["summary"], "pass", "{summary}");
    assert_eq!(summary["passed"], 6, "{summary}");

    // The server saw the session open and then the client's close, code and reason intact.
    let opened = server.event("session_opened");
    assert_eq!(opened["path"], "/echo", "{opened}");
    assert!(opened["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    let closed = server.event("session_closed");
    assert_eq!(closed["session"], opened["session"], "{closed}");
    assert_eq!(closed["code"], 0, "{closed}");
    assert_eq!(closed["reason"], "wt connect done", "{closed}");
    assert_eq!(closed["remote"], true, "{closed}");
}

#[test]
fn connect_to_unknown_path_fails_with_404() {
    let (server, port, hash) = json_server();
    let url = format!("https://127.0.0.1:{port}/nope");
    let output = wt(&["connect", &url, "--cert-hash", &hash, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["check"], "session");
    assert_eq!(lines[0]["ok"], false);
    assert!(
        lines[0]["detail"].as_str().unwrap().contains("404"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.last().unwrap()["summary"], "fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("wt: error: ") && stderr.contains("404"),
        "{stderr}"
    );
    let rejected = server.event("session_rejected");
    assert_eq!(rejected["status"], 404);
    assert_eq!(rejected["path"], "/nope");

    // The readable form says the same.
    let output = wt(&["connect", &url, "--cert-hash", &hash]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("FAIL") && stdout.contains("404"),
        "{stdout}"
    );
}

#[test]
fn connect_with_the_wrong_hash_fails() {
    let (_server, port, _hash) = json_server();
    let url = format!("https://127.0.0.1:{port}/echo");
    let wrong = "00".repeat(32);
    let output = wt(&["connect", &url, "--cert-hash", &wrong, "--timeout", "5"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("wt: error: check session failed"),
        "{stderr}"
    );
}

#[test]
fn serve_offers_the_clients_first_subprotocol() {
    let (_server, port, hash) = json_server();
    let hash = webtransport::tls::parse_sha256_hex(&hash).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = webtransport::ClientConfig {
            verification: webtransport::CertVerification::ServerCertificateHashes(vec![hash]),
            ..webtransport::ClientConfig::default()
        };
        let client = webtransport::Client::new(config).unwrap();
        let options = webtransport::ConnectOptions {
            protocols: vec!["echo-v2".into(), "echo-v1".into()],
            ..Default::default()
        };
        let session = client
            .connect_with(&format!("https://127.0.0.1:{port}/echo"), options)
            .await
            .unwrap();
        assert_eq!(session.protocol().as_deref(), Some("echo-v2"));
        session.close(0, "done").unwrap();
    });
}

#[test]
fn sigint_stops_serve_cleanly() {
    let (mut server, _port, _hash) = json_server();
    server.interrupt();
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(
        status.success(),
        "wt serve exited with {status:?} after SIGINT"
    );
}

#[test]
fn sigint_closes_open_sessions_with_a_reason() {
    let (mut server, port, hash) = json_server();
    let hash = webtransport::tls::parse_sha256_hex(&hash).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime.block_on(async {
        let config = webtransport::ClientConfig {
            verification: webtransport::CertVerification::ServerCertificateHashes(vec![hash]),
            ..webtransport::ClientConfig::default()
        };
        let client = webtransport::Client::new(config).unwrap();
        client
            .connect(&format!("https://127.0.0.1:{port}/echo"))
            .await
            .unwrap()
    });
    server.event("session_opened");
    server.interrupt();
    let closed = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), session.closed())
            .await
            .expect("the session stayed open after SIGINT")
    });
    let info = closed.expect("closed with a code, not by losing the connection");
    assert_eq!(
        (info.code, info.reason.as_str(), info.remote),
        (0, "wt serve is shutting down", true)
    );
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_without_json_prints_instructions_and_serves_the_demo_page() {
    let server = Running::spawn(&["serve", "--port", "0"]);
    let mut text = String::new();
    while !text.contains("Press Ctrl-C") {
        text += &server.next_line();
        text.push('\n');
    }
    let hash = text
        .split_whitespace()
        .find(|w| is_sha256_hex(w))
        .unwrap_or_else(|| panic!("no hash in:\n{text}"))
        .to_owned();
    assert!(text.contains("https://127.0.0.1:"), "{text}");
    assert!(text.contains("serverCertificateHashes"), "{text}");
    assert!(text.contains(&format!("--cert-hash {hash}")), "{text}");
    let page = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no demo page URL in:\n{text}"));
    let port: u16 = page.trim_end_matches('/').parse().unwrap();

    let response = http_get(port, "/");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains(&hash), "the page lacks the hash");
    assert!(
        response.contains("https://127.0.0.1:"),
        "the page lacks the URL"
    );
    assert!(response.contains("new WebTransport("));
}

/// The whole response to `GET path` on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> String {
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    http.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    response
}

/// The value of the sample `name` (with its labels, as written) in Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// The port of an address printed as `IP:PORT`.
fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap()
}

/// A config file with two listeners (served by one app: one set of statistics), a
/// `hello` route beside the echo, and the HTTP pages on a free port: sessions on both
/// listeners move the counters that `/metrics` shows (on the pages' port and on the
/// metrics-only address), and a refusal is counted by reason and status.
#[test]
fn serve_from_a_config_file_with_two_listeners_and_metrics() {
    let dir = TempDir::new("config");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("serve.toml");
    std::fs::write(
        &file,
        r#"
http_port = 0
metrics = "127.0.0.1:0"
[[listeners]]
bind = ["127.0.0.1:0"]
[[listeners]]
bind = ["127.0.0.1:0"]
[[routes]]
path = "/echo"
handler = "echo"
[[routes]]
path = "/hello"
handler = "hello"
text = "hi from the config"
[app]
max_sessions_per_ip = 50
"#,
    )
    .unwrap();
    let server = Running::spawn(&["serve", "--json", "--config", file.to_str().unwrap()]);
    let listening = server.event("listening");
    let addrs = listening["addrs"].as_array().unwrap();
    assert_eq!(addrs.len(), 2, "{listening}");
    let hash = listening["cert_sha256"].as_str().unwrap().to_owned();
    let http = port_of(&server.event("http")["addr"]);
    let metrics = port_of(&server.event("metrics")["addr"]);
    let before = http_get(http, "/metrics");
    assert!(before.contains("application/openmetrics-text"), "{before}");
    assert_eq!(sample(&before, "webtransport_sessions_accepted_total"), 0.0);

    for addr in addrs {
        let url = format!("https://127.0.0.1:{}/echo", port_of(addr));
        let output = wt(&["connect", &url, "--cert-hash", &hash, "--json"]);
        assert!(output.status.success(), "{}", describe(&output));
        server.event("session_closed");
    }
    let url = format!("https://127.0.0.1:{}/nope", port_of(&addrs[1]));
    let output = wt(&["connect", &url, "--cert-hash", &hash, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    server.event("session_rejected");

    let after = http_get(http, "/metrics");
    assert_eq!(
        sample(&after, "webtransport_sessions_accepted_total"),
        2.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "webtransport_sessions_closed_total"),
        2.0,
        "{after}"
    );
    assert_eq!(sample(&after, "webtransport_sessions"), 0.0, "{after}");
    assert_eq!(
        sample(&after, "webtransport_session_requests_total"),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"webtransport_route_sessions_total{route="/echo"}"#
        ),
        2.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"webtransport_sessions_rejected_total{reason="not_found",status="404"}"#
        ),
        1.0,
        "{after}"
    );
    assert!(sample(&after, "webtransport_bytes_received_total") > (1 << 20) as f64);

    // The metrics-only address serves the same counters and no pages.
    let scraped = http_get(metrics, "/metrics");
    assert_eq!(
        sample(&scraped, "webtransport_sessions_accepted_total"),
        2.0,
        "{scraped}"
    );
    assert!(http_get(metrics, "/").starts_with("HTTP/1.1 404"));
}

/// `--print-config` writes what runs, and that file reads back; a bad file is refused
/// before anything binds, with the field named.
#[test]
fn serve_config_round_trip_and_errors_name_the_field() {
    let dir = TempDir::new("config-rt");
    std::fs::create_dir_all(&dir.0).unwrap();
    let output = wt(&[
        "serve",
        "--print-config",
        "--allow-origin",
        "https://a.example",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("allowed_origins = [\"https://a.example\"]"),
        "{text}"
    );
    assert!(text.contains("handler = \"devious-baton\""), "{text}");
    let file = dir.0.join("printed.toml");
    std::fs::write(&file, &text).unwrap();
    let again = wt(&[
        "serve",
        "--print-config",
        "--config",
        file.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);

    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[[routes]]\npath = \"/hello\"\nhandler = \"hello\"\n").unwrap();
    let output = wt(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`routes[0].text`"), "{stderr}");
    let output = wt(&[
        "serve",
        "--allow-origin",
        "example.com",
        "--bind",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`allowed_origins[0]`"));
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("wt-test-{name}-{}-{nanos}", std::process::id()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn cert_writes_a_pair_and_prints_its_hash() {
    let dir = TempDir::new("cert");
    let out = dir.0.to_str().unwrap();
    let output = wt(&["cert", "--out", out]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout
        .split_whitespace()
        .find(|w| is_sha256_hex(w))
        .unwrap_or_else(|| panic!("no hash in:\n{stdout}"));

    let certs = webtransport::tls::certificates_from_file(&dir.0.join("cert.pem")).unwrap();
    assert_eq!(certs.len(), 1);
    let actual = webtransport::tls::certificate_sha256(&certs[0]);
    assert_eq!(printed, webtransport::tls::sha256_hex(&actual));
    webtransport::tls::private_key_from_file(&dir.0.join("key.pem")).unwrap();
    // Browsers only pin certificates that meet their rules (ECDSA P-256, <= 14 days).
    webtransport::tls::check_certificate_hash_requirements(&certs[0], UnixTime::now()).unwrap();

    // A second run does not silently replace the pair.
    let again = wt(&["cert", "--out", out]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = wt(&["cert", "--out", out, "--force", "--json"]);
    assert!(forced.status.success(), "{}", describe(&forced));
    let v = &json_lines(&forced)[0];
    assert!(is_sha256_hex(v["cert_sha256"].as_str().unwrap()), "{v}");
    assert_ne!(v["cert_sha256"], printed, "a new pair has a new hash");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let output = wt(&["connect", "https://127.0.0.1:1/echo", "--cert-hash", "xyz"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let output = wt(&["connect", "notaurl", "--insecure"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("wt: error: ") && stderr.contains("https://"),
        "{stderr}"
    );
    let output = wt(&["serve", "--bind", "127.0.0.1:0", "--port", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let output = wt(&[
        "cert",
        "--out",
        "/nonexistent/never",
        "--name",
        "not a name",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}
