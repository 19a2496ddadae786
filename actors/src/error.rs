//! The one error type of corral-actors. Every request to an actor answers
//! `Result<T, ActorError>`; each variant names the value at fault and, where there is one, the fix.
//! Expected failures on the invocation path (queue timeout, unknown function, shutdown) have their
//! own variants so callers match on them rather than on strings.

use std::path::PathBuf;
use std::time::Duration;

/// A boxed error from a pluggable backend (a map backend, a scheduler driver).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// A configuration value failed validation.
    #[error("invalid configuration `{key}` = {value:?}: {reason}")]
    InvalidConfig {
        /// The configuration key, e.g. `groups[1].cpus`.
        key: String,
        /// The offending value as written.
        value: String,
        /// Why it is wrong and how to fix it.
        reason: String,
    },
    /// A function was invoked or looked up before being registered.
    #[error("function `{function}` is not registered; register it before invoking it")]
    UnknownFunction {
        /// The function name.
        function: String,
    },
    /// A function was registered twice.
    #[error("function `{function}` is already registered")]
    DuplicateFunction {
        /// The function name.
        function: String,
    },
    /// The `pinned` policy has no group for this function and no default group.
    #[error(
        "function `{function}` has no group under the `pinned` policy; add it to \
         `placement.pinned` or set `placement.default_group`"
    )]
    UnpinnedFunction {
        /// The function name.
        function: String,
    },
    /// The inflight limit stayed full for the whole queue timeout.
    #[error(
        "no lease for `{function}` within {waited:?}: the inflight limit ({limit}) stayed full"
    )]
    QueueTimeout {
        /// The function name.
        function: String,
        /// How long the request waited.
        waited: Duration,
        /// The inflight limit at the time.
        limit: usize,
    },
    /// The runtime is shutting down and admits no new work.
    #[error("the runtime is shutting down; no new work is admitted")]
    ShuttingDown,
    /// An actor's mailbox could not deliver or answer the request (it stopped for good, or it
    /// was restarted while the request was in its hands).
    #[error("the {actor} did not answer {message}")]
    ActorUnavailable {
        /// The actor asked.
        actor: &'static str,
        /// The message sent.
        message: &'static str,
        /// The mailbox failure.
        #[source]
        source: actix::MailboxError,
    },
    /// A handler panicked; the actor has been stopped and its supervisor restarts it.
    #[error("the {actor} panicked while handling {message} ({detail}); it is being restarted")]
    HandlerPanicked {
        /// The actor that panicked.
        actor: &'static str,
        /// The message it was handling.
        message: &'static str,
        /// The panic payload, when it was a string.
        detail: String,
    },
    /// A cgroup file-system operation failed.
    #[error("cannot {action} `{path}`")]
    Cgroup {
        /// What was attempted (`create`, `remove`, `write cpuset.cpus to`, ...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A function's command could not be started.
    #[error("cannot start function `{function}` ({command:?}) in container `{container}`")]
    Spawn {
        /// The function name.
        function: String,
        /// The command line.
        command: Vec<String>,
        /// The container it was to run in.
        container: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A function ran past its `timeout_ms`; its container's processes were killed.
    #[error(
        "function `{function}` in container `{container}` ran past its timeout of {timeout_ms} ms \
         and was killed with everything it started (raise functions.timeout_ms if it needs longer)"
    )]
    FunctionTimedOut {
        /// The function name.
        function: String,
        /// The container it ran in.
        container: String,
        /// Its timeout.
        timeout_ms: u64,
    },
    /// An invocation answered more than its function's `max_output_bytes`.
    #[error(
        "function {function:?} answered more than its limit of {limit} bytes in container \
         {container}; the output was dropped. Raise functions.max_output_bytes, or have the \
         function answer less (write large results elsewhere and answer their location)"
    )]
    OutputTooLarge {
        /// The function name.
        function: String,
        /// The container it ran in.
        container: String,
        /// Its `max_output_bytes`.
        limit: u64,
    },
    /// A `server`-mode function's process died, or broke the framed protocol; its container
    /// is destroyed and the next invocation cold-starts.
    #[error(
        "function {function:?} (server mode) in container {container}: {what}; the container \
         is destroyed and the next invocation starts a new one. Its standard error ended with: \
         {stderr:?}. The protocol is described in docs/architecture.md (\"Server mode\")"
    )]
    ServerFailed {
        /// The function name.
        function: String,
        /// The container it ran in.
        container: String,
        /// What went wrong (exited with a status, closed its output, a malformed frame).
        what: String,
        /// The tail of its standard error.
        stderr: String,
    },
    /// A function ran and failed.
    #[error("function `{function}` in container `{container}` exited with {status}: {stderr}")]
    FunctionFailed {
        /// The function name.
        function: String,
        /// The container it ran in.
        container: String,
        /// The exit status as the OS reported it.
        status: String,
        /// The tail of its standard error.
        stderr: String,
    },
    /// The containerd daemon refused or failed a request (or could not be reached). The
    /// message carries the daemon's answer, since an invocation's error is often all a caller
    /// prints.
    #[error("containerd could not {operation}: {source}")]
    Containerd {
        /// What was asked, naming the container (`create container fa-1`, `kill task fa-1`).
        operation: String,
        /// The gRPC status or transport error.
        #[source]
        source: BoxError,
    },
    /// A map backend could not commit or remove an enforcement, or publish groups. The
    /// message carries the cause (the map full, a group not published, ...), since an
    /// invocation's error is often all a caller prints.
    #[error("the {backend} map backend failed to {operation}: {source}")]
    MapBackend {
        /// The backend (`bpf`, `cpuset`, `memory`).
        backend: &'static str,
        /// What it was doing, naming the cgroup and group.
        operation: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// sched_ext cannot run here.
    #[error("sched_ext is unavailable: {reasons}")]
    SchedExtUnavailable {
        /// Every reason found, joined.
        reasons: String,
    },
    /// The scheduler driver failed.
    #[error("the scheduler failed to {operation}")]
    Scheduler {
        /// `attach`, `detach`, ...
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// CPU pressure could not be read.
    #[error("cannot read CPU pressure from `{path}`")]
    Pressure {
        /// `/proc/pressure/cpu` or `/proc/loadavg`.
        path: PathBuf,
        /// The OS or parse error.
        #[source]
        source: std::io::Error,
    },
}

/// Values longer than this are cut in errors, so that a 20,000-character name does not become a
/// 20,000-character message.
const MAX_SHOWN_VALUE: usize = 120;

fn shortened(value: String) -> String {
    let len = value.chars().count();
    if len <= MAX_SHOWN_VALUE {
        return value;
    }
    let head: String = value.chars().take(MAX_SHOWN_VALUE - 40).collect();
    format!("{head}… ({len} characters)")
}

impl ActorError {
    /// A `server`-mode container that failed this way cannot serve again (its process is dead,
    /// was killed, or its protocol stream is out of step), so it is destroyed.
    pub fn spoils_server(&self) -> bool {
        matches!(
            self,
            ActorError::ServerFailed { .. }
                | ActorError::FunctionTimedOut { .. }
                | ActorError::OutputTooLarge { .. }
        )
    }

    /// Builds an [`ActorError::InvalidConfig`] (a value over 120 characters is shown cut).
    pub fn invalid(
        key: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        ActorError::InvalidConfig {
            key: key.into(),
            value: shortened(value.to_string()),
            reason: reason.into(),
        }
    }

    /// Maps a mailbox failure of `actor` answering `message`.
    pub fn mailbox(
        actor: &'static str,
        message: &'static str,
    ) -> impl FnOnce(actix::MailboxError) -> Self {
        move |source| ActorError::ActorUnavailable {
            actor,
            message,
            source,
        }
    }

    /// Builds an [`ActorError::Cgroup`].
    pub fn cgroup(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ActorError::Cgroup {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}
