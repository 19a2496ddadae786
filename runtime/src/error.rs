//! The one error type of the `corral` library: [`RuntimeError`]. Control-plane failures keep
//! their typed [`ActorError`] as the source, so a worker can match, for example, a queue
//! timeout or an unknown function without looking at strings.

use corral_actors::ActorError;

/// Everything the worker API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A control-plane error (configuration, placement, containers, enforcement, ...).
    #[error(transparent)]
    Control {
        /// The typed error.
        #[from]
        source: ActorError,
    },
    /// The configuration text is not valid TOML for [`crate::RuntimeConfig`].
    #[error("cannot parse the runtime configuration{}: {source}", at_key(.key))]
    ConfigSyntax {
        /// The key path at fault (`limiter.max`, `groups[0].cpus`), empty for the whole file.
        key: String,
        /// The parser's error, which names the line.
        #[source]
        source: toml::de::Error,
    },
    /// The actix System thread could not be started or failed while starting.
    #[error("cannot start the runtime: {what}")]
    Start {
        /// What failed.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The scheduler is not running and `enforcement.when_detached = "fail"` refuses
    /// invocations meanwhile.
    #[error(
        "the sched_ext scheduler is not running ({state}); enforcement.when_detached = \"fail\" \
         refuses invocations until it is back (\"run\" runs them unenforced)"
    )]
    SchedulerDetached {
        /// The scheduler's state, as the loader reports it.
        state: String,
    },
    /// The runtime has shut down (or its System thread died); it accepts nothing more.
    #[error("the runtime has shut down")]
    Stopped,
}

impl RuntimeError {
    /// The control-plane error inside, if that is what this is.
    pub fn control(&self) -> Option<&ActorError> {
        match self {
            RuntimeError::Control { source } => Some(source),
            _ => None,
        }
    }
}

/// ` at `key``, or nothing for the whole file.
fn at_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" at `{key}`")
    }
}
