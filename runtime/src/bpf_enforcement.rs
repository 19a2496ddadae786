//! The `bpf` map-writer backend: enforcement through the scheduler crate's pinned maps, with
//! the container's threads switched to `SCHED_EXT`, and the scheduler driver the BPF loader
//! attaches. Wired to `corral-bpf`'s typed map API.

use corral_actors::bpf_loader::SchedulerDriver;
use corral_actors::map_backend::MapBackend;
use corral_actors::ActorError;

use crate::config::EnforcementConfig;

/// Opens the pinned maps under `config.pin_dir` and the scheduler driver.
pub(crate) fn open(
    config: &EnforcementConfig,
) -> Result<(Box<dyn MapBackend>, Option<Box<dyn SchedulerDriver>>), ActorError> {
    Err(ActorError::invalid(
        "enforcement.backend",
        "bpf",
        format!(
            "the bpf backend (pins under {}) needs the corral-bpf map API, which this build does not link yet; \
             use `cpuset` or `auto`",
            config.pin_dir.display()
        ),
    ))
}
