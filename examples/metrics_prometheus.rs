//! Metrics for Prometheus: rabbitkit's counters and histograms (the
//! `metrics` feature) served on `http://127.0.0.1:9898/metrics` by
//! `metrics-exporter-prometheus`, while a worker handles the tasks a
//! producer submits.
//!
//! ```text
//! terminal 1$ cargo run --features metrics --example metrics_prometheus
//! terminal 2$ curl -s http://127.0.0.1:9898/metrics | grep -E 'messaging|rabbitkit'
//! ```
//!
//! It submits a task to the work queue `metrics_demo` every 100 ms and
//! handles it (one in ten fails, and is retried once), until Ctrl-C. The
//! scrape shows, per exchange and queue, the publishes sent and how long
//! their confirms took (`messaging_client_sent_messages`,
//! `messaging_client_operation_duration`), confirms outstanding,
//! deliveries, acks and rejects, handler durations and errors, reconnects
//! and time blocked. `METRICS_ADDR` sets another listen address;
//! `AMQP_ADDR` another broker. Every name is listed in the docs of
//! `rabbitkit::core::metrics` and in the book's chapter "Traces and metrics".
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.

// ANCHOR: code
use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use rabbitkit::{Options, Report, Shutdown, WorkQueue};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let listen: SocketAddr = std::env::var("METRICS_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(([127, 0, 0, 1], 9898).into());
    // ANCHOR: recorder
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .expect("serve the metrics");
    // Units and descriptions (`# HELP` lines).
    rabbitkit::core::metrics::describe();
    // ANCHOR_END: recorder
    println!(" [*] Metrics on http://{listen}/metrics. To exit press CTRL+C");

    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    let tasks = WorkQueue::<u64>::builder("metrics_demo")
        .declare(&client)
        .await?;
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));

    let producer = {
        let tasks = tasks.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !shutdown.is_stopping() {
                if let Err(e) = tasks.submit(&n).await {
                    eprintln!(" [!] {e}");
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let report = tasks
        .work_until(&shutdown, |n: u64| async move {
            if n % 10 == 9 {
                return Err(format!("task {n} failed").into());
            }
            Ok(())
        })
        .await?;
    let _ = producer.await;
    println!(" [x] {} tasks done", report.acked);
    client.close().await;
    Ok(())
}
// ANCHOR_END: code
