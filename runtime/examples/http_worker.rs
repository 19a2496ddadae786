//! A small HTTP worker built on corral: what a FaaS worker author would start from.
//!
//! ```sh
//! cargo run -p corral --example http_worker -- worker.toml 127.0.0.1:8080
//! curl -X POST --data-binary 'hello' http://127.0.0.1:8080/invoke/echo
//! curl http://127.0.0.1:8080/metrics
//! ```
//!
//! It registers the functions of a corral configuration (`[[functions]]`, any backend), then
//! serves:
//! - `POST /invoke/<function>`: the request body is the payload; the answer is the function's
//!   output (`200`), with the group, container, start kind and timings in `x-corral-*`
//!   headers. Errors map to status codes a load balancer understands: an unknown function
//!   `404`, a full queue `503` with `retry-after`, a function's own failure `502`, a timeout
//!   `504`, shutting down `503`.
//! - `GET /metrics`: the runtime's Prometheus metrics (`RuntimeHandle::metrics_text`; the
//!   configuration's `[metrics] listen` may stay unset, the worker serves them on its port,
//!   and it turns them on itself).
//! - `GET /healthz`: `200` while the runtime accepts invocations.
//!
//! SIGINT or SIGTERM stops accepting connections, drains the invocations in flight and shuts
//! the runtime down (which removes every container it made).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use corral::{ActorError, Runtime, RuntimeConfig, RuntimeError, RuntimeHandle};

/// The worker's HTTP interface on a running corral runtime.
pub fn router(runtime: RuntimeHandle) -> Router {
    Router::new()
        .route("/invoke/{function}", post(invoke))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(runtime))
}

async fn invoke(
    State(runtime): State<Arc<RuntimeHandle>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Response {
    match runtime.invoke(&function, body.to_vec()).await {
        Ok(r) => {
            let mut headers = HeaderMap::new();
            let mut put = |name: &'static str, value: String| {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            };
            put("x-corral-group", r.group_name.clone());
            put("x-corral-container", r.container.clone());
            put("x-corral-start", format!("{:?}", r.start).to_lowercase());
            put("x-corral-total-us", r.timings.total.as_micros().to_string());
            put("x-corral-run-us", r.timings.run.as_micros().to_string());
            (StatusCode::OK, headers, r.output).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// The status code for an invocation error, with the error's text as the body.
pub fn error_response(e: &RuntimeError) -> Response {
    let status = match e {
        RuntimeError::Control { source } => match source {
            ActorError::UnknownFunction { .. } => StatusCode::NOT_FOUND,
            ActorError::QueueTimeout { .. } | ActorError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ActorError::FunctionTimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            ActorError::FunctionFailed { .. }
            | ActorError::ServerFailed { .. }
            | ActorError::OutputTooLarge { .. }
            | ActorError::Spawn { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        RuntimeError::SchedulerDetached { .. } | RuntimeError::Stopped => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = (status, format!("{e}\n")).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn metrics(State(runtime): State<Arc<RuntimeHandle>>) -> Response {
    match runtime.metrics_text() {
        Some(text) => (
            [(header::CONTENT_TYPE, corral::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are off: set [metrics] listen in the configuration\n",
        )
            .into_response(),
    }
}

async fn healthz(State(runtime): State<Arc<RuntimeHandle>>) -> StatusCode {
    if runtime.stats().limit > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Reads the configuration; metrics are on (on a free local port, since the worker serves
/// them on its own at `/metrics`) unless the file says where.
pub fn load_config(path: &std::path::Path) -> Result<RuntimeConfig, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
    let mut config = RuntimeConfig::from_toml_str(&text)?;
    if config.metrics.listen.is_none() {
        config.metrics.listen = Some("127.0.0.1:0".into());
    }
    Ok(config)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(config), addr) = (args.next(), args.next()) else {
        eprintln!("usage: http_worker <config.toml> [<listen address, default 127.0.0.1:8080>]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .map_err(|e| format!("the listen address: {e}"))?;
    let runtime = Runtime::start(load_config(std::path::Path::new(&config))?)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!("http_worker: serving on http://{addr} (POST /invoke/<function>, GET /metrics)");
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("http_worker: stopping: draining the invocations in flight");
    };
    axum::serve(listener, router(runtime.clone()))
        .with_graceful_shutdown(stop)
        .await?;
    let report = runtime.shutdown().await?;
    eprintln!("http_worker: stopped: {report:?}");
    Ok(())
}
