//! The task plan: which steps each `cargo xtask` task takes, in which order, decided without
//! running anything. `main` executes the steps one by one.
//!
//! The rule the plan exists for (issue 12): **setup comes before any step that builds or boots**.
//! Building the workspace needs clang-19 and libelf (libbpf-sys fails without them); booting the
//! guest needs qemu, busybox, cpio and the sched_ext kernel. On a fresh machine the first command
//! a developer types is `cargo xtask demo` or `cargo xtask test`, so every such task starts with
//! [`Step::Setup`], which checks everything and installs only what is missing (and says what).
//! When everything is present it costs a few dpkg queries.
//!
//! Only `xtask` itself is compiled before setup runs; it depends on nothing that needs a system
//! library.

/// A task as the plan sees it: what was asked for, plus the facts about the host that change the
/// steps (decided by the caller, so the plan stays a pure function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `cargo xtask setup`.
    Setup,
    /// `cargo xtask vm`; `build` is false with `--no-build`.
    Vm {
        /// Build the workspace's binaries for the guest.
        build: bool,
    },
    /// `cargo xtask test`.
    Test {
        /// Run `cargo test --workspace` (off with `--vm-only`).
        host_tests: bool,
        /// Run the VM suite (off with `--host-only`).
        vm_tests: bool,
    },
    /// `cargo xtask demo`.
    Demo {
        /// The host has no sched_ext, so the demo runs in the guest.
        in_guest: bool,
    },
}

/// One step of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Check the Debian packages and bpffs, and the VM kernel when `vm_kernel`; install, mount or
    /// download whatever is missing, saying what and why.
    Setup {
        /// The task boots the guest (or runs tests that do), so it needs the sched_ext kernel.
        vm_kernel: bool,
    },
    /// Build the workspace's binaries.
    BuildBins,
    /// Build the VM test binary.
    BuildVmTestBinary,
    /// `cargo test --workspace` (builds, then runs).
    HostTests,
    /// Boot the guest and run the user's command in it.
    RunInGuest,
    /// Run the VM test suite in the guest.
    VmTests,
    /// `corral run` of the demo configuration, in the guest or on the host.
    Demo {
        /// In the guest (the host has no sched_ext).
        in_guest: bool,
    },
}

impl Step {
    /// Whether the step compiles anything, and so needs the build packages.
    pub fn builds(&self) -> bool {
        matches!(
            self,
            Step::BuildBins | Step::BuildVmTestBinary | Step::HostTests
        )
    }

    /// Whether the step boots the guest, and so needs qemu and the kernel. The host tests count:
    /// the harness's own tests boot it.
    pub fn boots_guest(&self) -> bool {
        matches!(
            self,
            Step::HostTests | Step::RunInGuest | Step::VmTests | Step::Demo { in_guest: true }
        )
    }

    /// A short name for progress lines and the test task's summary.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Setup { .. } => "setup",
            Step::BuildBins => "build the workspace's binaries",
            Step::BuildVmTestBinary => "build VM test binary",
            Step::HostTests => "host tests (cargo test --workspace)",
            Step::RunInGuest => "run the command in the guest",
            Step::VmTests => "VM tests (in the sched_ext guest)",
            Step::Demo { in_guest: false } => "demo (on this host)",
            Step::Demo { in_guest: true } => "demo (in the guest)",
        }
    }
}

/// The steps of `task`, in order. Setup is first whenever any step builds or boots.
pub fn plan(task: Task) -> Vec<Step> {
    let mut steps = match task {
        Task::Setup => Vec::new(),
        Task::Vm { build } => {
            let mut s = Vec::new();
            if build {
                s.push(Step::BuildBins);
            }
            s.push(Step::RunInGuest);
            s
        }
        Task::Test {
            host_tests,
            vm_tests,
        } => {
            let mut s = Vec::new();
            if host_tests {
                s.push(Step::HostTests);
            }
            if vm_tests {
                s.extend([Step::BuildBins, Step::BuildVmTestBinary, Step::VmTests]);
            }
            s
        }
        Task::Demo { in_guest } => vec![Step::BuildBins, Step::Demo { in_guest }],
    };
    let vm_kernel = matches!(task, Task::Setup) || steps.iter().any(Step::boots_guest);
    steps.insert(0, Step::Setup { vm_kernel });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task the CLI can express, with every option combination that changes the plan.
    fn every_task() -> Vec<Task> {
        let mut tasks = vec![
            Task::Setup,
            Task::Vm { build: true },
            Task::Vm { build: false },
            Task::Demo { in_guest: true },
            Task::Demo { in_guest: false },
        ];
        for host_tests in [true, false] {
            for vm_tests in [true, false] {
                tasks.push(Task::Test {
                    host_tests,
                    vm_tests,
                });
            }
        }
        tasks
    }

    /// Issue 12: on a fresh machine `cargo xtask demo` built the workspace before installing the
    /// Debian packages, and libbpf-sys failed on the missing libelf. Every task now runs setup
    /// first, before any step that builds or boots, and exactly once.
    #[test]
    fn setup_runs_before_any_build_or_boot_in_every_task() {
        for task in every_task() {
            let steps = plan(task);
            assert!(
                matches!(steps.first(), Some(Step::Setup { .. })),
                "{task:?} does not start with setup: {steps:?}"
            );
            let setups = steps
                .iter()
                .filter(|s| matches!(s, Step::Setup { .. }))
                .count();
            assert_eq!(setups, 1, "{task:?} runs setup {setups} times: {steps:?}");
        }
    }

    /// Setup fetches the VM kernel exactly when the task boots the guest (the host tests boot it
    /// too), and not for a demo on a host that runs sched_ext itself.
    #[test]
    fn setup_fetches_the_kernel_only_for_tasks_that_boot() {
        for task in every_task() {
            let steps = plan(task);
            let boots = steps.iter().any(Step::boots_guest);
            let Step::Setup { vm_kernel } = steps[0] else {
                unreachable!("checked by the ordering test")
            };
            assert_eq!(
                vm_kernel,
                boots || task == Task::Setup,
                "{task:?}: {steps:?}"
            );
        }
        assert_eq!(
            plan(Task::Demo { in_guest: false })[0],
            Step::Setup { vm_kernel: false }
        );
    }

    /// The exact plans, so a reordering shows up here: builds before what uses them.
    #[test]
    fn plans_list_steps_in_execution_order() {
        use Step::*;
        assert_eq!(
            plan(Task::Demo { in_guest: true }),
            vec![
                Setup { vm_kernel: true },
                BuildBins,
                Demo { in_guest: true }
            ]
        );
        assert_eq!(
            plan(Task::Test {
                host_tests: true,
                vm_tests: true
            }),
            vec![
                Setup { vm_kernel: true },
                HostTests,
                BuildBins,
                BuildVmTestBinary,
                VmTests
            ]
        );
        assert_eq!(
            plan(Task::Vm { build: false }),
            vec![Setup { vm_kernel: true }, RunInGuest]
        );
        assert_eq!(plan(Task::Setup), vec![Setup { vm_kernel: true }]);
    }
}
