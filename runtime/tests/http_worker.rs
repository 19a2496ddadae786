//! The example HTTP worker (`runtime/examples/http_worker.rs`), driven over real HTTP with
//! concurrent requests: every answer is its own request's, errors map to status codes, and
//! `/metrics` counts what was served.

#[allow(dead_code)]
#[path = "../examples/http_worker.rs"]
mod http_worker;

use std::time::Duration;

use corral::{Runtime, RuntimeConfig};

const CONFIG: &str = r#"
[[groups]]
name = "a"
cpus = "0"

[[groups]]
name = "b"
cpus = "1"

[limiter]
initial = 8
min = 1
max = 8
queue_timeout_ms = 100

[monitor]
enabled = false

[containers]
backend = "sim"

[enforcement]
backend = "memory"

[[functions]]
name = "echo"
simulated_run_us = 2000

[[functions]]
name = "slow"
simulated_run_us = 400000
"#;

async fn serve(config: RuntimeConfig) -> (corral::RuntimeHandle, String) {
    let runtime = Runtime::start(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = http_worker::router(runtime.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (runtime, base)
}

fn config() -> RuntimeConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, CONFIG).unwrap();
    http_worker::load_config(&path).unwrap()
}

/// 64 concurrent requests, 8 at a time through the limiter: each gets its own payload back
/// with a 200, the headers say where it ran, and `/metrics` counts all 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_served_and_counted() {
    let (runtime, base) = serve(config()).await;
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/invoke/echo"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .body(format!("payload {i}"))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let group = r.headers()["x-corral-group"].to_str().unwrap().to_owned();
                let start = r.headers()["x-corral-start"].to_str().unwrap().to_owned();
                (i, status, group, start, r.text().await.unwrap())
            })
        })
        .collect();
    for call in calls {
        let (i, status, group, start, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("payload {i}"));
        assert!(group == "a" || group == "b", "{group}");
        assert!(start == "cold" || start == "warm", "{start}");
    }
    let stats = runtime.stats();
    assert_eq!(stats.invocations_completed, 64);
    assert!(stats.max_in_flight <= 8, "{stats:?}");

    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l == "corral_invocations_total{function=\"echo\",outcome=\"ok\"} 64"),
        "{text}"
    );
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    runtime.shutdown().await.unwrap();
}

/// Errors map to status codes a load balancer acts on: an unknown function is a 404, a
/// request that waited out the queue a 503 with `retry-after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_status_codes() {
    let mut c = config();
    c.limiter.initial = 1;
    c.limiter.max = 1;
    let (runtime, base) = serve(c).await;
    let client = reqwest::Client::new();
    let missing = client
        .post(format!("{base}/invoke/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("nope"));

    let busy = {
        let (client, url) = (client.clone(), format!("{base}/invoke/slow"));
        tokio::spawn(async move { client.post(url).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = client
        .post(format!("{base}/invoke/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 503);
    assert_eq!(queued.headers()["retry-after"], "1");
    assert_eq!(busy.await.unwrap(), 200);
    runtime.shutdown().await.unwrap();
}
