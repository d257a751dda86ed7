//! The stream tutorials' programs (`examples/hello_stream_*`,
//! `examples/offset_tracking_*`, on rabbitkit-stream) run as real processes
//! against the cluster's stream ports, the way the book's chapter "Streams:
//! Hello World and offset tracking" runs them; then against RabbitMQ's
//! official Python stream tutorials (`tests/interop/python-stream/`, on
//! rstream), both ways round:
//!
//! | producer                  | consumer                     |
//! |---------------------------|------------------------------|
//! | `hello_stream_send`       | `receive.py`                 |
//! | `offset_tracking_send`    | `offset_tracking_receive.py` |
//! | `offset_tracking_send.py` | `offset_tracking_receive`    |
//!
//! In the offset tracking pairs the consumer name is shared: each side
//! resumes after the offset the other stored under it. Every body and
//! offset is checked against the stream as rabbitkit-stream reads it.
//!
//! The official `send.py` appends a raw body, not an AMQP 1.0 message:
//! rabbitkit-stream hands such an entry on as its bytes (see the test).
//!
//! The programs use fixed names (`hello-stream`, `stream-offset-tracking`,
//! `offset-tracking-tutorial`): the streams are deleted before each part,
//! and the tests of this binary never run at once (nextest test group
//! `tutorials`). The Python programs need python3 with rstream: `cargo
//! xtask test` installs it into target/python-venv and sets `PYTHON`; the
//! interop test fails without it (xtask reports it as skipped when it
//! cannot install it). Every test name starts with `stream_protocol_`:
//! RabbitMQ 3.10's stream listener refused rabbitkit-stream, and xtask
//! skips them there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use rabbitkit_stream::{ErrorKind, OffsetSpec, StreamClient};

use common::process::{Program, build_examples, example_path, python, require_python_module};
use common::streams::{stream_addrs, stream_client};

/// Every example these tests run.
const EXAMPLES: &[&str] = &[
    "hello_stream_send",
    "hello_stream_receive",
    "offset_tracking_send",
    "offset_tracking_receive",
];

const HELLO: &str = "hello-stream";
const TRACKING: &str = "stream-offset-tracking";
const CONSUMER: &str = "offset-tracking-tutorial";

const WAITING: &str = " [*] Waiting for messages. To exit press CTRL+C";
const SENT: &str = " [x] 'Hello, World!' message sent";
const PUBLISHED: [&str; 2] = ["Publishing 100 messages...", "Messages confirmed: true."];
const STARTED: &str = "Started consuming...";

const INSTALL_RSTREAM: &str = "The stream interop test runs RabbitMQ's official Python stream \
     tutorials: it needs python3 with rstream. Run it with `cargo xtask test`, which installs \
     rstream into target/python-venv and sets PYTHON, or set PYTHON to an interpreter with \
     rstream.";

/// Starts the example `name`, on the stream ports the tests use.
fn example(name: &str) -> Program {
    let mut cmd = Command::new(example_path(name));
    cmd.env("RABBITKIT_STREAM_ADDR", stream_addrs().join(","));
    Program::spawn(name.to_owned(), cmd)
}

/// Runs the example `name` to its end, checks it succeeded, returns its lines.
fn run(name: &str) -> Vec<String> {
    example(name).succeed()
}

/// Starts the Python program `script` of tests/interop/python-stream with
/// `env` (e.g. `STREAM`), printing its interop details.
fn python_program(script: &str, env: &[(&str, &str)]) -> Program {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python-stream");
    let mut cmd = Command::new(python());
    cmd.arg(dir.join(script))
        .env("PYTHONUNBUFFERED", "1")
        .env("INTEROP_DETAILS", "1")
        .env("RABBITKIT_STREAM_ADDR", stream_addrs().join(","))
        .envs(env.iter().copied());
    Program::spawn(script.to_owned(), cmd)
}

/// The tutorials' streams, seen through rabbitkit-stream.
struct Streams {
    rt: tokio::runtime::Runtime,
    client: StreamClient,
}

impl Streams {
    fn new() -> Self {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let client = rt.block_on(stream_client());
        Streams { rt, client }
    }

    /// Deletes both streams (and so the offsets stored in them).
    fn reset(&self) {
        self.rt.block_on(async {
            for stream in [HELLO, TRACKING] {
                match self.client.delete_stream(stream).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::StreamNotFound => {}
                    Err(e) => panic!("delete stream {stream}: {e}"),
                }
            }
        });
    }

    /// The offset stored under `offset-tracking-tutorial`.
    fn stored(&self) -> Option<u64> {
        self.rt
            .block_on(self.client.stored_offset(TRACKING, CONSUMER))
            .expect("query the stored offset")
    }

    /// Appends the number 7 to `hello-stream`: JSON, not text.
    fn append_a_number(&self) {
        self.rt.block_on(async {
            let producer = self
                .client
                .producer::<u32>(HELLO, "stream_tutorials_test")
                .build()
                .await
                .expect("a producer");
            producer.send(&7).await.expect("confirmed");
            producer.close().await.expect("close");
        });
    }

    /// The first `count` messages of `stream`: offset and body.
    fn read(&self, stream: &str, count: usize) -> Vec<(u64, String)> {
        self.rt.block_on(async {
            let mut consumer = self
                .client
                .consumer::<String>(stream)
                .offset(OffsetSpec::First)
                .build()
                .await
                .expect("a consumer");
            let mut got = Vec::with_capacity(count);
            while got.len() < count {
                let msg = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                    .await
                    .unwrap_or_else(|_| panic!("{stream}: {} of {count} in 30 s", got.len()))
                    .expect("the consumer ended")
                    .expect("a text body");
                got.push((msg.offset, msg.body));
            }
            consumer.close().await.expect("close");
            got
        })
    }
}

/// A wave of `offset_tracking_send` (`hello` 99 times, then `marker`) or
/// of `offset_tracking_send.py` (`hello: 0` .. `hello: 98`, `marker: 99`).
fn wave(python: bool) -> Vec<String> {
    (0..100)
        .map(|i| match (python, i) {
            (false, 99) => "marker".to_owned(),
            (false, _) => "hello".to_owned(),
            (true, 99) => "marker: 99".to_owned(),
            (true, i) => format!("hello: {i}"),
        })
        .collect()
}

/// Checks that `messages` are the waves `python` in order; returns the
/// first and last offset of each wave.
fn waves(messages: &[(u64, String)], python: &[bool]) -> Vec<(u64, u64)> {
    assert_eq!(messages.len(), 100 * python.len());
    let bodies: Vec<String> = messages.iter().map(|(_, b)| b.clone()).collect();
    let expected: Vec<String> = python.iter().flat_map(|&p| wave(p)).collect();
    assert_eq!(bodies, expected);
    assert!(
        messages.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets ascend"
    );
    messages.chunks(100).map(|w| (w[0].0, w[99].0)).collect()
}

fn done(first: u64, last: u64) -> String {
    format!("Done consuming, first offset {first}, last offset {last}.")
}

#[test]
fn stream_protocol_tutorial_programs_work_as_the_book_says() {
    common::ensure_cluster();
    build_examples(EXAMPLES);
    let streams = Streams::new();
    streams.reset();

    // Hello World: the receiver prints what the sender appends, with its
    // offset, and keeps waiting.
    let mut receive = example("hello_stream_receive");
    receive.expect(WAITING);
    assert_eq!(run("hello_stream_send"), [SENT]);
    assert!(
        receive
            .expect(" [x] Received 'Hello, World!' at offset 0")
            .is_empty()
    );
    assert_eq!(run("hello_stream_send"), [SENT]);
    assert!(
        receive
            .expect(" [x] Received 'Hello, World!' at offset 1")
            .is_empty()
    );
    // A body that is not text (a JSON number) is reported on stderr, and
    // the next message is read.
    streams.append_a_number();
    assert_eq!(run("hello_stream_send"), [SENT]);
    assert!(
        receive
            .expect(" [x] Received 'Hello, World!' at offset 3")
            .is_empty()
    );
    receive.interrupt();
    // Reading removes nothing: a second receiver reads both again.
    let mut again = example("hello_stream_receive");
    again.expect(WAITING);
    assert!(
        again
            .expect(" [x] Received 'Hello, World!' at offset 0")
            .is_empty()
    );
    assert!(
        again
            .expect(" [x] Received 'Hello, World!' at offset 1")
            .is_empty()
    );
    again.interrupt();

    // Offset tracking: the receiver reads up to the marker and stores its
    // offset under its name...
    assert_eq!(run("offset_tracking_send"), PUBLISHED);
    assert_eq!(
        run("offset_tracking_receive"),
        [STARTED, "First message received.", &done(0, 99)]
    );
    assert_eq!(streams.stored(), Some(99));
    // ... and started again, goes on after it: the second wave only. (The
    // stored offsets take offsets of the stream too: the second wave does
    // not start at 100.)
    assert_eq!(run("offset_tracking_send"), PUBLISHED);
    let offsets = waves(&streams.read(TRACKING, 200), &[false, false]);
    assert_eq!(offsets[0], (0, 99));
    let (first, last) = offsets[1];
    assert_eq!(
        run("offset_tracking_receive"),
        [STARTED, "First message received.", &done(first, last)]
    );
    assert_eq!(streams.stored(), Some(last));
    // Nothing new: it waits for a marker; Ctrl-C stops it cleanly, and the
    // stored offset stays.
    let mut waiting = example("offset_tracking_receive");
    waiting.expect(STARTED);
    let (status, lines) = waiting.interrupt_and_finish();
    assert!(status.success(), "{status}: {lines:?}");
    assert_eq!(lines, [STARTED]);
    assert_eq!(streams.stored(), Some(last));
    streams.reset();
}

#[test]
fn stream_protocol_tutorials_interoperate_with_the_official_python_stream_tutorials() {
    require_python_module("rstream", INSTALL_RSTREAM);
    common::ensure_cluster();
    build_examples(EXAMPLES);
    let streams = Streams::new();
    streams.reset();

    // hello_stream_send -> receive.py: receive.py prints the entry's raw
    // bytes (an AMQP 1.0 message), then (interop) its body and offset.
    let receive = python_program("receive.py", &[("STREAM", HELLO), ("EXIT_AFTER", "1")]);
    assert_eq!(run("hello_stream_send"), [SENT]);
    let lines = receive.succeed();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "Press control + C to close");
    assert!(
        lines[1].starts_with("Got message: b'")
            && lines[1].ends_with("Hello, World!' from stream hello-stream"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], " [interop] body b'Hello, World!' offset 0");

    // offset_tracking_send -> offset_tracking_receive.py, under the name
    // rabbitkit's receiver uses: nothing stored yet, it reads 0 to 99 and
    // stores 99.
    let tracking = [("STREAM", TRACKING), ("CONSUMER_NAME", CONSUMER)];
    assert_eq!(run("offset_tracking_send"), PUBLISHED);
    let lines = python_program("offset_tracking_receive.py", &tracking).succeed();
    let messages = streams.read(TRACKING, 100);
    assert_eq!(waves(&messages, &[false]), [(0, 99)]);
    let mut expected = vec![
        "Started consuming: Press control +C to close".to_owned(),
        "Offset not previously stored. ".to_owned(),
        "First message received".to_owned(),
    ];
    expected.extend(messages.iter().map(|(o, b)| format!(" [interop] {o} {b}")));
    expected.push("Done consuming first_offset: 0 last_offset 99 ".to_owned());
    assert_eq!(lines, expected);
    assert_eq!(streams.stored(), Some(99));

    // offset_tracking_send.py -> offset_tracking_receive: rabbitkit's
    // receiver goes on after the offset Python stored, reads Python's
    // bodies as text, and stores the marker's offset.
    let lines = python_program("offset_tracking_send.py", &tracking).succeed();
    assert_eq!(
        lines,
        ["Publishing 100 messages", "Messages confirmed: true"]
    );
    let offsets = waves(&streams.read(TRACKING, 200), &[false, true]);
    let (first, last) = offsets[1];
    assert_eq!(
        run("offset_tracking_receive"),
        [STARTED, "First message received.", &done(first, last)]
    );
    assert_eq!(streams.stored(), Some(last));

    // offset_tracking_send -> offset_tracking_receive.py again: Python
    // goes on after the offset rabbitkit stored.
    assert_eq!(run("offset_tracking_send"), PUBLISHED);
    let messages = streams.read(TRACKING, 300);
    let offsets = waves(&messages, &[false, true, false]);
    let (first, last) = offsets[2];
    let lines = python_program("offset_tracking_receive.py", &tracking).succeed();
    let mut expected = vec![
        "Started consuming: Press control +C to close".to_owned(),
        "First message received".to_owned(),
    ];
    expected.extend(
        messages[200..]
            .iter()
            .map(|(o, b)| format!(" [interop] {o} {b}")),
    );
    expected.push(format!(
        "Done consuming first_offset: {first} last_offset {last} "
    ));
    assert_eq!(lines, expected);
    assert_eq!(streams.stored(), Some(last));
    streams.reset();
}

/// The official `send.py` appends `Hello, World!` as a raw entry, not an
/// AMQP 1.0 message. The published rabbitmq-stream-client 0.11 decodes
/// every entry of a delivered chunk as AMQP 1.0 and fails the whole frame
/// (`InvalidFormatCode(72)`, the `H`), which ended the connection: the
/// consumer subscribed at the same offset again and again and handed out
/// nothing. With the vendored fix (vendor/README.md) the entry is handed
/// on as its bytes, which decode as the text they are.
#[test]
fn stream_protocol_a_raw_body_from_the_official_send_py_reaches_hello_stream_receive() {
    require_python_module("rstream", INSTALL_RSTREAM);
    common::ensure_cluster();
    build_examples(EXAMPLES);
    let streams = Streams::new();
    streams.reset();
    let mut receive = example("hello_stream_receive");
    receive.expect(WAITING);
    let lines = python_program("send.py", &[("STREAM", HELLO)]).succeed();
    assert_eq!(lines, [" [x] Hello, World! message sent"]);
    receive.expect(" [x] Received 'Hello, World!' at offset 0");
    receive.interrupt();
    streams.reset();
}
