//! Interoperability with RabbitMQ's official tutorials: each tutorial
//! program of `examples/` runs as a real process against its official Python
//! counterpart (`tests/interop/python/`, pika), both ways round:
//!
//! | producer          | consumer          |
//! |-------------------|-------------------|
//! | `send`            | `receive.py`      |
//! | `send.py`         | `receive`         |
//! | `new_task.py`     | `worker`          |
//! | `new_task`        | `worker.py`       |
//! | `rpc_client.py`   | `rpc_server`      |
//! | `rpc_client`      | `rpc_server.py`   |
//! | `emit_log`        | `receive_logs.py` |
//! | `emit_log.py`     | `receive_logs`    |
//! | `delayed`         | `receive_delayed.py` (not official: `receive.py` on `delayed_hello`) |
//! | `delayed_send.py` (not official: rabbitkit's delay queues from pika) | `receive delayed_hello` |
//!
//! Since 2026-03 the official tutorials declare `hello`, `task_queue` and
//! `rpc_queue` as durable quorum queues (`durable=True,
//! x-queue-type=quorum`), and `logs` as a non-durable fanout exchange. Both
//! programs of a pair declare what they use, so a declaration of rabbitkit's
//! that differs from the official one fails the pair with a 406
//! (PRECONDITION_FAILED) from the broker. Every pair checks the exact text
//! that arrived.
//!
//! The names are fixed and may exist from earlier runs with other
//! declarations, so `hello`, `task_queue`, `rpc_queue` and `logs` are
//! deleted before each pair. tests/examples.rs uses the same names: the two
//! binaries must not run at once (one nextest test group, one thread).
//!
//! Python 3 with pika is required: `cargo xtask test` installs pika into
//! a venv of the workspace's own (`target/python-venv`) and names it with
//! `PYTHON` (or reports this test as skipped when it cannot); without pika
//! the test fails, it does not pass silently. `PYTHON` names the
//! interpreter (default `python3`). The Python programs connect to the first URL of `AMQP_ADDR`
//! (or the local cluster's node 1); the examples to the whole list.
//!
//! Each pair runs in turn (one `#[test]`, as the names are shared); a pair
//! that fails does not stop the others, and the test fails at the end
//! naming every failed pair. Every wait is bounded; every child is killed
//! when its guard drops.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::{Program, build_examples, consumer, python, require_python_module, run};

/// Every example this test runs.
const EXAMPLES: &[&str] = &[
    "send",
    "receive",
    "new_task",
    "worker",
    "rpc_server",
    "rpc_client",
    "emit_log",
    "receive_logs",
    "delayed",
];

/// The tutorial queues, whose declarations changed over the years, and
/// `delayed_hello`, which the smoke test and two pairs here share: a
/// message one of them left behind would be taken as the next one's.
const TUTORIAL_QUEUES: &[&str] = &["hello", "task_queue", "rpc_queue", "delayed_hello"];
/// The tutorial exchanges this test uses.
const TUTORIAL_EXCHANGES: &[&str] = &["logs"];

const WAITING_FOR_MESSAGES: &str = " [*] Waiting for messages. To exit press CTRL+C";
const WAITING_FOR_LOGS: &str = " [*] Waiting for logs. To exit press CTRL+C";
const AWAITING_RPC: &str = " [x] Awaiting RPC requests";

const INSTALL_PIKA: &str = "The interop test runs RabbitMQ's official Python tutorials: it needs \
     python3 with pika. Run it with `cargo xtask test`, which installs pika into \
     target/python-venv and sets PYTHON, or set PYTHON to an interpreter with pika.";

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python")
}

/// Starts the official Python program `script` with `args`. `exit_after`:
/// it stops by itself after that many messages.
fn python_program(script: &str, args: &[&str], exit_after: Option<usize>) -> Program {
    let mut cmd = Command::new(python());
    cmd.arg(python_dir().join(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("INTEROP_DETAILS", "1")
        .env("AMQP_ADDR", common::amqp_addrs().join(","));
    if let Some(n) = exit_after {
        cmd.env("EXIT_AFTER", n.to_string());
    }
    Program::spawn(format!("{script} {}", args.join(" ")), cmd)
}

/// Runs a Python producer to its end, checks it succeeded, returns its lines.
fn run_python(script: &str, args: &[&str]) -> Vec<String> {
    python_program(script, args, None).succeed()
}

/// Starts a Python consumer that stops after `exit_after` messages, and
/// waits until it prints `ready`.
fn python_consumer(script: &str, exit_after: usize, ready: &str) -> Program {
    let mut program = python_program(script, &[], Some(exit_after));
    program.expect(ready);
    program
}

/// Waits (bounded) for a Python consumer to stop by itself and checks it
/// succeeded; returns what it printed after its `ready` line.
fn python_consumer_output(program: Program, ready: &str) -> Vec<String> {
    let lines = program.succeed();
    let start = lines.iter().position(|l| l == ready).map_or(0, |i| i + 1);
    lines[start..].to_vec()
}

/// Deletes the tutorial queues and exchanges, whatever their declarations.
fn reset(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let client = common::client().await;
        for queue in TUTORIAL_QUEUES {
            client
                .delete_queue(queue)
                .await
                .unwrap_or_else(|e| panic!("delete queue {queue}: {e}"));
        }
        for exchange in TUTORIAL_EXCHANGES {
            client
                .delete_exchange(exchange)
                .await
                .unwrap_or_else(|e| panic!("delete exchange {exchange}: {e}"));
        }
        client.close().await;
    });
}

fn send_to_receive_py(_id: &str) {
    let receive = python_consumer("receive.py", 1, WAITING_FOR_MESSAGES);
    assert_eq!(run("send", &[]), [" [x] Sent 'Hello World!'"]);
    let lines = python_consumer_output(receive, WAITING_FOR_MESSAGES);
    assert_eq!(lines, [" [x] Received Hello World!"]);
}

/// A message delayed by rabbitkit reaches a pika consumer as an ordinary
/// message, once its time is up.
fn delayed_to_receive_delayed_py(id: &str) {
    let receive = python_consumer("receive_delayed.py", 1, WAITING_FOR_MESSAGES);
    let later = format!("later from rust {id}");
    assert_eq!(
        run("delayed", &["1.5", &later]),
        [format!(" [x] Sent '{later}', due in 1.5s")]
    );
    let lines = python_consumer_output(receive, WAITING_FOR_MESSAGES);
    assert_eq!(lines, [format!(" [x] Received {later}")]);
}

/// A message delayed by pika through rabbitkit's delay queues (declared
/// by the Python program the same way) reaches rabbitkit's receiver.
fn delayed_send_py_to_receive(id: &str) {
    let mut receive = consumer("receive", &["delayed_hello"], WAITING_FOR_MESSAGES);
    let later = format!("later from python {id}");
    assert_eq!(
        run_python("delayed_send.py", &["1.5", &later]),
        [format!(" [x] Sent {later}, due in 1.5 s")]
    );
    receive.expect(&format!(" [x] Received '{later}'"));
    receive.interrupt();
}

fn send_py_to_receive(_id: &str) {
    let mut receive = consumer("receive", &[], WAITING_FOR_MESSAGES);
    assert_eq!(run_python("send.py", &[]), [" [x] Sent 'Hello World!'"]);
    receive.expect(" [x] Received 'Hello World!'");
    receive.interrupt();
}

fn new_task_py_to_worker(id: &str) {
    let mut worker = consumer("worker", &[], WAITING_FOR_MESSAGES);
    let task = format!("task from python {id}");
    assert_eq!(
        run_python("new_task.py", &[&task]),
        [format!(" [x] Sent {task}")]
    );
    worker.expect(&format!(" [x] Received '{task}'"));
    worker.expect(" [x] Done");
    worker.interrupt();
}

fn new_task_to_worker_py(id: &str) {
    let worker = python_consumer("worker.py", 1, WAITING_FOR_MESSAGES);
    let task = format!("task from rust {id}");
    assert_eq!(run("new_task", &[&task]), [format!(" [x] Sent '{task}'")]);
    let lines = python_consumer_output(worker, WAITING_FOR_MESSAGES);
    assert_eq!(
        lines,
        [
            format!(" [x] Received {task}"),
            // Persistent, as new_task.py publishes it.
            " [interop] delivery_mode 2".to_string(),
            " [x] Done".to_string(),
        ]
    );
}

fn rpc_client_py_to_rpc_server(_id: &str) {
    let mut server = consumer("rpc_server", &[], AWAITING_RPC);
    assert_eq!(
        run_python("rpc_client.py", &["10"]),
        [
            " [x] Requesting fib(10)",
            " [interop] reply body b'55'",
            " [.] Got 55"
        ]
    );
    server.expect(" [.] fib(10)");
    server.interrupt();
}

fn rpc_client_to_rpc_server_py(_id: &str) {
    let server = python_consumer("rpc_server.py", 1, AWAITING_RPC);
    assert_eq!(
        run("rpc_client", &["10"]),
        [" [x] Requesting fib(10)", " [.] Got 55"]
    );
    let lines = python_consumer_output(server, AWAITING_RPC);
    assert_eq!(lines, [" [interop] request body b'10'", " [.] fib(10)"]);
}

fn emit_log_to_receive_logs_py(id: &str) {
    let receive = python_consumer("receive_logs.py", 1, WAITING_FOR_LOGS);
    let log = format!("info: from rust {id}");
    assert_eq!(run("emit_log", &[&log]), [format!(" [x] Sent '{log}'")]);
    let lines = python_consumer_output(receive, WAITING_FOR_LOGS);
    // receive_logs.py prints the body's repr.
    assert_eq!(lines, [format!(" [x] b'{log}'")]);
}

fn emit_log_py_to_receive_logs(id: &str) {
    let mut receive = consumer("receive_logs", &[], WAITING_FOR_LOGS);
    let log = format!("info: from python {id}");
    assert_eq!(
        run_python("emit_log.py", &[&log]),
        [format!(" [x] Sent {log}")]
    );
    receive.expect(&format!(" [x] Received '{log}'"));
    receive.interrupt();
}

/// A pair's name, and the function that runs it with the run's unique id.
type Pair = (&'static str, fn(&str));

#[test]
fn tutorial_programs_interoperate_with_the_official_python_tutorials() {
    require_python_module("pika", INSTALL_PIKA);
    rabbitkit_test::ensure_cluster();
    build_examples(EXAMPLES);
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    // Fresh words in every message, so leftovers of earlier runs never match.
    let id = rabbitkit_test::unique_name("interop");

    let pairs: &[Pair] = &[
        ("send -> receive.py", send_to_receive_py),
        ("send.py -> receive", send_py_to_receive),
        ("new_task.py -> worker", new_task_py_to_worker),
        ("new_task -> worker.py", new_task_to_worker_py),
        ("rpc_client.py -> rpc_server", rpc_client_py_to_rpc_server),
        ("rpc_client -> rpc_server.py", rpc_client_to_rpc_server_py),
        ("emit_log -> receive_logs.py", emit_log_to_receive_logs_py),
        ("emit_log.py -> receive_logs", emit_log_py_to_receive_logs),
        (
            "delayed -> receive_delayed.py",
            delayed_to_receive_delayed_py,
        ),
        ("delayed_send.py -> receive", delayed_send_py_to_receive),
    ];
    let mut failed = Vec::new();
    for (name, pair) in pairs {
        eprintln!("=== {name}");
        reset(&rt);
        if catch_unwind(AssertUnwindSafe(|| pair(&id))).is_err() {
            eprintln!("=== {name}: FAILED (see the panic above)");
            failed.push(*name);
        }
    }
    reset(&rt);
    assert!(
        failed.is_empty(),
        "{} of {} pairs failed: {failed:?}",
        failed.len(),
        pairs.len()
    );
}
