//! Which RabbitMQ the local cluster runs ([`RabbitMq`]), how it is
//! installed, and how its programs are started.
//!
//! RabbitMQ 3.10 is Debian 12's own `rabbitmq-server` package and runs on
//! the host. RabbitMQ 4.0 (Debian 13, "trixie") and 4.3 (Debian unstable,
//! "sid") need a newer libc than Debian 12 has, so each is installed into a
//! minimal Debian root file system made with `debootstrap`
//! (`/var/tmp/rabbitkit-rootfs/<suite>`) and run from it with `chroot`. Such
//! nodes share the host's loopback and its Erlang port mapper (epmd); the
//! cluster's directory is bind-mounted into the chroot at the same path, so
//! every file has one name inside and outside.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{ClusterError, Result};
use crate::process::{find_program, is_root, run, set_mode};

/// Environment variable that selects the version (`3.10`, `4.0`, `4.3`).
pub const VERSION_ENV: &str = "RABBITKIT_RABBITMQ";
/// Environment variable overriding [`DEFAULT_ROOTFS_DIR`].
const ROOTFS_ENV: &str = "RABBITKIT_ROOTFS_DIR";
/// Where the Debian root file systems of the 4.x versions live.
const DEFAULT_ROOTFS_DIR: &str = "/var/tmp/rabbitkit-rootfs";
/// The mirror used when the host's apt sources name none.
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";
/// Time limit of one install step (debootstrap, apt-get).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);
/// Time limit of small commands (mount, chown).
const SHORT_TIMEOUT: Duration = Duration::from_secs(60);

/// A RabbitMQ release line the local cluster can run.
///
/// ```
/// use rabbitkit_test::RabbitMq;
/// assert_eq!("3.10".parse::<RabbitMq>().unwrap(), RabbitMq::V3_10);
/// assert_eq!(RabbitMq::default(), RabbitMq::V4_3);
/// assert_eq!(RabbitMq::V4_0.to_string(), "4.0");
/// assert!("3.8".parse::<RabbitMq>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RabbitMq {
    /// 3.10 (Debian 12's `rabbitmq-server`, Erlang 25, Mnesia): out of
    /// support, kept to test what users of old brokers meet.
    V3_10,
    /// 4.0 (Debian 13's package, Erlang 27).
    V4_0,
    /// 4.3 (Debian unstable's package, Erlang 29, Khepri): the current
    /// release line, and the default.
    #[default]
    V4_3,
}

impl RabbitMq {
    /// Every version, oldest first.
    pub const ALL: [RabbitMq; 3] = [RabbitMq::V3_10, RabbitMq::V4_0, RabbitMq::V4_3];

    /// The version named by `$RABBITKIT_RABBITMQ`, if set (and not blank).
    ///
    /// # Errors
    ///
    /// When the variable names no known version.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(VERSION_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// `"3.10"`, `"4.0"` or `"4.3"`.
    pub fn label(self) -> &'static str {
        match self {
            RabbitMq::V3_10 => "3.10",
            RabbitMq::V4_0 => "4.0",
            RabbitMq::V4_3 => "4.3",
        }
    }

    /// Whether this is RabbitMQ 4 or later.
    pub fn is_4(self) -> bool {
        self != RabbitMq::V3_10
    }

    /// The Debian suite of the chroot it runs in; `None` for the host's own
    /// package.
    fn suite(self) -> Option<&'static str> {
        match self {
            RabbitMq::V3_10 => None,
            RabbitMq::V4_0 => Some("trixie"),
            RabbitMq::V4_3 => Some("sid"),
        }
    }

    /// The root of its chroot (`/var/tmp/rabbitkit-rootfs/<suite>`, or
    /// under `$RABBITKIT_ROOTFS_DIR`); `None` when it runs on the host.
    pub fn root(self) -> Option<PathBuf> {
        let base = match std::env::var_os(ROOTFS_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(DEFAULT_ROOTFS_DIR),
        };
        self.suite().map(|suite| base.join(suite))
    }

    /// Where a program of the broker's package lives, as seen from the host.
    fn host_path(self, program: &str) -> Option<PathBuf> {
        match self.root() {
            None => find_program(program),
            Some(root) => {
                let path = root.join("usr/sbin").join(program);
                path.is_file().then_some(path)
            }
        }
    }

    /// Whether `rabbitmq-server` and `rabbitmqctl` of this version are installed.
    pub fn is_installed(self) -> bool {
        self.host_path("rabbitmq-server").is_some() && self.host_path("rabbitmqctl").is_some()
    }

    /// The installed package's version (`dpkg-query`), e.g. `4.3.6-1`.
    pub fn package_version(self) -> Option<String> {
        let mut cmd = match self.root() {
            None => Command::new("dpkg-query"),
            Some(root) => {
                let mut cmd = Command::new("chroot");
                cmd.arg(root).arg("dpkg-query");
                cmd
            }
        };
        cmd.args(["-W", "-f", "${Version}", "rabbitmq-server"]);
        run(cmd, SHORT_TIMEOUT)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A command running `program` (`rabbitmq-server`, `rabbitmqctl`) of
    /// this version: directly, or through `chroot` with `HOME` set to the
    /// `rabbitmq` user's home so that the CLI finds the chroot's Erlang cookie.
    pub(crate) fn command(self, program: &str) -> Result<Command> {
        let path = self
            .host_path(program)
            .ok_or_else(|| self.not_installed())?;
        Ok(match self.root() {
            None => Command::new(path),
            Some(root) => {
                let mut cmd = Command::new("chroot");
                cmd.arg(root)
                    .arg(Path::new("/usr/sbin").join(program))
                    .env("HOME", "/var/lib/rabbitmq");
                cmd
            }
        })
    }

    pub(crate) fn not_installed(self) -> ClusterError {
        ClusterError::new(format!(
            "RabbitMQ {self} is not installed; `cargo xtask broker up --rabbitmq {self}` installs it (as root)"
        ))
    }

    /// Installs this version when it is missing: Debian's package on the
    /// host for 3.10; for 4.x a `debootstrap` of the suite (once) and the
    /// suite's `rabbitmq-server` inside it. No service is started. Needs
    /// root and about a minute.
    pub fn install(self) -> Result<()> {
        if self.is_installed() {
            return Ok(());
        }
        if !is_root() {
            return Err(ClusterError::new(format!(
                "RabbitMQ {self} is not installed and installing it needs root"
            )));
        }
        let result = match self.root() {
            None => install_on_host(),
            Some(root) => self.install_in_chroot(&root),
        };
        result.map_err(|e| ClusterError::new(format!("installing RabbitMQ {self} failed: {e}")))?;
        if self.is_installed() {
            Ok(())
        } else {
            Err(ClusterError::new(format!(
                "installing RabbitMQ {self} finished but rabbitmq-server/rabbitmqctl are not found"
            )))
        }
    }

    fn install_in_chroot(self, root: &Path) -> Result<()> {
        let suite = self.suite().unwrap_or("sid");
        let apt_ready = root.join("usr/bin/apt-get").is_file();
        if !apt_ready {
            if find_program("debootstrap").is_none() {
                eprintln!("rabbitkit-test: installing debootstrap");
                apt(Command::new("apt-get"), &["update"])?;
                apt(Command::new("apt-get"), &["install", "-y", "debootstrap"])?;
            }
            // Build in a side directory, then rename: an interrupted run
            // never leaves a half-made root behind.
            let partial = root.with_extension("partial");
            let _ = fs::remove_dir_all(&partial);
            if let Some(parent) = root.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| ClusterError::io(format!("creating {}", parent.display()), e))?;
            }
            let mirror = host_mirror();
            eprintln!(
                "rabbitkit-test: debootstrap {suite} into {} from {mirror}",
                root.display()
            );
            let mut cmd = Command::new("debootstrap");
            cmd.args(["--variant=minbase", suite])
                .arg(&partial)
                .arg(&mirror);
            run(cmd, INSTALL_TIMEOUT)?;
            let _ = fs::remove_dir_all(root);
            fs::rename(&partial, root)
                .map_err(|e| ClusterError::io(format!("renaming {}", partial.display()), e))?;
        }
        self.prepare_root()?;
        // The package must not start a node of its own.
        let policy = root.join("usr/sbin/policy-rc.d");
        fs::write(
            &policy,
            "#!/bin/sh\n# rabbitkit-test: no service starts\nexit 101\n",
        )
        .and_then(|()| set_mode(&policy, 0o755))
        .map_err(|e| ClusterError::io("writing policy-rc.d", e))?;
        let in_root = || {
            let mut cmd = Command::new("chroot");
            cmd.arg(root).arg("apt-get");
            cmd
        };
        eprintln!("rabbitkit-test: installing rabbitmq-server {self} in the {suite} chroot");
        // The mirror's unstable index can be a dated snapshot whose Release
        // file has expired: accept it.
        apt(
            in_root(),
            &["-o", "Acquire::Check-Valid-Until=false", "update"],
        )?;
        apt(
            in_root(),
            &[
                "install",
                "-y",
                "--no-install-recommends",
                "rabbitmq-server",
            ],
        )?;
        Ok(())
    }

    /// Makes the chroot usable: `/proc` mounted, the host's `/etc/hosts`
    /// (so `localhost` resolves as on the host). A no-op on the host.
    fn prepare_root(self) -> Result<()> {
        let Some(root) = self.root() else {
            return Ok(());
        };
        let _ = fs::copy("/etc/hosts", root.join("etc/hosts"));
        let proc_dir = root.join("proc");
        if !proc_dir.join("self").exists() {
            let mut cmd = Command::new("mount");
            cmd.args(["-t", "proc", "proc"]).arg(&proc_dir);
            run(cmd, SHORT_TIMEOUT)?;
        }
        Ok(())
    }

    /// Makes `dir` (a host directory) visible at the same path inside the
    /// chroot, by a bind mount; with `/proc` mounted. A no-op on the host.
    pub(crate) fn share_dir(self, dir: &Path) -> Result<()> {
        let Some(root) = self.root() else {
            return Ok(());
        };
        self.prepare_root()?;
        let inside = root.join(dir.strip_prefix("/").unwrap_or(dir));
        if is_mount_point(&inside) {
            if same_dir(dir, &inside) {
                return Ok(());
            }
            // The host directory was deleted and made again (a reset
            // cluster): the mount still shows the deleted one. Mount the
            // new one instead.
            let mut cmd = Command::new("umount");
            cmd.arg(&inside);
            run(cmd, SHORT_TIMEOUT)?;
        }
        fs::create_dir_all(&inside)
            .map_err(|e| ClusterError::io(format!("creating {}", inside.display()), e))?;
        let mut cmd = Command::new("mount");
        cmd.arg("--bind").arg(dir).arg(&inside);
        run(cmd, SHORT_TIMEOUT).map(drop)
    }

    /// `chown -R rabbitmq:rabbitmq paths`, with the `rabbitmq` user of this
    /// version's system (the chroot's user id may differ from the host's).
    ///
    /// The other nodes may be running: a file one of them deletes while
    /// `chown` walks the tree (a rotated log, a compacted table) fails the
    /// walk with "No such file or directory". That is harmless, and the
    /// walk is made again, up to three times.
    pub(crate) fn chown_to_rabbitmq(self, paths: &[PathBuf]) -> Result<()> {
        if !is_root() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            let mut cmd = match self.root() {
                None => Command::new("chown"),
                Some(root) => {
                    let mut cmd = Command::new("chroot");
                    cmd.arg(root).arg("chown");
                    cmd
                }
            };
            cmd.arg("-R").arg("rabbitmq:rabbitmq").args(paths);
            match run(cmd, SHORT_TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 && e.to_string().contains("No such file or directory") => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl fmt::Display for RabbitMq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for RabbitMq {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "3.10" => Ok(RabbitMq::V3_10),
            "4.0" => Ok(RabbitMq::V4_0),
            "4.3" | "4" => Ok(RabbitMq::V4_3),
            other => Err(ClusterError::new(format!(
                "unknown RabbitMQ version `{other}`: expected 3.10, 4.0 or 4.3"
            ))),
        }
    }
}

/// `apt-get ARGS` (non-interactive) through `cmd`.
fn apt(mut cmd: Command, args: &[&str]) -> Result<()> {
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    run(cmd, INSTALL_TIMEOUT).map(drop)
}

/// Debian 12's `rabbitmq-server` on the host, without letting the package
/// start its default node.
fn install_on_host() -> Result<()> {
    eprintln!("rabbitkit-test: installing RabbitMQ 3.10: apt-get install -y rabbitmq-server");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists()
        && fs::write(
            policy,
            "#!/bin/sh\n# rabbitkit-test: no service starts\nexit 101\n",
        )
        .and_then(|()| set_mode(policy, 0o755))
        .is_ok();
    let result = apt(Command::new("apt-get"), &["update"]).and_then(|()| {
        apt(
            Command::new("apt-get"),
            &["install", "-y", "rabbitmq-server"],
        )
    });
    if own_policy {
        let _ = fs::remove_file(policy);
    }
    result
}

/// The Debian mirror the host's apt uses (first `URIs:` of a deb822
/// source, or first `deb` line), else the public redirector.
fn host_mirror() -> String {
    let deb822 = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .filter_map(|p| fs::read_to_string(p).ok());
    let classic = fs::read_to_string("/etc/apt/sources.list").ok();
    deb822
        .chain(classic)
        .find_map(|text| mirror_in(&text))
        .unwrap_or_else(|| FALLBACK_MIRROR.to_owned())
}

/// The first Debian (not security) mirror URL in an apt source file.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let url = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            }?;
            (!url.contains("security")).then(|| url.trim_end_matches('/').to_owned())
        })
}

/// Whether `path` is a mount point (listed in `/proc/self/mountinfo`).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount| mount == wanted)
}

/// Whether `a` and `b` are the same directory (device and inode): a bind
/// mount of a directory that still exists.
fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_print() {
        for v in RabbitMq::ALL {
            assert_eq!(v.label().parse::<RabbitMq>().unwrap(), v);
        }
        assert!("5.0".parse::<RabbitMq>().is_err());
        assert!(RabbitMq::V4_0.is_4() && !RabbitMq::V3_10.is_4());
        assert!(RabbitMq::V3_10.root().is_none());
        assert!(RabbitMq::V4_3.root().unwrap().ends_with("sid"));
    }

    #[test]
    fn mirror_from_apt_sources() {
        let deb822 = "Types: deb\n# http://snapshot.example/x\nURIs: http://deb.example.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.example.org/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://deb.example.org/debian")
        );
        let classic = "# comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(classic).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in("deb http://x.example/debian-security bookworm-security main\n"),
            None
        );
    }
}
