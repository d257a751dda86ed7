//! What `cargo xtask test` needs besides Rust and RabbitMQ, installed on
//! first use as `broker up` installs RabbitMQ: Python with pika and
//! rstream in a virtual environment of the workspace's own (`target/python-venv`), nginx
//! with its stream module, iptables and iproute2, openssl.
//!
//! Each is installed only when missing, and only as root (apt-get) or into
//! the workspace (pip). When it cannot be (not root, apt-get or pip failed,
//! `RABBITKIT_NO_INSTALL` set), the tests that need it are filtered out of
//! the nextest runs with the filterset terms built here, so nextest reports
//! them as skipped, and the reason is printed.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rabbitkit_test::{LoadBalancer, find_program, is_root};

/// The pika versions the interop and tracing tests run with.
pub const PIKA: &str = "pika>=1.3,<2";

/// The rstream versions the stream tutorials' interop test runs with (the
/// client of RabbitMQ's official Python stream tutorials).
pub const RSTREAM: &str = "rstream>=1.1,<2";

/// Set (to anything but empty or `0`) to install nothing: what is missing
/// is reported and the tests that need it are skipped.
pub const NO_INSTALL_ENV: &str = "RABBITKIT_NO_INSTALL";

/// The virtual environment, under the workspace's target directory.
pub const VENV_DIR: &str = "python-venv";

/// The tests that run Python programs (pika, or rstream for the stream
/// tutorials): (test binary, test name).
pub const PIKA_TESTS: &[(&str, &str)] = &[
    (
        "interop",
        "tutorial_programs_interoperate_with_the_official_python_tutorials",
    ),
    (
        "stream_tutorials",
        "stream_protocol_tutorials_interoperate_with_the_official_python_stream_tutorials",
    ),
    (
        "tracing",
        "a_pika_consumer_receives_the_traceparent_of_a_rabbitkit_publish",
    ),
    (
        "tracing",
        "a_pika_producer_that_sets_traceparent_is_continued_by_a_rabbitkit_consumer",
    ),
];

/// The failover tests through nginx (a substring of their names).
pub const NGINX_TESTS: &str = "test(/through_nginx/)";

/// Tests of binaries that otherwise run against any broker, but which
/// inspect the local cluster with rabbitmqctl: skipped with `AMQP_ADDR`.
pub const LOCAL_CTL_TESTS: &[(&str, &str)] = &[
    (
        "rpc",
        "a_dropped_direct_reply_to_client_closes_its_reply_channel",
    ),
    (
        "temporary_queues",
        "a_failed_subscribe_leaves_no_temporary_queue_behind",
    ),
];

/// Tests that need the `rabbitmq_consistent_hash_exchange` plugin (the
/// local cluster runs it): a filterset term.
pub const CONSISTENT_HASH_TESTS: &str = "binary(partitioned) or \
     (binary(examples) and test(=every_tutorial_program_works_as_the_book_says))";

/// The port of RabbitMQ's management HTTP API.
pub const MANAGEMENT_PORT: u16 = 15672;

/// Whether the broker of the `amqp://` URL `url` has the
/// `x-consistent-hash` exchange type, as its management API says
/// (`GET /api/overview` on port 15672 of the same host, with the URL's
/// credentials). An error says why it cannot tell (no management API,
/// `amqps://`, refused credentials).
pub fn has_consistent_hash(url: &str) -> Result<bool, String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let broker = Broker::parse(url)?;
    let addr = (broker.host.as_str(), MANAGEMENT_PORT)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", broker.host))?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", broker.host))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("no management API on {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    stream
        .write_all(broker.overview_request().as_bytes())
        .map_err(|e| format!("management API on {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("management API on {addr}: {e}"))?;
    exchange_types(&String::from_utf8_lossy(&response))
        .map(|types| types.iter().any(|t| t == "x-consistent-hash"))
        .map_err(|e| format!("management API on {addr}: {e}"))
}

/// Whether the broker at `url` has the `x-consistent-hash` exchange type,
/// asked of the broker itself: a throwaway auto-delete exchange of that
/// type is declared, then deleted. For a broker without a management API
/// (a stock RabbitMQ). An error says why it cannot tell.
pub fn amqp_has_consistent_hash(url: &str) -> Result<bool, String> {
    amqp_has_exchange_type(url, "x-consistent-hash")
}

/// Whether the broker at `url` has the exchange type `kind` (see
/// [`amqp_has_consistent_hash`]).
fn amqp_has_exchange_type(url: &str, kind: &str) -> Result<bool, String> {
    use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
    use std::time::Duration;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let bound = Duration::from_secs(10);
        let connect = lapin::Connection::connect(url, lapin::ConnectionProperties::default());
        let connection = tokio::time::timeout(bound, connect)
            .await
            .map_err(|_| "no answer in 10 s".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        let name = format!("rabbitkit.probe.{}", uuid::Uuid::new_v4().simple());
        let declared = tokio::time::timeout(
            bound,
            channel.exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Custom(kind.into()),
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?;
        let answer = match declared {
            Ok(()) => {
                let _ = channel
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
                Ok(true)
            }
            // 503 COMMAND_INVALID "unknown exchange type 'x-consistent-hash'".
            Err(e) if format!("{e} {e:?}").contains("exchange type") => Ok(false),
            Err(e) => Err(format!("cannot tell: {e}")),
        };
        let _ = tokio::time::timeout(bound, connection.close(200, "probe done".into())).await;
        answer
    })
}

/// Host and credentials of an `amqp://` URL.
#[derive(Debug, PartialEq, Eq)]
struct Broker {
    host: String,
    user: String,
    password: String,
}

impl Broker {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("amqp://")
            .ok_or_else(|| format!("not an amqp:// URL (TLS or other): {}", redact(url)))?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                (percent_decode(user), percent_decode(password))
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let host = if let Some(v6) = hostport.strip_prefix('[') {
            v6.split(']').next().unwrap_or("").to_owned()
        } else {
            hostport.split(':').next().unwrap_or("").to_owned()
        };
        let host = if host.is_empty() {
            "localhost".to_owned()
        } else {
            host
        };
        Ok(Self {
            host,
            user,
            password,
        })
    }

    fn overview_request(&self) -> String {
        let credentials = base64(format!("{}:{}", self.user, self.password).as_bytes());
        format!(
            "GET /api/overview?columns=exchange_types HTTP/1.0\r\nHost: {}:{MANAGEMENT_PORT}\r\n\
             Authorization: Basic {credentials}\r\nAccept: application/json\r\n\r\n",
            self.host
        )
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok();
        match (bytes[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The names of `exchange_types` in an HTTP response to `/api/overview`.
fn exchange_types(response: &str) -> Result<Vec<String>, String> {
    let status = response.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered `{}`", status.trim()));
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let types = json["exchange_types"]
        .as_array()
        .ok_or("no exchange_types in /api/overview")?;
    Ok(types
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect())
}

/// A piece some tests need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Python with pika and rstream: [`PIKA_TESTS`].
    Pika,
    /// nginx with its stream module: the failover tests [`NGINX_TESTS`].
    Nginx,
    /// iptables and iproute2: the `netsplit` tests.
    Netsplit,
    /// openssl: the local cluster's TLS certificates.
    Openssl,
}

impl Need {
    /// The Debian packages that provide it (pika: what `python3 -m venv`
    /// needs; pika itself comes from pip).
    fn packages(self, have: &Have) -> Vec<&'static str> {
        match self {
            Need::Pika if have.pika => vec![],
            Need::Pika => {
                let mut p = vec![];
                if !have.python3 {
                    p.push("python3");
                }
                if !have.venv {
                    p.push("python3-venv");
                }
                p
            }
            Need::Nginx if have.nginx => vec![],
            Need::Nginx => vec!["nginx-light", "libnginx-mod-stream"],
            Need::Netsplit => {
                let mut p = vec![];
                if !have.iptables {
                    p.push("iptables");
                }
                if !have.ip {
                    p.push("iproute2");
                }
                p
            }
            Need::Openssl if have.openssl => vec![],
            Need::Openssl => vec!["openssl"],
        }
    }

    /// Which tests need it, for the line saying what is installed.
    fn purpose(self) -> &'static str {
        match self {
            Need::Pika => "pika",
            Need::Nginx => "failover",
            Need::Netsplit => "netsplit",
            Need::Openssl => "local cluster's TLS",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::Pika => "Python with pika and rstream",
            Need::Nginx => "nginx with its stream module",
            Need::Netsplit => "iptables and iproute2",
            Need::Openssl => "openssl",
        })
    }
}

/// What is on the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Have {
    /// The interpreter to use imports pika and rstream.
    pub pika: bool,
    pub python3: bool,
    /// `python3` can make a virtual environment (Debian: `python3-venv`).
    pub venv: bool,
    pub nginx: bool,
    pub iptables: bool,
    pub ip: bool,
    pub openssl: bool,
}

impl Have {
    fn has(&self, need: Need) -> bool {
        match need {
            Need::Pika => self.pika,
            Need::Nginx => self.nginx,
            Need::Netsplit => self.iptables && self.ip,
            Need::Openssl => self.openssl,
        }
    }
}

/// The Debian packages to install for `needs`, given what is there, in
/// order and without repeats.
pub fn apt_packages(needs: &[Need], have: &Have) -> Vec<&'static str> {
    let mut packages = vec![];
    for need in needs {
        for p in need.packages(have) {
            if !packages.contains(&p) {
                packages.push(p);
            }
        }
    }
    packages
}

/// `xtask: installing P1 P2 (apt-get) for the pika, failover and netsplit tests`.
pub fn install_line(packages: &[&str], needs: &[Need], have: &Have) -> String {
    let purposes: Vec<&str> = needs
        .iter()
        .filter(|n| !n.packages(have).is_empty())
        .map(|n| n.purpose())
        .collect();
    format!(
        "xtask: installing {} (apt-get) for the {} tests",
        packages.join(" "),
        join_and(&purposes)
    )
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The filterset term that selects exactly these tests.
pub fn exact(tests: &[(&str, &str)]) -> String {
    tests
        .iter()
        .map(|(binary, name)| format!("(binary({binary}) and test(={name}))"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `base` without the tests of each of `excluded` (filterset terms).
pub fn without(base: &str, excluded: &[String]) -> String {
    excluded.iter().fold(base.to_owned(), |filter, term| {
        format!("({filter}) and not ({term})")
    })
}

/// The filterset of `cargo xtask test`'s main run: everything but the
/// `failover` and `netsplit` binaries (they run alone, later) and the
/// tests of `excluded`; with `external` (AMQP_ADDR), nor the
/// `local_cluster` binary. The `test(=rabbitkit::never)` term keeps
/// nextest from dropping the binaries whose tests are skipped before
/// listing them: listed then filtered, they count as skipped.
pub fn main_filter(external: bool, excluded: &[String]) -> String {
    if external {
        format!(
            "({}) or test(=rabbitkit::never)",
            without(
                "not binary(failover) and not binary(local_cluster) and not binary(netsplit)",
                excluded
            )
        )
    } else {
        // The failover binary is left out unlisted: its tests run next.
        format!(
            "not binary(failover) and (({}) or test(=rabbitkit::never))",
            without("not binary(netsplit)", excluded)
        )
    }
}

/// What `cargo xtask test` could set up: the Python to export as `PYTHON`
/// and, for each piece it could not, why.
#[derive(Debug, Default)]
pub struct Setup {
    pub python: Option<PathBuf>,
    pub missing: Vec<(Need, String)>,
}

impl Setup {
    /// Why `need` is missing, if it is.
    pub fn missing(&self, need: Need) -> Option<&str> {
        self.missing
            .iter()
            .find(|(n, _)| *n == need)
            .map(|(_, why)| why.as_str())
    }

    /// The filterset terms of the tests that cannot run, among `pika`
    /// (the pika tests' binaries are in this run) and `nginx` (the failover
    /// tests through nginx are).
    pub fn excluded(&self, pika: bool, nginx: bool) -> Vec<String> {
        let mut terms = vec![];
        if pika && self.missing(Need::Pika).is_some() {
            terms.push(exact(PIKA_TESTS));
        }
        if nginx && self.missing(Need::Nginx).is_some() {
            terms.push(NGINX_TESTS.to_owned());
        }
        terms
    }
}

/// Installs what `needs` lack (see the module's doc) and says what cannot
/// be had. `target_dir`: the workspace's target directory (the venv).
pub fn prepare(needs: &[Need], target_dir: &Path) -> Setup {
    let venv = target_dir.join(VENV_DIR);
    let explicit_python = std::env::var_os("PYTHON").filter(|p| !p.is_empty());
    let python = explicit_python
        .clone()
        .map_or_else(|| venv.join("bin/python"), PathBuf::from);
    let mut have = look(needs, &python);
    let mut why_not: Vec<(Need, String)> = vec![];

    // The interpreter named by PYTHON is the user's: never installed into.
    if needs.contains(&Need::Pika) && !have.pika && explicit_python.is_some() {
        why_not.push((
            Need::Pika,
            format!(
                "PYTHON={} cannot import pika and rstream (unset PYTHON to let xtask make {})",
                python.display(),
                venv.display()
            ),
        ));
        have.python3 = true;
        have.venv = true;
    }
    let needs_pip =
        |have: &Have| needs.contains(&Need::Pika) && !have.pika && explicit_python.is_none();

    let packages = apt_packages(needs, &have);
    if !packages.is_empty() {
        let outcome = match refusal() {
            Some(why) => Err(why),
            None => {
                eprintln!("{}", install_line(&packages, needs, &have));
                apt_install(&packages)
            }
        };
        if let Err(why) = outcome {
            for need in needs {
                let own = need.packages(&have);
                if !own.is_empty() {
                    why_not.push((
                        *need,
                        format!("cannot apt-get install {}: {why}", own.join(" ")),
                    ));
                }
            }
        }
        have = look(needs, &python);
    }

    if needs_pip(&have) && why_not.iter().all(|(n, _)| *n != Need::Pika) {
        let outcome = if no_install() {
            Err(format!(
                "cannot pip install {PIKA} {RSTREAM}: {NO_INSTALL_ENV} is set"
            ))
        } else {
            eprintln!(
                "xtask: installing {PIKA} and {RSTREAM} into {} (pip) for the Python tests",
                venv.display()
            );
            pip_install(&venv)
        };
        if let Err(why) = outcome {
            why_not.push((Need::Pika, why));
        }
        have = look(needs, &python);
    }

    let mut setup = Setup::default();
    for &need in needs {
        if have.has(need) {
            continue;
        }
        let why = why_not
            .iter()
            .find(|(n, _)| *n == need)
            .map_or("still missing after the install", |(_, why)| why.as_str());
        setup
            .missing
            .push((need, format!("{need} not installed ({why})")));
    }
    if needs.contains(&Need::Pika) && have.pika {
        eprintln!(
            "xtask: PYTHON={} ({}) for the Python tests",
            python.display(),
            pika_version(&python).unwrap_or_default()
        );
        setup.python = Some(python);
    }
    setup
}

/// Installs openssl if it is missing (the local cluster makes its TLS
/// certificates with it); a no-op, cheap, when it is there.
pub fn ensure_openssl() {
    if find_program("openssl").is_some() {
        return;
    }
    let needs = [Need::Openssl];
    let have = Have::default();
    let result = match refusal() {
        Some(why) => Err(why),
        None => {
            eprintln!("{}", install_line(&["openssl"], &needs, &have));
            apt_install(&["openssl"])
        }
    };
    if let Err(why) = result {
        eprintln!(
            "xtask: openssl not installed (cannot apt-get install openssl: {why}): \
             the local cluster cannot make its TLS certificates"
        );
    }
}

/// Why apt-get cannot install anything here, if it cannot.
fn refusal() -> Option<String> {
    if no_install() {
        Some(format!("{NO_INSTALL_ENV} is set"))
    } else if !is_root() {
        Some("not root".to_owned())
    } else if find_program("apt-get").is_none() {
        Some("apt-get is not found".to_owned())
    } else {
        None
    }
}

fn no_install() -> bool {
    std::env::var(NO_INSTALL_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What is on the machine; `python`: the interpreter that must import
/// pika. Python is asked only if `needs` has pika.
fn look(needs: &[Need], python: &Path) -> Have {
    let pika = needs.contains(&Need::Pika);
    let python3 = find_program("python3").is_some();
    Have {
        pika: pika && succeeds(Command::new(python).args(["-c", "import pika, rstream"])),
        python3,
        // Debian ships ensurepip in python3-venv.
        venv: pika
            && python3
            && succeeds(Command::new("python3").args(["-c", "import ensurepip, venv"])),
        nginx: LoadBalancer::nginx().is_ok(),
        iptables: find_program("iptables").is_some(),
        ip: find_program("ip").is_some(),
        openssl: find_program("openssl").is_some(),
    }
}

/// `pika 1.3.2, rstream 1.1.1`.
fn pika_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import pika, rstream; print(f'pika {pika.__version__}, rstream {rstream.__version__}')",
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `apt-get update -qq`, then `apt-get install` of `packages`, with a
/// policy-rc.d that keeps the packages from starting services (the system's
/// nginx on port 80: the tests run their own).
fn apt_install(packages: &[&str]) -> Result<(), String> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists()
        && fs::write(
            policy,
            "#!/bin/sh\n# rabbitkit xtask: no service starts\nexit 101\n",
        )
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(policy, fs::Permissions::from_mode(0o755))
        })
        .is_ok();
    let result = quiet(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages),
        )
    });
    if own_policy {
        let _ = fs::remove_file(policy);
    }
    result.map_err(|e| format!("apt-get failed: {e}"))
}

/// A fresh venv at `venv` (unless a working one is there), then pika in it.
fn pip_install(venv: &Path) -> Result<(), String> {
    let python = venv.join("bin/python");
    if !succeeds(Command::new(&python).args(["-c", "import sys"])) {
        quiet(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(venv),
        )
        .map_err(|e| format!("python3 -m venv failed: {e}"))?;
    }
    quiet(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "--timeout",
        "20",
        PIKA,
        RSTREAM,
    ]))
    .map_err(|e| format!("pip install failed: {e}"))
}

/// Runs `cmd`, its output kept; on failure, the error is its last lines.
fn quiet(cmd: &mut Command) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out: Output = cmd
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut tail = lines[lines.len().saturating_sub(2)..].join(" / ");
    if tail.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| tail.is_char_boundary(i))
            .unwrap_or(0);
        tail.truncate(cut);
        tail.push_str(" ...");
    }
    Err(format!("{} ({tail})", out.status))
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap()
    }

    fn fresh() -> Have {
        Have {
            python3: true,
            venv: true,
            ..Have::default()
        }
    }

    #[test]
    fn apt_packages_are_those_of_what_is_missing() {
        let all = [Need::Pika, Need::Nginx, Need::Netsplit, Need::Openssl];
        // This machine's case: python3-venv, iproute2 and openssl present.
        let have = Have {
            ip: true,
            openssl: true,
            ..fresh()
        };
        assert_eq!(
            apt_packages(&all, &have),
            ["nginx-light", "libnginx-mod-stream", "iptables"]
        );
        assert_eq!(
            install_line(&apt_packages(&all, &have), &all, &have),
            "xtask: installing nginx-light libnginx-mod-stream iptables (apt-get) \
             for the failover and netsplit tests"
        );
        // Nothing at all.
        assert_eq!(
            apt_packages(&all, &Have::default()),
            [
                "python3",
                "python3-venv",
                "nginx-light",
                "libnginx-mod-stream",
                "iptables",
                "iproute2",
                "openssl"
            ]
        );
        // pika itself comes from pip, not apt; only what is needed counts.
        assert!(apt_packages(&[Need::Pika], &fresh()).is_empty());
        assert_eq!(apt_packages(&[Need::Openssl], &fresh()), ["openssl"]);
        let everything = Have {
            pika: true,
            python3: true,
            venv: true,
            nginx: true,
            iptables: true,
            ip: true,
            openssl: true,
        };
        assert!(apt_packages(&all, &everything).is_empty());
        assert_eq!(
            install_line(&["python3-venv"], &[Need::Pika], &Have::default()),
            "xtask: installing python3-venv (apt-get) for the pika tests"
        );
    }

    #[test]
    fn filters_leave_out_the_tests_that_cannot_run() {
        assert_eq!(
            exact(&[("rpc", "a"), ("tracing", "b")]),
            "(binary(rpc) and test(=a)) or (binary(tracing) and test(=b))"
        );
        assert_eq!(without("binary(failover)", &[]), "binary(failover)");
        assert_eq!(
            without("binary(failover)", &[NGINX_TESTS.to_owned()]),
            "(binary(failover)) and not (test(/through_nginx/))"
        );
        // Nothing missing: the filters of before.
        assert_eq!(
            main_filter(false, &[]),
            "not binary(failover) and ((not binary(netsplit)) or test(=rabbitkit::never))"
        );
        assert_eq!(
            main_filter(true, &[]),
            "(not binary(failover) and not binary(local_cluster) and not binary(netsplit)) \
             or test(=rabbitkit::never)"
        );
        assert_eq!(
            main_filter(false, &[exact(&[("interop", "t")])]),
            "not binary(failover) and (((not binary(netsplit)) and not \
             ((binary(interop) and test(=t)))) or test(=rabbitkit::never))"
        );
        let setup = Setup {
            python: None,
            missing: vec![
                (Need::Pika, "no pika".into()),
                (Need::Nginx, "no nginx".into()),
            ],
        };
        assert_eq!(setup.missing(Need::Nginx), Some("no nginx"));
        assert_eq!(setup.missing(Need::Netsplit), None);
        assert_eq!(setup.excluded(false, false), Vec::<String>::new());
        assert_eq!(setup.excluded(false, true), [NGINX_TESTS]);
        let pika = setup.excluded(true, false);
        assert_eq!(pika.len(), 1);
        for (binary, name) in PIKA_TESTS {
            assert!(pika[0].contains(&format!("(binary({binary}) and test(={name}))")));
        }
        assert!(Setup::default().excluded(true, true).is_empty());
    }

    #[test]
    fn the_management_probe_reads_the_exchange_types() {
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
        assert_eq!(
            Broker::parse("amqp://u%40x:p%3Aw@rabbit.example:5673/%2f").unwrap(),
            Broker {
                host: "rabbit.example".into(),
                user: "u@x".into(),
                password: "p:w".into()
            }
        );
        assert_eq!(
            Broker::parse("amqp://[::1]:5672").unwrap().host,
            "::1".to_owned()
        );
        assert_eq!(Broker::parse("amqp://h").unwrap().user, "guest");
        let tls = Broker::parse("amqps://guest:secret@h:5671/%2f").unwrap_err();
        assert!(
            tls.contains("guest:***@h") && !tls.contains("secret"),
            "{tls}"
        );
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n\
                  {\"exchange_types\":[{\"name\":\"direct\"},{\"name\":\"x-consistent-hash\"}]}";
        assert_eq!(exchange_types(ok).unwrap(), ["direct", "x-consistent-hash"]);
        assert!(
            exchange_types("HTTP/1.1 401 Unauthorized\r\n\r\n{}")
                .unwrap_err()
                .contains("401")
        );

        // Through a socket: a fake management API on port 15672 of
        // 127.0.0.2 (a port of its own on loopback) answers once.
        use std::io::{Read, Write};
        let Ok(listener) = std::net::TcpListener::bind(("127.0.0.2", MANAGEMENT_PORT)) else {
            return;
        };
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = conn.read(&mut request).unwrap();
            conn.write_all(ok.as_bytes()).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        assert_eq!(
            has_consistent_hash("amqp://guest:guest@127.0.0.2:5672/%2f"),
            Ok(true)
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /api/overview"), "{request}");
        assert!(request.contains("Authorization: Basic Z3Vlc3Q6Z3Vlc3Q="));
        // Nothing listens on 127.0.0.3:15672: it cannot tell.
        assert!(has_consistent_hash("amqp://127.0.0.3").is_err());
    }

    /// The filters name tests by name: a renamed test would silently run
    /// (and fail) again where it cannot.
    #[test]
    fn the_tests_named_by_the_filters_exist() {
        let examples = [("examples", "every_tutorial_program_works_as_the_book_says")];
        assert!(CONSISTENT_HASH_TESTS.contains(&format!("test(={})", examples[0].1)));
        for (binary, name) in PIKA_TESTS.iter().chain(LOCAL_CTL_TESTS).chain(&examples) {
            let file = workspace().join("tests").join(format!("{binary}.rs"));
            let text = fs::read_to_string(&file).unwrap();
            assert!(
                text.contains(&format!("fn {name}()")),
                "{} has no test {name}",
                file.display()
            );
        }
        let failover = fs::read_to_string(workspace().join("tests/failover.rs")).unwrap();
        assert!(failover.contains("fn through_nginx_"));
    }

    /// CI is green only if `cargo xtask test` installs what the tests
    /// need by itself: `.ci/run` must not install anything.
    #[test]
    fn ci_installs_nothing_itself() {
        let ci = workspace().join(".ci/run");
        let script = fs::read_to_string(&ci).unwrap();
        for (n, line) in script.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            // `apt-get install`, `apt-get -y install`, `python3 -m pip
            // install`, `cargo install` (comments too: grep finds them).
            let installs = |program: &str| {
                words
                    .iter()
                    .position(|w| w.trim_start_matches(['(', '!']) == program)
                    .is_some_and(|i| words[i..].contains(&"install"))
            };
            for program in ["apt-get", "apt", "pip", "pip3", "cargo"] {
                assert!(
                    !installs(program),
                    "{}:{}: `{program} install`: install it from `cargo xtask test` instead: {line}",
                    ci.display(),
                    n + 1
                );
            }
        }
        for step in ["apt-get install", "pip install", "cargo install"] {
            assert!(!script.contains(step), "{}: `{step}`", ci.display());
        }
    }
}
