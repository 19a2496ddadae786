//! The Prometheus endpoint, scraped with a real HTTP client: the values move with the
//! workload, unknown functions add no label, a taken port fails the start by key, and with
//! `metrics.listen` unset nothing is served.

use corral::{
    ContainerBackendKind, EnforcementKind, FunctionSpec, GroupConfig, Runtime, RuntimeConfig,
};

fn config(listen: Option<&str>) -> RuntimeConfig {
    let group = |name: &str, cpus: &str| GroupConfig {
        name: name.into(),
        cpus: cpus.into(),
        slice_us: 5_000,
        order: Default::default(),
        borrow: false,
        exclusive: false,
    };
    let mut c = RuntimeConfig::with_groups(vec![group("a", "0"), group("b", "1")]);
    c.monitor.enabled = false;
    c.limiter.initial = 4;
    c.limiter.max = 4;
    c.containers.backend = Some(ContainerBackendKind::Sim);
    c.enforcement.backend = EnforcementKind::Memory;
    c.functions = vec![FunctionSpec::named("resize"), FunctionSpec::named("api")];
    c.metrics.listen = listen.map(String::from);
    c
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert!(response.status().is_success(), "{:?}", response.status());
    let kind = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_the_workload() {
    let runtime = Runtime::start(config(Some("127.0.0.1:0"))).unwrap();
    let addr = runtime.metrics_addr().expect("an address");
    assert_ne!(addr.port(), 0, "the port the system picked");

    let before = scrape(addr).await;
    assert_eq!(sample(&before, "corral_leases_limit"), 4.0);
    assert_eq!(sample(&before, "corral_leases_in_flight"), 0.0);
    let states: f64 = [
        "unsupported",
        "not_configured",
        "attaching",
        "running",
        "backing_off",
        "stopped",
    ]
    .iter()
    .map(|s| sample(&before, &format!("corral_scheduler_state{{state=\"{s}\"}}")))
    .sum();
    assert_eq!(states, 1.0, "exactly one state is current:\n{before}");
    assert!(
        !before.contains("function=\"resize\""),
        "nothing recorded yet"
    );

    for _ in 0..5 {
        runtime.invoke("resize", b"x".to_vec()).await.unwrap();
    }
    runtime.invoke("api", b"y".to_vec()).await.unwrap();
    assert!(runtime.invoke("no-such-function", vec![]).await.is_err());

    let after = scrape(addr).await;
    assert_eq!(
        sample(
            &after,
            "corral_invocations_total{function=\"resize\",outcome=\"ok\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(
            &after,
            "corral_invocations_total{function=\"api\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "corral_cold_starts_total{function=\"resize\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "corral_invocation_duration_seconds_count{function=\"resize\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(
            &after,
            "corral_invocation_duration_seconds_bucket{le=\"+Inf\",function=\"resize\"}"
        ),
        5.0
    );
    assert_eq!(sample(&after, "corral_enforcements_committed_total"), 2.0);
    assert_eq!(
        sample(&after, "corral_enforcement_duration_seconds_count"),
        2.0
    );
    assert_eq!(sample(&after, "corral_containers_warm"), 2.0);
    assert_eq!(sample(&after, "corral_warm_lane_invocations_total"), 4.0);
    assert!(
        !after.contains("no-such-function"),
        "an unknown name is not a label"
    );
    assert_eq!(
        runtime.metrics_text().unwrap().lines().last(),
        Some("# EOF")
    );
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_the_start_and_no_listen_serves_nothing() {
    let first = Runtime::start(config(Some("127.0.0.1:0"))).unwrap();
    let taken = first.metrics_addr().unwrap().to_string();
    let err = Runtime::start(config(Some(&taken)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.listen") && err.contains(&taken),
        "{err}"
    );
    let err = Runtime::start(config(Some("localhost")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.listen") && err.contains("127.0.0.1:9464"),
        "{err}"
    );
    first.shutdown().await.unwrap();

    let quiet = Runtime::start(config(None)).unwrap();
    assert_eq!(quiet.metrics_addr(), None);
    assert_eq!(quiet.metrics_text(), None);
    quiet.shutdown().await.unwrap();
}
