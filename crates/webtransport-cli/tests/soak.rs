//! `wt soak` end to end, at CI sizes (seconds): cycles and idle sessions against the
//! `wt serve` child it starts itself, and failures counted by their typed variant against a
//! server started here. The long runs are commands in docs/reliability.md.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WT: &str = env!("CARGO_BIN_EXE_wt");
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Sends `sig` to `child` by its id through kill(2).
fn signal(child: &Child, sig: rustix::process::Signal) {
    let raw = i32::try_from(child.id()).expect("a pid fits in i32");
    let pid = rustix::process::Pid::from_raw(raw).expect("a child's pid is positive");
    // Not reaped yet (no wait has returned), so the pid is still the child's.
    let _ = rustix::process::kill_process(pid, sig);
}

/// What a finished `wt soak` printed.
struct Run {
    status: ExitStatus,
    lines: Vec<Value>,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        let out: Vec<String> = self.lines.iter().map(Value::to_string).collect();
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            out.join("\n"),
            self.stderr
        )
    }

    fn result(&self) -> &Value {
        let last = self
            .lines
            .last()
            .unwrap_or_else(|| panic!("{}", self.describe()));
        assert_eq!(last["event"], "result", "{}", self.describe());
        last
    }

    fn samples(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l["event"] == "sample")
            .collect()
    }
}

/// Runs `wt soak ARGS --json` to its end. Past [`RUN_LIMIT`] it is interrupted with SIGINT
/// (so that it ends its own server), then killed, and the test fails.
fn soak(args: &[&str]) -> Run {
    let mut child = Command::new(WT)
        .arg("soak")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wt soak");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect::<Vec<Value>>()
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let mut interrupted = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline && !interrupted {
            signal(&child, rustix::process::Signal::INT);
            interrupted = true;
        }
        if Instant::now() > deadline + Duration::from_secs(45) {
            signal(&child, rustix::process::Signal::KILL);
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        status,
        lines: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        !interrupted,
        "wt soak {args:?} ran past {RUN_LIMIT:?}\n{}",
        run.describe()
    );
    run
}

#[test]
fn soak_cycles_against_its_own_server() {
    // 200 cycles are all allocator warm-up, so no memory limit here: the long run in
    // docs/reliability.md is the memory check.
    let run = soak(&[
        "--cycles",
        "200",
        "--warmup",
        "50",
        "--report-every",
        "100",
        "--concurrency",
        "4",
        "--max-growth",
        "1000",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    let first = &run.lines[0];
    assert_eq!(first["event"], "run", "{first}");
    assert_eq!(first["concurrency"], 4, "{first}");
    assert!(first["server_pid"].as_u64().is_some(), "{first}");
    let r = run.result();
    assert_eq!(r["ok"], true, "{}", run.describe());
    assert_eq!(r["mode"], "cycles");
    assert_eq!(r["cycles"], 200);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["errors"], serde_json::json!({}));
    // The server saw every session open and close.
    assert_eq!(r["server_sessions_opened"], 200, "{}", run.describe());
    assert_eq!(r["server_sessions_closed"], 200, "{}", run.describe());
    // Samples: start, the warm-up baseline, every 100 cycles, the end; each with the
    // child's memory.
    let labels: Vec<&str> = run
        .samples()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["start", "warm-up", "100", "200", "end"],
        "{}",
        run.describe()
    );
    for s in run.samples() {
        assert!(s["server_rss"].as_u64().unwrap() > 1 << 20, "{s}");
    }
    assert!(r["server_rss_warmup"].as_u64().is_some(), "{r}");
    assert!(r["max_growth_percent"].as_f64().is_some(), "{r}");
}

#[test]
fn soak_cycles_reusing_connections() {
    let run = soak(&[
        "--cycles",
        "60",
        "--sessions-per-connection",
        "5",
        "--concurrency",
        "3",
        "--warmup",
        "0",
        "--max-growth",
        "1000",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    let r = run.result();
    assert_eq!(r["cycles"], 60);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["server_sessions_closed"], 60, "{}", run.describe());
}

#[test]
fn soak_idle_sessions_outlive_the_idle_timeout_with_keep_alive() {
    // Held three times the QUIC idle timeout: only keep-alive keeps them.
    let run = soak(&[
        "--idle",
        "50",
        "--hold",
        "3s",
        "--idle-timeout",
        "1s",
        "--keep-alive",
        "250ms",
        "--sessions-per-connection",
        "8",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    let r = run.result();
    assert_eq!(r["ok"], true, "{}", run.describe());
    assert_eq!(r["mode"], "idle");
    assert_eq!(r["sessions"], 50);
    assert_eq!(r["connections"], 7);
    assert_eq!(r["dropped"], 0);
    assert_eq!(r["not_opened"], 0);
    assert!(r["held_s"].as_f64().unwrap() >= 3.0, "{r}");
    for key in ["server_rss_before", "server_rss_opened", "server_rss_after"] {
        assert!(r[key].as_u64().unwrap() > 1 << 20, "{key}: {r}");
    }
    assert_eq!(r["server_sessions_opened"], 50, "{}", run.describe());
    let labels: Vec<&str> = run
        .samples()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.first(), Some(&"before"));
    assert!(
        labels.contains(&"opened") && labels.contains(&"after"),
        "{labels:?}"
    );
}

#[test]
fn soak_counts_failures_by_variant_and_exits_non_zero() {
    // A server of our own, and a path it does not route: every connect is refused with
    // 404, counted as one kind.
    let mut server = Command::new(WT)
        .args(["serve", "--json", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wt serve");
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let addr = v["addrs"][0].as_str().unwrap().to_owned();
    let hash = v["cert_sha256"].as_str().unwrap().to_owned();

    let url = format!("https://{addr}/nope");
    let run = soak(&["--url", &url, "--cert-hash", &hash, "--cycles", "5"]);

    signal(&server, rustix::process::Signal::INT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            signal(&server, rustix::process::Signal::KILL);
            let _ = server.wait();
            panic!("wt serve did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_eq!(run.status.code(), Some(1), "{}", run.describe());
    let r = run.result();
    assert_eq!(r["ok"], false);
    assert_eq!(r["failed"], 5);
    assert_eq!(
        r["errors"],
        serde_json::json!({"connect/rejected(404)": 5}),
        "{}",
        run.describe()
    );
    // Elsewhere: no memory figures.
    assert_eq!(r["server_rss_warmup"], Value::Null);
    assert_eq!(r["server_sessions_opened"], Value::Null);
}
