//! Resident memory of a process: `VmRSS` in Linux's `/proc/PID/status`. One reader for
//! every command that measures memory: `wt bench`'s server answers its own (the sessions
//! scenario), `wt soak` samples its child server's. The peer harness in `bench/` includes
//! this file by path, so it uses only the standard library.

/// Whose memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// This process.
    Current,
    /// Another process, by its id (a child of ours, say).
    Id(u32),
}

/// The resident set size of `process` in bytes; `None` where `/proc` is not there (not
/// Linux) or the process is gone.
pub fn resident_bytes(process: Process) -> Option<u64> {
    let path = match process {
        Process::Current => "/proc/self/status".to_owned(),
        Process::Id(pid) => format!("/proc/{pid}/status"),
    };
    vm_rss(&std::fs::read_to_string(path).ok()?)
}

/// The `VmRSS:` line of a status file, in bytes (the file says kB, meaning KiB).
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vm_rss_line() {
        let status = "Name:\twt\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(12345 * 1024));
        assert_eq!(vm_rss("Name:\twt\n"), None);
        assert_eq!(vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn this_process_and_a_missing_one() {
        if cfg!(target_os = "linux") {
            let own = resident_bytes(Process::Current).expect("/proc/self/status");
            assert!(own > 0);
            assert_eq!(
                resident_bytes(Process::Id(std::process::id())).map(|b| b > 0),
                Some(true)
            );
        }
        // Pids are below 2^22 on Linux.
        assert_eq!(resident_bytes(Process::Id(u32::MAX)), None);
    }
}
