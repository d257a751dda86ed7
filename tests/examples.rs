//! Smoke test of the tutorial programs in `examples/`: each one runs as a
//! real process against the cluster (or `AMQP_ADDR`, which the children
//! inherit), the way the book tells a reader to run it, and its output is
//! checked line by line.
//!
//! The programs use the official tutorials' fixed names (`hello`,
//! `task_queue`, `logs`, ...), so everything runs in one `#[test]`, one
//! program pair after another. Consumers are started first and awaited
//! until they print their "Waiting" line; then the producer runs to its
//! end; then the consumer's expected lines are awaited and it is stopped
//! with SIGINT (Ctrl-C), which must end it cleanly. Every wait is bounded;
//! every child is killed when its guard drops, also when a check fails.
//!
//! The example binaries are found next to this test's own binary
//! (`target/<profile>/examples/`). `cargo nextest run --workspace
//! --all-targets` (what `cargo xtask test` runs) builds them; when one is
//! missing or older than the sources, the test runs `cargo build --examples`
//! first. The process helpers live in `tests/common/process.rs`, shared with
//! tests/interop.rs.

mod common;

use common::process::{Program, build_examples, consumer, example_path, run};

/// Starts the example `name` with `args` and environment `env`.
fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Program {
    let mut cmd = std::process::Command::new(example_path(name));
    cmd.args(args).envs(env.iter().copied());
    Program::spawn(format!("{name} {}", args.join(" ")), cmd)
}

/// [`consumer`] with environment `env`.
fn consumer_with_env(name: &str, args: &[&str], env: &[(&str, &str)], ready: &str) -> Program {
    let mut program = start_with_env(name, args, env);
    program.expect(ready);
    program
}

/// Every example this test runs.
const EXAMPLES: &[&str] = &[
    "send",
    "receive",
    "new_task",
    "worker",
    "emit_log",
    "receive_logs",
    "emit_log_direct",
    "receive_logs_direct",
    "emit_log_topic",
    "receive_logs_topic",
    "emit_log_headers",
    "receive_logs_headers",
    "rpc_server",
    "rpc_client",
    "publisher_confirms",
    "failover",
    "retry_dead_letter",
    "delayed",
    "stream_send",
    "stream_receive",
    "partitioned_send",
    "partitioned_worker",
    "health_http",
];

const WAITING_FOR_MESSAGES: &str = " [*] Waiting for messages. To exit press CTRL+C";
const WAITING_FOR_LOGS: &str = " [*] Waiting for logs. To exit press CTRL+C";

#[test]
fn every_tutorial_program_works_as_the_book_says() {
    rabbitkit_test::ensure_cluster();
    build_examples(EXAMPLES);
    // Fresh words in every message, so leftovers of earlier runs never match.
    let id = rabbitkit_test::unique_name("smoke");

    // Hello World.
    let mut receive = consumer("receive", &[], WAITING_FOR_MESSAGES);
    assert_eq!(run("send", &[]), [" [x] Sent 'Hello World!'"]);
    receive.expect(" [x] Received 'Hello World!'");
    receive.interrupt();

    // Work queues (no dots: no simulated work).
    let mut worker = consumer("worker", &[], WAITING_FOR_MESSAGES);
    let task = format!("task {id}");
    assert_eq!(run("new_task", &[&task]), [format!(" [x] Sent '{task}'")]);
    worker.expect(&format!(" [x] Received '{task}'"));
    worker.expect(" [x] Done");
    worker.interrupt();

    // Publish/subscribe: every subscriber gets a copy.
    let mut first = consumer("receive_logs", &[], WAITING_FOR_LOGS);
    let mut second = consumer("receive_logs", &[], WAITING_FOR_LOGS);
    let log = format!("info: {id}");
    assert_eq!(run("emit_log", &[&log]), [format!(" [x] Sent '{log}'")]);
    first.expect(&format!(" [x] Received '{log}'"));
    second.expect(&format!(" [x] Received '{log}'"));
    first.interrupt();
    second.interrupt();

    // Routing: only the bound severities arrive. Messages from one
    // publisher arrive in order, so the info message, sent first, would
    // have been printed before the error one.
    let mut direct = consumer(
        "receive_logs_direct",
        &["warning", "error"],
        WAITING_FOR_LOGS,
    );
    let info = format!("info {id}");
    let error = format!("error {id}");
    run("emit_log_direct", &["info", &info]);
    assert_eq!(
        run("emit_log_direct", &["error", &error]),
        [format!(" [x] Sent 'error':'{error}'")]
    );
    let before = direct.expect(&format!(" [x] Received 'error':'{error}'"));
    assert!(
        !before.iter().any(|l| l.contains(&info)),
        "info was not bound: {before:?}"
    );
    direct.interrupt();

    // Topics.
    let mut topic = consumer(
        "receive_logs_topic",
        &["kern.*", "*.critical"],
        WAITING_FOR_LOGS,
    );
    let user = format!("user info {id}");
    let kernel = format!("kernel {id}");
    run("emit_log_topic", &["user.info", &user]);
    run("emit_log_topic", &["kern.critical", &kernel]);
    let before = topic.expect(&format!(" [x] Received 'kern.critical':'{kernel}'"));
    assert!(!before.iter().any(|l| l.contains(&user)), "{before:?}");
    topic.interrupt();
    // A malformed pattern is refused before connecting.
    let bad = Program::start("receive_logs_topic", &["kern*"]);
    let (status, _) = bad.finish();
    assert_eq!(status.code(), Some(1), "`kern*` is refused");

    // Headers: all vs any.
    let mut all = consumer(
        "receive_logs_headers",
        &["all", "format=pdf", "type=report"],
        WAITING_FOR_LOGS,
    );
    let mut any = consumer(
        "receive_logs_headers",
        &["any", "format=pdf", "type=log"],
        WAITING_FOR_LOGS,
    );
    let archive = format!("archive {id}");
    let report = format!("report {id}");
    assert_eq!(
        run(
            "emit_log_headers",
            &["format=zip", "type=log", "--", &archive]
        ),
        [format!(" [x] Sent {{format=zip, type=log}}:'{archive}'")]
    );
    run(
        "emit_log_headers",
        &["format=pdf", "type=report", "--", &report],
    );
    let before = all.expect(&format!(
        " [x] Received {{format=pdf, type=report}}:'{report}'"
    ));
    assert!(!before.iter().any(|l| l.contains(&archive)), "{before:?}");
    any.expect(&format!(
        " [x] Received {{format=zip, type=log}}:'{archive}'"
    ));
    any.expect(&format!(
        " [x] Received {{format=pdf, type=report}}:'{report}'"
    ));
    all.interrupt();
    any.interrupt();

    // RPC.
    let mut server = consumer("rpc_server", &[], " [x] Awaiting RPC requests");
    assert_eq!(
        run("rpc_client", &["10"]),
        [" [x] Requesting fib(10)", " [.] Got 55"]
    );
    server.expect(" [.] fib(10)");
    server.interrupt();

    // Publisher confirms, three ways (timings are not checked).
    let lines = run("publisher_confirms", &["500"]);
    let prefixes = [
        " [x] Published 500 messages individually in ",
        " [x] Published 500 messages in batches of 100 in ",
        " [x] Published 500 messages and handled confirms asynchronously in ",
    ];
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, prefix) in lines.iter().zip(prefixes) {
        assert!(line.starts_with(prefix) && line.ends_with(" ms"), "{line}");
    }

    // Delayed delivery: the receiver reads `delayed_hello`; the message
    // shows up once its second is over.
    let mut receive = consumer("receive", &["delayed_hello"], WAITING_FOR_MESSAGES);
    let later = format!("later {id}");
    assert_eq!(
        run("delayed", &["1", &later]),
        [format!(" [x] Sent '{later}', due in 1s")]
    );
    receive.expect(&format!(" [x] Received '{later}'"));
    receive.interrupt();

    // Failover, with no node killed: everything confirmed arrives.
    let lines = run("failover", &["200"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" [x] Sent 200, confirmed 200, received 200 ")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l == " [x] lost: 0"), "{lines:#?}");

    // Retries with back-off, then parking: 6 jobs, 2 of which always fail.
    let lines = run("retry_dead_letter", &["6"]);
    for expected in [
        " [x] Done 'job 2' (attempt 2)",
        " [!] 'job 3' failed (attempt 3 of 3): this job can never be done; parking it",
        " [!] Parked 'job 3' after 3 attempts: this job can never be done",
        " [!] Parked 'job 6' after 3 attempts: this job can never be done",
        " [x] Done: 4, parked: 2",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} in {lines:#?}"
        );
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some(" [x] Done: 4, parked: 2")
    );

    // Streams (a stream of this run's own): read from the first message,
    // from an offset, from `next`; Ctrl-C tells where to go on.
    let stream = format!("events.{id}");
    let env = [("STREAM", stream.as_str())];
    assert_eq!(
        start_with_env("stream_send", &["one", "two", "three"], &env).succeed(),
        [" [x] Sent 'one'", " [x] Sent 'two'", " [x] Sent 'three'"]
    );
    let mut first = consumer_with_env("stream_receive", &[], &env, WAITING_FOR_MESSAGES);
    first.expect(" [x] Received 'one' at offset 0");
    first.expect(" [x] Received 'two' at offset 1");
    first.expect(" [x] Received 'three' at offset 2");
    let mut from_1 = consumer_with_env("stream_receive", &["1"], &env, WAITING_FOR_MESSAGES);
    let before = from_1.expect(" [x] Received 'two' at offset 1");
    assert!(!before.iter().any(|l| l.contains("'one'")), "{before:?}");
    from_1.expect(" [x] Received 'three' at offset 2");
    let mut next = consumer_with_env("stream_receive", &["next"], &env, WAITING_FOR_MESSAGES);
    start_with_env("stream_send", &["four"], &env).succeed();
    let before = next.expect(" [x] Received 'four' at offset 3");
    assert!(!before.iter().any(|l| l.contains("Received")), "{before:?}");
    first.expect(" [x] Received 'four' at offset 3");
    let (status, lines) = first.interrupt_and_finish();
    assert!(status.success(), "{status}: {lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some(" [*] Last acknowledged offset: 3; go on with `stream_receive 4`")
    );
    from_1.interrupt();
    next.interrupt();

    // Partitioned work queue (its own): each account's payments in order.
    let payments = format!("payments.{id}");
    let env = [("PARTITIONED_QUEUE", payments.as_str())];
    let mut worker = consumer_with_env("partitioned_worker", &[], &env, WAITING_FOR_MESSAGES);
    let sent = start_with_env("partitioned_send", &["12"], &env).succeed();
    assert_eq!(sent.len(), 12, "{sent:?}");
    assert_eq!(sent[0], " [x] Sent 'account-1 #1'");
    let received: Vec<String> = (0..12)
        .map(|_| worker.expect_where("a payment", |l| l.starts_with(" [x] Received '")))
        .collect();
    for account in 1..=4 {
        let mine: Vec<&String> = received
            .iter()
            .filter(|l| l.contains(&format!("'account-{account} #")))
            .collect();
        let in_order: Vec<String> = (1..=3)
            .map(|n| format!(" [x] Received 'account-{account} #{n}'"))
            .collect();
        assert_eq!(mine, in_order.iter().collect::<Vec<_>>(), "{received:#?}");
    }
    let (status, lines) = worker.interrupt_and_finish();
    assert!(status.success(), "{status}: {lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some(" [*] Stopped after 12 payment(s)")
    );

    // Leave nothing of this run's own behind.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::client().await;
        client.delete_queue(&stream).await.unwrap();
        let pq = rabbitkit::PartitionedQueue::<serde_json::Value>::builder(payments.as_str(), 3)
            .declare(&client)
            .await
            .unwrap();
        assert_eq!(pq.delete().await.unwrap(), 0);
        client.close().await;
    });
}

/// Ctrl-C in the middle of a task: the worker finishes it (and acknowledges
/// it) before it exits with code 0, and takes no other task.
#[test]
fn the_worker_finishes_its_task_on_ctrl_c() {
    the_worker_finishes_its_task_when_stopped(false);
}

/// SIGTERM, what a deploy sends (systemd, Docker, Kubernetes): the same
/// clean stop. Before `Shutdown::on_signals`, SIGTERM killed the worker
/// mid-task and the task ran again elsewhere.
#[test]
fn the_worker_finishes_its_task_on_sigterm() {
    the_worker_finishes_its_task_when_stopped(true);
}

fn the_worker_finishes_its_task_when_stopped(sigterm: bool) {
    rabbitkit_test::ensure_cluster();
    build_examples(&["worker"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = rabbitkit_test::unique_name(if sigterm {
        "worker.sigterm"
    } else {
        "worker.ctrl_c"
    });
    let client = rt.block_on(common::client());
    let tasks = rt
        .block_on(rabbitkit::WorkQueue::<String>::builder(name.as_str()).declare(&client))
        .unwrap();
    for task in ["first..", "second."] {
        rt.block_on(tasks.submit(&task.to_string())).unwrap();
    }
    let mut cmd = std::process::Command::new(example_path("worker"));
    cmd.env("TASK_QUEUE", &name);
    let mut worker = Program::spawn("worker".into(), cmd);
    worker.expect(WAITING_FOR_MESSAGES);
    worker.expect(" [x] Received 'first..'");
    let (status, lines) = if sigterm {
        worker.terminate_and_finish()
    } else {
        worker.interrupt_and_finish()
    };
    assert!(status.success(), "exit status {status}: {lines:#?}");
    let after = lines
        .iter()
        .skip_while(|l| *l != " [x] Received 'first..'")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        after[1..],
        [" [x] Done", " [*] Stopped after 1 task(s)"],
        "the task in progress finishes, nothing else starts: {lines:#?}"
    );
    // The finished task is gone; the other one waits in the queue.
    let mut sub = rt.block_on(tasks.subscribe()).unwrap();
    assert_eq!(rt.block_on(common::next_body(&mut sub)), "second.");
    drop(sub);
    rt.block_on(async {
        for _ in 0..100 {
            if tasks.info().await.unwrap().messages == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the finished task came back");
    });
    rt.block_on(tasks.queue().clone().delete()).unwrap();
    rt.block_on(client.close());
}

/// `GET path` on `addr` (HTTP/1.0, a plain socket): the status code and
/// the body, or `None` when nothing answers.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned();
    Some((status, body))
}

/// Polls `GET path` (bounded: a hang guard) until it answers `status`.
fn until_status(addr: std::net::SocketAddr, path: &str, status: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = http_get(addr, path);
        if let Some((code, body)) = &got
            && *code == status
        {
            return body.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {path}: no {status} within 60 s, last answer {got:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The readiness example (issue 30): `/ready` is 200 while connected and
/// 503 while the broker is unreachable, `/live` stays 200 through it, and
/// readiness comes back with the broker. The client reaches the broker
/// through rabbitkit-test's fault proxy, which refuses connections and
/// cuts the one open to make the broker unreachable.
#[test]
fn the_readiness_endpoint_follows_the_connection() {
    rabbitkit_test::ensure_cluster();
    build_examples(&["health_http"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(async {
        let e: rabbitkit::Endpoint = rabbitkit_test::amqp_addrs()[0].parse().unwrap();
        let upstream = format!("{}:{}", e.host(), e.port()).parse().unwrap();
        rabbitkit_test::FaultProxy::start(upstream).await.unwrap()
    });
    let listen = {
        // A free port for the example's server.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let health = consumer_with_env(
        "health_http",
        &[],
        &[
            ("AMQP_ADDR", proxy.amqp_url().as_str()),
            ("HEALTH_ADDR", listen.to_string().as_str()),
        ],
        &format!(" [*] Health on http://{listen}/ready and /live. To exit press CTRL+C"),
    );
    let ready = until_status(listen, "/ready", 200);
    assert!(ready.starts_with("ready: connected to amqp://"), "{ready}");
    assert!(
        !ready.contains(":guest@"),
        "no password in a probe's answer: {ready}"
    );
    assert_eq!(http_get(listen, "/live").map(|(code, _)| code), Some(200));
    assert_eq!(
        http_get(listen, "/nothing").map(|(code, _)| code),
        Some(404)
    );

    // The broker becomes unreachable: not ready, still alive.
    proxy.refuse(true);
    proxy.cut();
    let not_ready = until_status(listen, "/ready", 503);
    assert_eq!(not_ready, "not ready: recovering");
    let live = http_get(listen, "/live");
    assert_eq!(live, Some((200, "alive: recovering".to_owned())));

    // It comes back: ready again, without a restart.
    proxy.refuse(false);
    until_status(listen, "/ready", 200);
    health.interrupt();
    drop(proxy);
}
