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
    /// `cargo xtask bench <which>`.
    Bench(Bench),
    /// `cargo xtask fuzz`: the configuration fuzz target for `seconds`.
    Fuzz {
        /// How long libFuzzer runs.
        seconds: u64,
    },
}

/// The benchmarks under `cargo xtask bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// `cargo xtask bench isolation`: latency under noise, per scheduler, in the guest.
    Isolation {
        /// The smoke-sized run: one run per variant, fewer samples, no scx_layered.
        smoke: bool,
    },
    /// `cargo xtask bench enforce|invoke`: the host parts.
    Host {
        /// `--quick`.
        quick: bool,
        /// Enforcement latency.
        enforce: bool,
        /// Invocation overhead.
        invoke: bool,
    },
    /// `cargo xtask bench remap`: time until a loaded cgroup is on its new CPUs, in the guest.
    Remap {
        /// `--quick`: a few moves, into the quick report.
        quick: bool,
    },
    /// `cargo xtask bench`: every part.
    All {
        /// `--quick`: short host parts and the isolation smoke run.
        quick: bool,
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
    /// Install the peer scheduler scx_layered under `target/bench/tools` when it is missing.
    InstallScxLayered,
    /// Build the workspace's binaries (debug), or with `release` the `corral` package's binaries.
    BuildBins {
        /// A release build (benchmarks).
        release: bool,
    },
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
    /// The host parts of the benchmark (`corral bench enforce|invoke`).
    HostBench {
        /// Short runs, into the quick report; the docs are left alone.
        quick: bool,
        /// Enforcement latency.
        enforce: bool,
        /// Invocation overhead.
        invoke: bool,
    },
    /// The isolation benchmark in the guest.
    IsolationBench {
        /// The smoke-sized run.
        smoke: bool,
    },
    /// The remap benchmark in the guest.
    RemapBench {
        /// A few moves, into the quick report.
        quick: bool,
    },
    /// Install cargo-fuzz under `target/tools` when it is missing.
    InstallCargoFuzz,
    /// Build the configuration fuzz target and run it for `seconds`.
    Fuzz {
        /// How long libFuzzer runs.
        seconds: u64,
    },
}

impl Step {
    /// Whether the step compiles anything, and so needs the build packages.
    pub fn builds(&self) -> bool {
        matches!(
            self,
            Step::InstallScxLayered
                | Step::InstallCargoFuzz
                | Step::Fuzz { .. }
                | Step::BuildBins { .. }
                | Step::BuildVmTestBinary
                | Step::HostTests
        )
    }

    /// Whether the step boots the guest, and so needs qemu and the kernel. The host tests count:
    /// the harness's own tests boot it.
    pub fn boots_guest(&self) -> bool {
        matches!(
            self,
            Step::HostTests
                | Step::RunInGuest
                | Step::VmTests
                | Step::Demo { in_guest: true }
                | Step::IsolationBench { .. }
                | Step::RemapBench { .. }
        )
    }

    /// A short name for progress lines and the test task's summary.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Setup { .. } => "setup",
            Step::InstallScxLayered => "install scx_layered (peer scheduler)",
            Step::BuildBins { release: false } => "build the workspace's binaries",
            Step::BuildBins { release: true } => "build corral's binaries (release)",
            Step::BuildVmTestBinary => "build VM test binary",
            Step::HostTests => "host tests (cargo test --workspace)",
            Step::RunInGuest => "run the command in the guest",
            Step::VmTests => "VM tests (in the sched_ext guest)",
            Step::Demo { in_guest: false } => "demo (on this host)",
            Step::Demo { in_guest: true } => "demo (in the guest)",
            Step::HostBench { quick: true, .. } => "benchmark smoke, host parts (--quick)",
            Step::HostBench { quick: false, .. } => "benchmark, host parts",
            Step::IsolationBench { smoke: false } => "isolation benchmark (in the guest)",
            Step::IsolationBench { smoke: true } => {
                "isolation benchmark, smoke size (in the guest)"
            }
            Step::RemapBench { quick: false } => "remap benchmark (in the guest)",
            Step::RemapBench { quick: true } => "remap benchmark, quick (in the guest)",
            Step::InstallCargoFuzz => "install cargo-fuzz",
            Step::Fuzz { .. } => "fuzz the configuration parser",
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
                s.push(Step::BuildBins { release: false });
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
                s.extend([
                    Step::BuildBins { release: false },
                    Step::BuildVmTestBinary,
                    Step::VmTests,
                ]);
            }
            if host_tests {
                // `cargo xtask bench --quick`'s invocation part, as a smoke test that the bench
                // still works (issue "benchmarks"); figures go to the quick report only.
                if !vm_tests {
                    s.push(Step::BuildBins { release: false });
                }
                s.push(Step::HostBench {
                    quick: true,
                    enforce: false,
                    invoke: true,
                });
                // Issue 11: the configuration fuzz target, for a bounded time.
                s.extend([
                    Step::InstallCargoFuzz,
                    Step::Fuzz {
                        seconds: crate::fuzz::SMOKE_SECONDS,
                    },
                ]);
            }
            s
        }
        Task::Fuzz { seconds } => vec![Step::InstallCargoFuzz, Step::Fuzz { seconds }],
        Task::Demo { in_guest } => {
            vec![Step::BuildBins { release: false }, Step::Demo { in_guest }]
        }
        Task::Bench(Bench::Isolation { smoke }) => {
            let mut s = Vec::new();
            if !smoke {
                s.push(Step::InstallScxLayered);
            }
            s.extend([
                Step::BuildBins { release: true },
                Step::IsolationBench { smoke },
            ]);
            s
        }
        Task::Bench(Bench::Host {
            quick,
            enforce,
            invoke,
        }) => vec![
            Step::BuildBins { release: true },
            Step::HostBench {
                quick,
                enforce,
                invoke,
            },
        ],
        Task::Bench(Bench::All { quick }) => {
            let mut s = Vec::new();
            if !quick {
                s.push(Step::InstallScxLayered);
            }
            s.extend([
                Step::BuildBins { release: true },
                Step::HostBench {
                    quick,
                    enforce: true,
                    invoke: true,
                },
                Step::IsolationBench { smoke: quick },
                Step::RemapBench { quick },
            ]);
            s
        }
        Task::Bench(Bench::Remap { quick }) => {
            vec![
                Step::BuildBins { release: true },
                Step::RemapBench { quick },
            ]
        }
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
            Task::Bench(Bench::Isolation { smoke: false }),
            Task::Bench(Bench::Isolation { smoke: true }),
            Task::Bench(Bench::All { quick: false }),
            Task::Bench(Bench::All { quick: true }),
            Task::Bench(Bench::Remap { quick: false }),
            Task::Bench(Bench::Remap { quick: true }),
            Task::Fuzz { seconds: 30 },
            Task::Bench(Bench::Host {
                quick: false,
                enforce: true,
                invoke: false,
            }),
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

    /// The exact plans, so a reordering shows up here: builds before what uses them, the
    /// peer scheduler before the release build, and no scx_layered for the smoke run.
    #[test]
    fn plans_list_steps_in_execution_order() {
        use Step::*;
        assert_eq!(
            plan(Task::Demo { in_guest: true }),
            vec![
                Setup { vm_kernel: true },
                BuildBins { release: false },
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
                BuildBins { release: false },
                BuildVmTestBinary,
                VmTests,
                HostBench {
                    quick: true,
                    enforce: false,
                    invoke: true
                },
                InstallCargoFuzz,
                Fuzz {
                    seconds: crate::fuzz::SMOKE_SECONDS
                }
            ]
        );
        assert_eq!(
            plan(Task::Fuzz { seconds: 30 }),
            vec![
                Setup { vm_kernel: false },
                InstallCargoFuzz,
                Fuzz { seconds: 30 }
            ]
        );
        assert_eq!(
            plan(Task::Vm { build: false }),
            vec![Setup { vm_kernel: true }, RunInGuest]
        );
        assert_eq!(
            plan(Task::Bench(Bench::Isolation { smoke: false })),
            vec![
                Setup { vm_kernel: true },
                InstallScxLayered,
                BuildBins { release: true },
                IsolationBench { smoke: false }
            ]
        );
        assert_eq!(
            plan(Task::Bench(Bench::Isolation { smoke: true })),
            vec![
                Setup { vm_kernel: true },
                BuildBins { release: true },
                IsolationBench { smoke: true }
            ]
        );
        assert_eq!(
            plan(Task::Bench(Bench::All { quick: false })),
            vec![
                Setup { vm_kernel: true },
                InstallScxLayered,
                BuildBins { release: true },
                HostBench {
                    quick: false,
                    enforce: true,
                    invoke: true
                },
                IsolationBench { smoke: false },
                RemapBench { quick: false }
            ]
        );
        assert_eq!(
            plan(Task::Bench(Bench::Remap { quick: true })),
            vec![
                Setup { vm_kernel: true },
                BuildBins { release: true },
                RemapBench { quick: true }
            ]
        );
        assert_eq!(plan(Task::Setup), vec![Setup { vm_kernel: true }]);
    }
}
