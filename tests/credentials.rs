//! Credentials never show in rabbitkit's logs: every `tracing` event of the
//! whole run (rabbitkit's and lapin's, all levels) is captured and searched,
//! for the password as text and as the list of bytes a `Debug` of a byte
//! string prints.
//!
//! lapin's own TRACE level does show it: it logs every frame it writes,
//! `connection.start-ok` included, whose SASL response holds the password
//! (as bytes). rabbitkit cannot change lapin's logging; the README warns
//! to keep `lapin` below TRACE, and this test checks the warning is still
//! true.

mod common;

use common::capture::Capture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_rabbitkits_logs_and_lapins_trace_level_shows_it() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    common::ensure_cluster();
    let first: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let secret = "Sup3r-Secret-Pw-4417";

    // A refused login, through every endpoint form.
    let bad = format!(
        "amqp://guest:{secret}@{}:{}/%2f",
        first.host(),
        first.port()
    );
    let err = rabbitkit::Options::new()
        .connect(bad.as_str())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        rabbitkit::ConnectError::AuthenticationFailed { .. }
    ));
    // Unreachable endpoints with a password, retried a few times.
    let gone =
        format!("amqp://guest:{secret}@127.0.0.1:1/%2f,amqp://guest:{secret}@127.0.0.1:2/%2f");
    let _ = rabbitkit::Options::new()
        .connect(gone.as_str())
        .await
        .unwrap_err();
    // A working client whose events and logs are exercised.
    let client = common::client().await;
    let q = rabbitkit::Queue::temporary()
        .declare(&client)
        .await
        .unwrap();
    q.send(&"hello".to_string()).await.unwrap();
    client.close().await;

    let logs = capture.0.lock().unwrap().clone();
    assert!(logs.lines().count() > 3, "logs were captured: {logs}");
    // `Debug` of a byte string: `[.., 83, 117, 112, ..]`.
    let as_bytes = secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let leaks =
        |line: &str| line.contains(secret) || line.contains(&as_bytes) || line.contains(":guest@");
    let (lapin_trace, others): (Vec<&str>, Vec<&str>) =
        logs.lines().partition(|l| l.starts_with("TRACE lapin"));
    let leaked: Vec<_> = others.iter().filter(|l| leaks(l)).collect();
    assert!(leaked.is_empty(), "password found in the logs: {leaked:#?}");
    assert!(
        lapin_trace.iter().any(|l| leaks(l)),
        "lapin's TRACE logs no longer show the password: update the README's warning"
    );
}
