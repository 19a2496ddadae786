//! corral: the runtime a FaaS worker links in. It places each function's containers on a CPU
//! group, enforced in the kernel by a sched_ext scheduler fed through pinned BPF maps (or by
//! cpuset where sched_ext is missing).
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral::RuntimeError> {
//! use corral::{Runtime, RuntimeConfig};
//! let config = RuntimeConfig::from_toml_str(r#"
//!     [[groups]]
//!     name = "all"
//!     cpus = "0"
//!     [containers]
//!     backend = "local"    # a cgroup v2 directory per container, a process per invocation
//!     [[functions]]
//!     name = "echo"
//!     command = ["/bin/cat"]
//! "#)?;
//! let runtime = Runtime::start(config)?;
//! let result = runtime.invoke("echo", b"hello".to_vec()).await?;
//! println!("{:?} on {} in {:?}", result.start, result.group_name, result.timings.total);
//! runtime.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`runtime`]: [`Runtime::start`] and [`RuntimeBuilder`]: backends, actors, the System thread.
//! - [`handle`]: [`RuntimeHandle`]: register, invoke, stats, shutdown.
//! - [`invocation`]: the invocation path and [`InvocationResult`] with its timings.
//! - [`config`]: [`RuntimeConfig`] and its validation.
//! - [`stats`]: [`StatsSnapshot`] and [`ShutdownReport`].
//! - [`error`]: [`RuntimeError`], the crate's one error type.
//! - [`bpf_enforcement`]: the `bpf` map-writer backend and scheduler driver over `corral-bpf`.

pub mod bpf_enforcement;
pub mod config;
pub mod error;
pub mod handle;
pub mod invocation;
pub mod metrics;
pub mod runtime;
pub mod stats;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use bpf_enforcement::BpfMapBackend;
pub use config::{
    ContainerBackendKind, ContainerdConfig, ContainersConfig, DetachedPolicy, EnforcementConfig,
    EnforcementKind, RuntimeConfig, SchedulerMode,
};
pub use corral_actors::config::{
    FunctionMode, FunctionSpec, GroupConfig, GroupOrder, HostConfig, LimiterConfig, MonitorConfig,
    PlacementConfig, PolicyKind, PressureSourceKind,
};
pub use corral_actors::messages::StartKind;
pub use corral_actors::ActorError;
pub use error::RuntimeError;
pub use handle::RuntimeHandle;
pub use invocation::{InvocationResult, InvocationTimings};
pub use runtime::{Runtime, RuntimeBuilder};
pub use stats::{ShutdownReport, StatsSnapshot};
