//! Tests of the VM harness itself: it reports the guest command's exit status, and it catches a
//! guest that panics or never finishes instead of passing it.
//!
//! These boot the real sched_ext kernel under qemu. Without a kernel (`cargo xtask setup`, or
//! `CORRAL_VM_KERNEL_DIR`) they fail, never skip.

use std::time::Duration;

use xtask::initramfs::{GuestCommand, GuestSpec};
use xtask::kernel;
use xtask::vm::{self, VmOptions, VmOutcome};

fn run_in_guest(script: &str, timeout: Duration) -> vm::VmRun {
    let kernel = kernel::find().expect("the harness tests need the sched_ext kernel");
    let spec = GuestSpec {
        binaries: Vec::new(),
        command: GuestCommand::Argv(vec!["sh".into(), "-c".into(), script.into()]),
        env: Vec::new(),
    };
    let opts = VmOptions {
        smp: 1,
        memory: "512M".into(),
        timeout,
        echo: false,
        boot_retries: 0,
        ..VmOptions::default()
    };
    vm::run(&kernel, &spec, &opts).expect("booting the guest")
}

/// A guest command's exit status reaches the host unchanged, so a failing VM test fails the run.
#[test]
fn guest_exit_status_is_reported() {
    let run = run_in_guest("echo running; exit 3", Duration::from_secs(300));
    assert_eq!(
        run.outcome,
        VmOutcome::Exited(3),
        "console:\n{}",
        run.console.join("\n")
    );
    assert_eq!(run.outcome.exit_code(), 3);
    assert!(run.console.iter().any(|l| l == "running"));
}

/// The guest sees the same environment the VM tests rely on: sched_ext idle, cpuset enabled
/// for children, bpffs mounted, and the marker the VM tests check.
#[test]
fn guest_environment_is_prepared() {
    let run = run_in_guest(
        "test \"$(cat /sys/kernel/sched_ext/state)\" = disabled || exit 10; \
         grep -qw cpuset /sys/fs/cgroup/cgroup.subtree_control || exit 11; \
         grep -q ' /sys/fs/bpf bpf ' /proc/mounts || exit 12; \
         test -f /boot/config-$(uname -r) || exit 13; \
         test \"$CORRAL_IN_VM\" = 1 || exit 14; \
         command -v bpftool || exit 15",
        Duration::from_secs(300),
    );
    assert_eq!(
        run.outcome,
        VmOutcome::Exited(0),
        "console:\n{}",
        run.console.join("\n")
    );
}

/// A kernel panic is reported as a panic, never as a pass, even though the guest then stops.
#[test]
fn guest_kernel_panic_is_caught() {
    let run = run_in_guest(
        "echo c > /proc/sysrq-trigger; sleep 5; exit 0",
        Duration::from_secs(300),
    );
    assert!(
        matches!(run.outcome, VmOutcome::KernelPanic(_)),
        "expected a kernel panic, got {:?}; console:\n{}",
        run.outcome,
        run.console.join("\n")
    );
    assert!(!run.outcome.success());
    assert_ne!(run.outcome.exit_code(), 0);
}

/// A guest that never prints the sentinel fails at the timeout.
#[test]
fn guest_without_sentinel_times_out() {
    let timeout = Duration::from_secs(45);
    let run = run_in_guest("sleep 100000", timeout);
    assert_eq!(
        run.outcome,
        VmOutcome::Timeout(timeout),
        "console:\n{}",
        run.console.join("\n")
    );
    assert_ne!(run.outcome.exit_code(), 0);
    assert!(
        run.elapsed < timeout + Duration::from_secs(15),
        "the guest was not killed promptly"
    );
}

/// A guest that never reaches the guest command fails at the boot timeout, is booted again the
/// configured number of times, and reports a boot failure, not a command failure.
#[test]
fn guest_that_never_boots_is_retried_then_fails() {
    let kernel = kernel::find().expect("the harness tests need the sched_ext kernel");
    let spec = GuestSpec {
        binaries: Vec::new(),
        command: GuestCommand::Argv(vec!["true".into()]),
        env: Vec::new(),
    };
    // Too little time to boot: the ready line never comes.
    let opts = VmOptions {
        smp: 1,
        memory: "512M".into(),
        timeout: Duration::from_secs(60),
        boot_timeout: Duration::from_millis(300),
        boot_retries: 1,
        echo: false,
        ..VmOptions::default()
    };
    let run = vm::run(&kernel, &spec, &opts).expect("booting the guest");
    assert!(!run.booted);
    assert_eq!(
        run.outcome,
        VmOutcome::BootTimeout(Duration::from_millis(300))
    );
    assert_eq!(
        run.failed_boots,
        vec![VmOutcome::BootTimeout(Duration::from_millis(300))]
    );
    assert_ne!(run.outcome.exit_code(), 0);
}

/// Output that imitates the sentinel without this boot's nonce does not count as an exit.
#[test]
fn forged_sentinel_is_ignored() {
    let run = run_in_guest(
        "echo 'CORRAL-VM-EXIT 0000000000000000 0'; exit 7",
        Duration::from_secs(300),
    );
    assert_eq!(
        run.outcome,
        VmOutcome::Exited(7),
        "console:\n{}",
        run.console.join("\n")
    );
}
