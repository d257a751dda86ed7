//! Processes and files: running commands with a time limit, finding and
//! killing Erlang VMs, waiting for ports.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{ClusterError, Result};

/// Connect timeout of the TCP liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Looks `name` up in `PATH`, then in `/usr/sbin` and `/sbin` (often absent
/// from a non-root `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root (its effective user id is 0).
pub fn is_root() -> bool {
    // The second field of `Uid:` is the effective user id.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

pub(crate) fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) `beam.smp` process.
pub(crate) fn is_live_beam(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ..."; comm may contain spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "beam.smp" && !matches!(state, Some('Z' | 'X' | 'x') | None)
}

/// SIGKILLs `target`: a pid, or a process group when negative. Uses the
/// shell's `kill` builtin (`/usr/bin/kill` is not always installed).
pub(crate) fn kill_pid(target: impl fmt::Display) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -9 {target}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether something accepts TCP connections on `addr`.
pub(crate) fn port_open(addr: impl Into<SocketAddr>) -> bool {
    let addr = addr.into();
    TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
}

/// Polls `done` every 200 ms until it returns `true` (→ `true`) or
/// `timeout` passes (→ `false`).
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `cmd` with stdout and stderr captured (in one stream, interleaved)
/// and a time limit. Returns the output on success; on failure or timeout
/// an error holding the command line and its output.
pub(crate) fn run(mut cmd: Command, timeout: Duration) -> Result<String> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (mut reader, writer) = io::pipe().map_err(|e| ClusterError::io("creating a pipe", e))?;
    let writer_err = writer
        .try_clone()
        .map_err(|e| ClusterError::io("creating a pipe", e))?;
    cmd.stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ClusterError::io(format!("running `{line}`"), e))?;
    // Drop our copies of the pipe's write end so that reading ends with the
    // command.
    drop(cmd);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                // Kill the whole process group: the wrapper and what it ran.
                kill_pid(format!("-{}", child.id()));
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(output),
        Some(status) => Err(ClusterError::new(format!(
            "`{line}` failed ({status}):\n{}",
            output.trim_end()
        ))),
        None => Err(ClusterError::new(format!(
            "`{line}` timed out after {} s:\n{}",
            timeout.as_secs(),
            output.trim_end()
        ))),
    }
}
