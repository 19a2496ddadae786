//! Embedding corral in a plain tokio program, as a FaaS worker would.
//!
//! ```sh
//! cargo run -p corral --example embed                 # sim containers, in-memory maps
//! cargo run -p corral --example embed -- config.toml  # any runtime configuration
//! ```
//!
//! The worker keeps its own tokio runtime; corral runs its actors on a thread of its own. The
//! handle is cloned into every task that invokes functions.

use std::time::Duration;

use corral::{Runtime, RuntimeConfig, StartKind};

const DEFAULT_CONFIG: &str = r#"
[[groups]]
name = "latency"
cpus = "0"
slice_us = 2000

[[groups]]
name = "batch"
cpus = "0"
slice_us = 20000

[limiter]
initial = 4
min = 1
max = 8

[placement]
policy = "pinned"
pinned = { thumbnail = "latency", transcode = "batch" }
default_group = "batch"

[containers]
backend = "sim"
sim_cold_start_us = 5000
keep_alive_ms = 10000

[enforcement]
backend = "memory"

[[functions]]
name = "thumbnail"
simulated_run_us = 2000

[[functions]]
name = "transcode"
simulated_run_us = 8000
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = match std::env::args().nth(1) {
        Some(path) => {
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        // Groups may not share CPUs: give the two default groups one CPU each when there are two.
        None if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 => DEFAULT_CONFIG
            .replacen(
                "cpus = \"0\"\nslice_us = 20000",
                "cpus = \"1\"\nslice_us = 20000",
                1,
            ),
        None => DEFAULT_CONFIG
            .replacen(
                "[[groups]]\nname = \"batch\"\ncpus = \"0\"\nslice_us = 20000\n",
                "",
                1,
            )
            .replace("\"batch\"", "\"latency\""),
    };
    let config = RuntimeConfig::from_toml_str(&text)?;
    let runtime = Runtime::start(config)?;
    println!(
        "corral started: groups {:?}, enforcement {}",
        runtime
            .groups()
            .iter()
            .map(|g| (&g.name, g.cpu_list()))
            .collect::<Vec<_>>(),
        runtime.stats().enforcement_backend
    );

    let mut tasks = Vec::new();
    for i in 0..24 {
        let handle = runtime.clone();
        let function = if i % 3 == 0 { "transcode" } else { "thumbnail" };
        tasks.push(tokio::spawn(async move {
            handle
                .invoke(function, format!("request {i}").into_bytes())
                .await
        }));
    }
    for task in tasks {
        let r = task.await??;
        println!(
            "{:<10} {:<5} on {:<8} queue {:>6?} cold {:>6?} enforce {:>6?} run {:>7?} total {:>7?} hops {}",
            r.function,
            if r.start == StartKind::Cold { "cold" } else { "warm" },
            r.group_name,
            r.timings.queue_wait,
            r.timings.cold_start,
            r.timings.enforcement,
            r.timings.run,
            r.timings.total,
            r.thread_hops,
        );
    }

    let stats = runtime.stats();
    println!(
        "completed {} (cold {}, warm {}), peak in flight {} of {}, warm containers {}",
        stats.invocations_completed,
        stats.cold_starts,
        stats.warm_starts,
        stats.max_in_flight,
        stats.limit,
        stats.warm_containers
    );
    let report = tokio::time::timeout(Duration::from_secs(30), runtime.shutdown()).await??;
    println!("shut down: {report:?}");
    Ok(())
}
