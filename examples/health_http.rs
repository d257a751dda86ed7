//! Readiness and liveness over HTTP, next to the metrics: what an
//! orchestrator (Kubernetes, Nomad, a load balancer) asks a service that
//! consumes from RabbitMQ.
//!
//! ```text
//! terminal 1$ cargo run --example health_http          # add --features metrics for /metrics
//! terminal 2$ curl -i http://127.0.0.1:8080/ready      # 200 "ready: connected to amqp://…"
//! terminal 2$ curl -i http://127.0.0.1:8080/live       # 200 "alive: recovering" during a failover
//! terminal 2$ curl -s http://127.0.0.1:8080/metrics    # rabbitkit's metrics, for Prometheus
//! ```
//!
//! - `/ready` answers 200 while [`Client::health`] is `Connected`, and 503
//!   while the client recovers (a node died, the network went), the broker
//!   blocks publishers (a memory or disk alarm), or the client is closed:
//!   take the instance out of rotation, do not restart it.
//! - `/live` answers 200 unless the client is closed for good (the
//!   reconnect attempts ran out, a fatal error): only then does a restart
//!   help. A failover is not a reason to restart: rabbitkit recovers by
//!   itself.
//! - `/metrics`, built with `--features metrics`: rabbitkit's counters and
//!   histograms in Prometheus' text format (`metrics-exporter-prometheus`).
//!
//! `health()` reads the client's state (no network round trip), so a probe
//! every second costs nothing. Meanwhile the program works the queue
//! `health_demo` until Ctrl-C. `HEALTH_ADDR` sets another listen address,
//! `AMQP_ADDR` another broker; the HTTP server is hyper's, a
//! dev-dependency of the examples only (rabbitkit needs none). Chapter
//! "Clusters and failover" of the book.

// ANCHOR: code
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rabbitkit::{Client, Health, Options, Report, Shutdown, WorkQueue};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let listen: SocketAddr = std::env::var("HEALTH_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(([127, 0, 0, 1], 8080).into());
    let metrics = metrics::install()?;
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    let tasks = WorkQueue::<String>::builder("health_demo")
        .declare(&client)
        .await?;
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    let worker = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, |task: String| async move {
                    println!(" [x] Done '{task}'");
                    Ok(())
                })
                .await
        })
    };

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(" [*] Health on http://{listen}/ready and /live. To exit press CTRL+C");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.stopping() => break,
        };
        let (client, metrics) = (client.clone(), metrics.clone());
        tokio::spawn(async move {
            let answer = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = answer(&client, metrics.as_ref(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            // A probe that hangs up early is no error of ours.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
    worker.await??;
    client.close().await;
    Ok(())
}

// ANCHOR: answer
/// The answer to one probe.
fn answer(client: &Client, metrics: Option<&metrics::Handle>, path: &str) -> Response<Full<Bytes>> {
    let health = client.health();
    let (status, body) = match path {
        "/ready" => match health {
            Health::Connected { .. } => (StatusCode::OK, format!("ready: {health}")),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {health}"),
            ),
        },
        "/live" => match health {
            Health::Closed { .. } => (StatusCode::SERVICE_UNAVAILABLE, format!("dead: {health}")),
            _ => (StatusCode::OK, format!("alive: {health}")),
        },
        "/metrics" => match metrics {
            Some(handle) => (StatusCode::OK, metrics::render(handle)),
            None => (
                StatusCode::NOT_FOUND,
                "built without --features metrics".into(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "try /ready, /live or /metrics".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = status;
    response
}
// ANCHOR_END: answer

/// rabbitkit's metrics in Prometheus' format, with `--features metrics`.
#[cfg(feature = "metrics")]
mod metrics {
    pub type Handle = metrics_exporter_prometheus::PrometheusHandle;

    pub fn install() -> Result<Option<Handle>, rabbitkit::Report> {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| rabbitkit::Report::from(e.to_string()))?;
        rabbitkit::core::metrics::describe();
        Ok(Some(handle))
    }

    pub fn render(handle: &Handle) -> String {
        handle.render()
    }
}

/// Without the `metrics` feature: no `/metrics`.
#[cfg(not(feature = "metrics"))]
mod metrics {
    #[derive(Clone)]
    pub enum Handle {}

    pub fn install() -> Result<Option<Handle>, rabbitkit::Report> {
        Ok(None)
    }

    pub fn render(handle: &Handle) -> String {
        match *handle {}
    }
}
// ANCHOR_END: code
