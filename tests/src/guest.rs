//! Guards for VM tests: they must run inside the sched_ext guest booted by `cargo xtask vm`, and
//! fail loudly anywhere else rather than pass vacuously or skip.

use std::path::Path;

/// The environment variable the guest's init sets for every command it runs.
pub const GUEST_MARKER_ENV: &str = "CORRAL_IN_VM";

/// Panics unless this process runs inside the corral test guest with sched_ext available.
///
/// Call it first in every VM test. A VM test run on a host without sched_ext must fail, never
/// skip: the suite's whole point is to exercise the real kernel path.
pub fn require_guest() {
    assert!(
        std::env::var_os(GUEST_MARKER_ENV).is_some(),
        "this is a VM test: run it with `cargo xtask test` (it boots the sched_ext guest), \
         not directly on the host ({GUEST_MARKER_ENV} is not set)"
    );
    assert!(
        Path::new("/sys/kernel/sched_ext/state").exists(),
        "/sys/kernel/sched_ext/state is missing: the guest kernel lacks CONFIG_SCHED_CLASS_EXT"
    );
}
