//! corral-actors: the control plane of corral, a set of actix actors that hand out CPU groups,
//! acquire containers and commit group enforcement before a function runs.
//!
//! Every actor runs under an actix `Supervisor`; handlers turn a panic into a stop (see
//! [`supervision`]) so the supervisor restarts the actor, which rebuilds its state from the
//! source of truth.
//!
//! # Layout
//! - [`messages`]: every message the actors exchange, verb + noun, each answering a `Result`.
//! - [`resource_tracker`]: the ResourceTracker actor (leases, inflight limiter, `monitor_load`).
//! - [`container_manager`]: the ContainerManager actor (warm pools, cold starts, enforcement
//!   before hand-out).
//! - [`map_writer`]: the MapWriter actor, the only writer of enforcement state.
//! - [`bpf_loader`]: the BpfLoader actor (sched_ext detection, attach, watch, restart).
//! - [`config`]: configuration types and their validation.
//! - [`lease`]: the exact inflight limiter, permits and group leases.
//! - [`placement`]: the `pinned`, `least-loaded` and `hash` placement policies.
//! - [`pressure`]: CPU pressure sources for `monitor_load`.
//! - [`container_backend`]: the container backend trait and its `local` and `sim` backends.
//! - [`map_backend`]: the map backend trait and its `memory` and `cpuset` backends.
//! - [`supervision`]: panic-to-restart guard for handlers, and test failpoints.
//! - [`telemetry`]: counters, gauges and the event journal, readable without a message.
//! - [`error`]: [`ActorError`], the crate's one error type.

pub mod bpf_loader;
pub mod config;
pub mod container_backend;
pub mod container_manager;
pub mod error;
pub mod lease;
pub mod map_backend;
pub mod map_writer;
pub mod messages;
pub mod placement;
pub mod pressure;
pub mod resource_tracker;
pub mod supervision;
pub mod telemetry;

pub use error::ActorError;
