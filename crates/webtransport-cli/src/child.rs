//! A `wt` child process that serves while this one measures it: the server of `wt
//! bench`'s sessions scenario (`wt bench --server`, so that client memory does not count)
//! and of `wt soak` (`wt serve --json`, whose memory it samples). One launcher for both.
//!
//! The child announces itself with a JSON line on stdout (its addresses, its certificate
//! hash). The rest of its stdout is read by a thread, which counts the JSON lines by their
//! `event` field, so that a chatty child (`wt serve --json` prints a line per session) never
//! blocks on a full pipe. It is ended by its id through kill(2): SIGINT, as Ctrl-C would,
//! then, if it has not exited in time, SIGKILL; and it is always waited for.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::rss;

/// How long a child gets to exit after SIGINT when it is dropped.
const DROP_GRACE: Duration = Duration::from_secs(2);

/// A running `wt` child process.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    /// Kept open: closing it ends a child that waits on it (`--exit-with-stdin`).
    stdin: Option<ChildStdin>,
    announcement: serde_json::Value,
    events: Arc<Mutex<HashMap<String, u64>>>,
    reader: Option<JoinHandle<()>>,
    stopped: bool,
}

impl ChildProcess {
    /// Starts this executable with `args` and `envs`, and waits (blocking) for its first
    /// JSON line. `what` names it in errors.
    pub fn spawn(what: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the wt executable")?;
        let mut child = Command::new(exe)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the {what}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        let announcement = loop {
            line.clear();
            let n = lines.read_line(&mut line).unwrap_or(0);
            if n == 0 {
                let status = child.wait().ok();
                return Err(anyhow!(
                    "the {what} exited before it announced itself ({})",
                    status.map_or_else(|| "status unknown".into(), |s| s.to_string())
                ));
            }
            if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&line) {
                break v;
            }
        };
        let events: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let counts = events.clone();
        let reader = std::thread::Builder::new()
            .name("wt-child-stdout".into())
            .spawn(move || {
                let mut line = String::new();
                while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if let Some(event) = v["event"].as_str() {
                            *counts
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(event.to_owned())
                                .or_default() += 1;
                        }
                    }
                    line.clear();
                }
            })
            .context("cannot start a thread")?;
        Ok(ChildProcess {
            child,
            stdin,
            announcement,
            events,
            reader: Some(reader),
            stopped: false,
        })
    }

    /// The first JSON line the child printed.
    pub fn announcement(&self) -> &serde_json::Value {
        &self.announcement
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory in bytes (`None` off Linux, or once it is gone).
    pub fn resident_bytes(&self) -> Option<u64> {
        rss::resident_bytes(rss::Process::Id(self.pid()))
    }

    /// How many JSON lines with `"event": event` it has printed after the first.
    pub fn event_count(&self, event: &str) -> u64 {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(event)
            .copied()
            .unwrap_or(0)
    }

    /// Sends SIGINT (what Ctrl-C sends) by its id and waits up to `grace` for it to exit,
    /// then sends SIGKILL. Returns its exit status and whether it had to be killed.
    pub fn interrupt_and_wait(&mut self, grace: Duration) -> Result<(ExitStatus, bool)> {
        self.stopped = true;
        // A child that waits on its stdin ends with it.
        drop(self.stdin.take());
        if self.child.try_wait()?.is_none() {
            signal(self.pid(), rustix::process::Signal::INT)?;
        }
        let deadline = Instant::now() + grace;
        let mut killed = false;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                // The child is not reaped yet, so its id is still ours to signal.
                self.child.kill()?;
                killed = true;
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            // Its stdout is closed now that it exited (no grandchildren hold it).
            let _ = reader.join();
        }
        Ok((status, killed))
    }
}

/// kill(2) on `pid`.
fn signal(pid: u32, sig: rustix::process::Signal) -> Result<()> {
    let raw = i32::try_from(pid).context("a pid fits in i32")?;
    let pid = rustix::process::Pid::from_raw(raw).context("a child's pid is positive")?;
    rustix::process::kill_process(pid, sig).with_context(|| format!("kill({raw}, {sig:?})"))
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.interrupt_and_wait(DROP_GRACE);
        }
    }
}
