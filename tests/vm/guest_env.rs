//! The guest offers what corral needs: sched_ext present and idle, cgroup2 with the cpuset
//! controller, and bpffs mounted at /sys/fs/bpf.

use corral_tests::guest::require_guest;

/// sched_ext is built in and no scheduler is attached when the suite starts, so every later test
/// begins from the fair class.
#[test]
fn sched_ext_state_reads_disabled() {
    require_guest();
    let state = std::fs::read_to_string("/sys/kernel/sched_ext/state")
        .expect("read /sys/kernel/sched_ext/state");
    assert_eq!(state.trim(), "disabled");
}

/// The cpuset controller is offered by the cgroup2 root and enabled for its children, which the
/// `cpuset` map-writer backend and the placement tests rely on.
#[test]
fn cgroup2_offers_cpuset_controller() {
    require_guest();
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .expect("read /sys/fs/cgroup/cgroup.controllers");
    assert!(
        controllers.split_whitespace().any(|c| c == "cpuset"),
        "cgroup.controllers = {controllers:?}"
    );
    let subtree = std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
        .expect("read cgroup.subtree_control");
    assert!(
        subtree.split_whitespace().any(|c| c == "cpuset"),
        "cgroup.subtree_control = {subtree:?}"
    );
}

/// bpffs is mounted at /sys/fs/bpf, where the scheduler pins its maps.
#[test]
fn bpffs_is_mounted() {
    require_guest();
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| { l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ") }),
        "no bpf filesystem at /sys/fs/bpf in /proc/mounts:\n{mounts}"
    );
}
