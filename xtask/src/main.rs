//! `cargo xtask`: corral's one-command setup, VM harness, test runner and demo.
//!
//! - `cargo xtask setup`: installs the system packages and obtains the sched_ext kernel.
//! - `cargo xtask vm -- <command>` / `--script <file>`: runs a command in the sched_ext guest.
//! - `cargo xtask test`: setup, host tests, then the VM test suite in the guest.
//! - `cargo xtask demo`: the main job, `corral run examples/demo.toml`, on the host when it runs
//!   sched_ext and in the guest otherwise.
//! - `cargo xtask bench [--quick] [enforce|invoke|isolation|remap]`: every benchmark part, or one;
//!   figures into target/bench/report.json and docs/benchmarks.md.
//! - `cargo xtask fuzz [--seconds N]`: the configuration fuzz target under libFuzzer.
//!
//! Each task is a plan ([`xtask::plan`]) that starts with setup, so nothing is built before the
//! packages it needs are installed; `main` turns the arguments into a plan and executes it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use xtask::bench::isolation;
use xtask::initramfs::{GuestCommand, GuestSpec};
use xtask::kernel::VmKernel;
use xtask::plan::{self, Step};
use xtask::vm::{self, VmOptions};
use xtask::{bench, cargo, setup};

/// corral's developer tasks: setup, the VM harness, the test suite, the demo and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the Debian packages the build and the VM need, and obtain the sched_ext kernel.
    ///
    /// Every other task runs this first. Idempotent: does nothing when everything is present.
    /// The kernel comes from
    /// CORRAL_VM_KERNEL_DIR when set, else from a cache under target/vm-kernel, filled from Debian
    /// unstable's current cloud kernel with a private apt configuration.
    Setup,
    /// Run a command (or a script) in the sched_ext guest; exit with the guest command's status.
    ///
    /// The workspace's binaries are built and put on the guest's PATH, with bpftool and busybox.
    /// Example: cargo xtask vm -- cat /sys/kernel/sched_ext/state
    Vm(VmArgs),
    /// Set up, run the host tests, then the VM test suite in the guest.
    ///
    /// Exits non-zero when any part fails or cannot run.
    Test(TestArgs),
    /// The main job: run the demo workload (examples/demo.toml) and print its report.
    ///
    /// Runs on the host when it runs sched_ext; otherwise says so and runs in the guest.
    Demo(DemoArgs),
    /// Benchmarks that take minutes; not part of `cargo xtask test`. Results go to
    /// target/bench/report.json.
    Bench(BenchArgs),
    /// Fuzz configuration parsing and validation (fuzz/fuzz_targets/config.rs) with libFuzzer.
    ///
    /// Installs cargo-fuzz under target/tools the first time. The corpus grows in
    /// target/fuzz/corpus/config, seeded from examples/; a failing input is saved under
    /// target/fuzz/artifacts/config and the run exits 1. `cargo xtask test` runs it for 60 s.
    Fuzz(FuzzArgs),
}

#[derive(Debug, Args)]
struct FuzzArgs {
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
}

#[derive(Debug, Args)]
struct GuestArgs {
    /// Virtual CPUs in the guest.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    smp: u32,
    /// Guest memory, as qemu's -m takes it.
    #[arg(long, default_value = "2G")]
    memory: String,
    /// Kill the guest after this many seconds, boot included.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Use multi-threaded TCG (faster, but this kernel sometimes oopses on int3 under it).
    #[arg(long)]
    mttcg: bool,
    /// Boot again this many times when the guest fails before the command starts.
    #[arg(long, default_value_t = 1)]
    boot_retries: u32,
}

impl GuestArgs {
    fn options(&self) -> VmOptions {
        VmOptions {
            smp: self.smp,
            memory: self.memory.clone(),
            timeout: Duration::from_secs(self.timeout),
            echo: true,
            mttcg: self.mttcg,
            boot_retries: self.boot_retries,
            ..VmOptions::default()
        }
    }
}

#[derive(Debug, Args)]
struct VmArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// Run this shell script in the guest instead of a command.
    #[arg(long, conflicts_with = "command")]
    script: Option<PathBuf>,
    /// Extra host binaries to put on the guest's PATH.
    #[arg(long = "bin")]
    bins: Vec<PathBuf>,
    /// Don't build the workspace's binaries; the guest gets only busybox, bpftool and --bin.
    #[arg(long)]
    no_build: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct TestArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// Skip the host tests; run only the VM suite (after the setup check).
    #[arg(long, conflicts_with = "host_only")]
    vm_only: bool,
    /// Skip the VM suite (the run then tests less than CI does, and says so).
    #[arg(long)]
    host_only: bool,
    /// Arguments for the VM test binary (libtest filters and flags), after `--`.
    #[arg(last = true)]
    vm_args: Vec<String>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// The configuration to run.
    #[arg(long, default_value = "examples/demo.toml")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Short runs of every part asked for (a smoke test): figures go to
    /// target/bench/report.quick.json, and docs/benchmarks.md is left alone.
    #[arg(long, global = true)]
    quick: bool,
    /// One part; without it, every part (host parts, then isolation and remap in the guest).
    #[command(subcommand)]
    which: Option<BenchCommand>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Enforcement latency on this host: EnforceGroup through the map writer on pinned maps, a
    /// direct map update, and a cpuset write into a loaded cgroup (10,000 each).
    Enforce,
    /// Invocation overhead and throughput at concurrency 1, 8 and 64 (sim backend), against a
    /// Mutex-and-semaphore baseline, with the thread round-trip floor.
    Invoke,
    /// Response time of a latency-sensitive function beside CPU noise, per scheduler.
    ///
    /// In one 2-vCPU guest (multi-threaded TCG): solo, EEVDF, cgroup cpuset, scx_layered and
    /// corral (noise mapped to a group, and noise left to the host group), each run several
    /// times; reports the median run's p50 and p99 as ratios to solo. Takes about 10 minutes,
    /// plus about 15 more the first time to build scx_layered.
    Isolation(IsolationArgs),
    /// Time until a loaded cgroup (4 busy threads) runs only on its new CPUs: one corral map
    /// update against one cgroup v2 cpuset.cpus write, in a 4-vCPU guest (about 3 minutes).
    Remap,
}

#[derive(Debug, Args)]
struct IsolationArgs {
    /// Smoke size: one run of 100 samples each of solo, cpuset and corral; no scx_layered.
    #[arg(long)]
    smoke: bool,
    /// Runs of each variant (the median is reported); default 3, 1 with --smoke.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    runs: Option<u32>,
    /// Samples (arrivals) per run; default 500, 100 with --smoke.
    #[arg(long, value_parser = clap::value_parser!(u32).range(20..=100_000))]
    samples: Option<u32>,
    /// Kill the guest after this many seconds, boot included.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

impl Task {
    /// The plan's view of this task, with the host facts it depends on.
    fn plan_task(&self) -> plan::Task {
        match self {
            Task::Setup => plan::Task::Setup,
            Task::Vm(args) => plan::Task::Vm {
                build: !args.no_build,
            },
            Task::Test(args) => plan::Task::Test {
                host_tests: !args.vm_only,
                vm_tests: !args.host_only,
            },
            Task::Demo(_) => plan::Task::Demo {
                in_guest: !host_runs_sched_ext(),
            },
            Task::Bench(BenchArgs {
                which: Some(BenchCommand::Isolation(args)),
                quick,
            }) => plan::Task::Bench(plan::Bench::Isolation {
                smoke: args.smoke || *quick,
            }),
            Task::Bench(BenchArgs {
                which: Some(which @ (BenchCommand::Enforce | BenchCommand::Invoke)),
                quick,
            }) => plan::Task::Bench(plan::Bench::Host {
                quick: *quick,
                enforce: matches!(which, BenchCommand::Enforce),
                invoke: matches!(which, BenchCommand::Invoke),
            }),
            Task::Bench(BenchArgs {
                which: Some(BenchCommand::Remap),
                quick,
            }) => plan::Task::Bench(plan::Bench::Remap { quick: *quick }),
            Task::Bench(BenchArgs { which: None, quick }) => {
                plan::Task::Bench(plan::Bench::All { quick: *quick })
            }
            Task::Fuzz(args) => plan::Task::Fuzz {
                seconds: args.seconds,
            },
        }
    }

    /// Argument checks that need no build, done before the plan starts.
    fn validate(&self) -> Result<()> {
        match self {
            Task::Vm(args) if args.script.is_none() && args.command.is_empty() => {
                bail!("give a guest command after `--`, or --script <file>")
            }
            Task::Demo(args) => {
                let config = demo_config(args);
                if !config.is_file() {
                    bail!("the demo configuration {} does not exist", config.display());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = cli.task.validate().and_then(|()| {
        let steps = plan::plan(cli.task.plan_task());
        Executor::new(&cli.task).run(&steps)
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One executed step, for the test task's closing summary.
struct Phase {
    name: &'static str,
    elapsed: Duration,
    ok: bool,
}

/// Executes a plan's steps for one task, carrying what earlier steps produced (the kernel, the
/// binaries) to later ones.
struct Executor<'a> {
    task: &'a Task,
    kernel: Option<VmKernel>,
    bins: Vec<PathBuf>,
    vm_test_bin: Option<PathBuf>,
    cargo_fuzz: Option<PathBuf>,
    phases: Vec<Phase>,
}

impl<'a> Executor<'a> {
    fn new(task: &'a Task) -> Self {
        Self {
            task,
            kernel: None,
            bins: Vec::new(),
            vm_test_bin: None,
            cargo_fuzz: None,
            phases: Vec::new(),
        }
    }

    /// Runs every step in order. A step that cannot run stops the plan with an error; a step
    /// that ran and failed (a test phase, a guest command) sets the exit status, and the test
    /// task goes on to its next phase. The status is the first failure's.
    fn run(mut self, steps: &[Step]) -> Result<i32> {
        let test = matches!(self.task, Task::Test(_));
        let mut status = 0;
        for step in steps {
            let start = Instant::now();
            if test {
                eprintln!("xtask test: == {} ==", step.name());
            }
            let code = self.step(step)?;
            self.phases.push(Phase {
                name: step.name(),
                elapsed: start.elapsed(),
                ok: code == 0,
            });
            if status == 0 {
                status = code;
            }
        }
        if let Task::Test(args) = self.task {
            eprintln!("xtask test: summary");
            for p in &self.phases {
                eprintln!(
                    "  {:<40} {:>7.1}s  {}",
                    p.name,
                    p.elapsed.as_secs_f64(),
                    if p.ok { "ok" } else { "FAILED" }
                );
            }
            if args.host_only {
                eprintln!("xtask test: the VM suite was skipped (--host-only); CI runs it");
            }
            return Ok(if status == 0 { 0 } else { 1 });
        }
        Ok(status)
    }

    fn kernel(&self) -> Result<&VmKernel> {
        self.kernel
            .as_ref()
            .context("the plan booted the guest without a setup step that found the kernel")
    }

    fn step(&mut self, step: &Step) -> Result<i32> {
        match *step {
            Step::Setup { vm_kernel } => {
                self.kernel = setup::run(vm_kernel)?;
                Ok(0)
            }
            Step::InstallScxLayered => {
                bench::ensure_scx_layered()?;
                Ok(0)
            }
            Step::BuildBins { release: false } => {
                eprintln!("xtask: building the workspace's binaries");
                self.bins = cargo::build_workspace_bins()?;
                Ok(0)
            }
            Step::BuildBins { release: true } => {
                eprintln!("xtask: building corral's binaries (release)");
                self.bins = cargo::build_release_bins("corral")?;
                Ok(0)
            }
            Step::BuildVmTestBinary => {
                self.vm_test_bin = Some(cargo::build_vm_test_binary()?);
                Ok(0)
            }
            Step::HostTests => {
                let status = cargo::cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .status()?;
                Ok(if status.success() { 0 } else { 1 })
            }
            Step::RunInGuest => self.run_vm(),
            Step::VmTests => self.run_vm_tests(),
            Step::Demo { in_guest } => self.run_demo(in_guest),
            Step::HostBench {
                quick,
                enforce,
                invoke,
            } => self.run_host_bench(quick, enforce, invoke),
            Step::IsolationBench { smoke } => self.run_isolation(smoke),
            Step::RemapBench { quick } => self.run_remap(quick),
            Step::InstallCargoFuzz => {
                self.cargo_fuzz = Some(xtask::fuzz::ensure_cargo_fuzz()?);
                Ok(0)
            }
            Step::Fuzz { seconds } => {
                let cargo_fuzz = self
                    .cargo_fuzz
                    .as_ref()
                    .context("the plan fuzzed before installing cargo-fuzz")?;
                xtask::fuzz::run(cargo_fuzz, seconds)
            }
        }
    }

    fn run_vm(&self) -> Result<i32> {
        let Task::Vm(args) = self.task else {
            unreachable!("RunInGuest is planned for the vm task only")
        };
        let kernel = self.kernel()?;
        let command = match &args.script {
            Some(script) => GuestCommand::Script(script.clone()),
            None => GuestCommand::Argv(args.command.clone()),
        };
        let mut binaries = self.bins.clone();
        binaries.extend(args.bins.iter().cloned());
        let spec = GuestSpec {
            binaries,
            command,
            env: guest_env(),
        };
        eprintln!(
            "xtask vm: booting {} with {} vCPUs (qemu TCG)",
            kernel.release, args.guest.smp
        );
        let run = vm::run(kernel, &spec, &args.guest.options())?;
        eprintln!(
            "xtask vm: {} ({:.1}s)",
            run.outcome,
            run.elapsed.as_secs_f64()
        );
        Ok(run.outcome.exit_code())
    }

    fn run_vm_tests(&self) -> Result<i32> {
        let Task::Test(args) = self.task else {
            unreachable!("VmTests is planned for the test task only")
        };
        let test_bin = self
            .vm_test_bin
            .clone()
            .context("the plan ran the VM suite before building it")?;
        let name = test_bin
            .file_name()
            .context("the VM test binary has no file name")?
            .to_string_lossy()
            .into_owned();
        let mut argv = vec![name, "--test-threads=1".to_owned()];
        argv.extend(args.vm_args.iter().cloned());
        let mut binaries = vec![test_bin];
        binaries.extend(self.bins.iter().cloned());
        // For the containerd test: the daemon, its runc shim and runc (the setup installs
        // them; without them that test fails, naming them).
        for tool in ["containerd", "containerd-shim-runc-v2", "runc"] {
            if let Some(path) = xtask::initramfs::find_on_path(tool) {
                binaries.push(path);
            }
        }
        let spec = GuestSpec {
            binaries,
            command: GuestCommand::Argv(argv),
            env: guest_env(),
        };
        let run = vm::run(self.kernel()?, &spec, &args.guest.options())?;
        eprintln!("xtask test: VM suite: {}", run.outcome);
        Ok(if run.outcome.success() { 0 } else { 1 })
    }

    fn run_demo(&self, in_guest: bool) -> Result<i32> {
        let Task::Demo(args) = self.task else {
            unreachable!("Demo is planned for the demo task only")
        };
        let config = demo_config(args);
        let corral = self
            .bins
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "corral"))
            .context("the workspace built no `corral` binary")?
            .clone();
        if !in_guest {
            eprintln!("demo: this host runs sched_ext; running the demo here");
            let status = std::process::Command::new(&corral)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .status()?;
            return Ok(status.code().unwrap_or(1));
        }
        eprintln!(
            "demo: this host's kernel has no sched_ext (/sys/kernel/sched_ext is missing), so the \
             demo runs in a {}-vCPU guest under qemu; booting takes a few seconds",
            args.guest.smp
        );
        let guest_config = "/corral/demo.toml";
        let script = xtask::target_dir().join("vm/demo.sh");
        std::fs::create_dir_all(script.parent().expect("a file path has a parent"))?;
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(
            &script,
            format!(
                "cat > {guest_config} <<'CORRAL_DEMO_EOF'\n{text}\nCORRAL_DEMO_EOF\ncorral run --config {guest_config} --progress lines\n"
            ),
        )?;
        let spec = GuestSpec {
            binaries: self.bins.clone(),
            command: GuestCommand::Script(script),
            env: guest_env(),
        };
        let run = vm::run(self.kernel()?, &spec, &args.guest.options())?;
        eprintln!("demo: {}", run.outcome);
        Ok(run.outcome.exit_code())
    }

    fn run_host_bench(&self, quick: bool, enforce: bool, invoke: bool) -> Result<i32> {
        use xtask::bench::host::{self, Part};
        let corral = self
            .bins
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "corral"))
            .context("the plan built no corral binary for the benchmark")?;
        let parts: Vec<Part> = [(enforce, Part::Enforce), (invoke, Part::Invoke)]
            .into_iter()
            .filter_map(|(on, p)| on.then_some(p))
            .collect();
        let report_path = if quick {
            bench::quick_report_path()
        } else {
            bench::report_path()
        };
        for part in &parts {
            let figures = host::run_part(corral, *part, quick)?;
            bench::merge_report_prefixes(&report_path, part.prefixes(), figures)?;
        }
        let report: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&report_path)?)
                .with_context(|| format!("parsing {}", report_path.display()))?;
        eprintln!("bench: figures merged into {}", report_path.display());
        for v in host::goals(&report) {
            let mark = match v.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            eprintln!("bench: goal {mark}: {} ({})", v.goal, v.detail);
        }
        if !quick {
            let doc = host::doc_path();
            let text = std::fs::read_to_string(&doc)
                .with_context(|| format!("reading {}", doc.display()))?;
            let mut body = host::markdown(&report);
            if let Some((alt, file)) = host::plots(&report, &bench::plot::dir())? {
                body.push_str(&format!("\n![{alt}](bench/{file})\n"));
            }
            let text = host::splice(&text, "host-bench", &body);
            std::fs::write(&doc, text).with_context(|| format!("writing {}", doc.display()))?;
            eprintln!("bench: {} regenerated (section host-bench)", doc.display());
        }
        Ok(0)
    }

    fn run_remap(&self, quick: bool) -> Result<i32> {
        use xtask::bench::{host, remap};
        let report_path = if quick {
            bench::quick_report_path()
        } else {
            bench::report_path()
        };
        let status = remap::run(self.kernel()?, &self.bins, quick, &report_path)?;
        if !quick {
            let report: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(&report_path)?)
                    .with_context(|| format!("parsing {}", report_path.display()))?;
            for line in remap::goal_lines(&report) {
                eprintln!("bench: goal {}", line.trim_start_matches("- "));
            }
            let doc = host::doc_path();
            let text = std::fs::read_to_string(&doc)
                .with_context(|| format!("reading {}", doc.display()))?;
            let text = host::splice(&text, "remap-bench", &remap::markdown(&report));
            std::fs::write(&doc, text).with_context(|| format!("writing {}", doc.display()))?;
            eprintln!("bench: {} regenerated (section remap-bench)", doc.display());
        }
        Ok(status)
    }

    fn run_isolation(&self, smoke: bool) -> Result<i32> {
        let default_args = IsolationArgs {
            smoke,
            runs: None,
            samples: None,
            timeout: 3600,
        };
        let args = match self.task {
            Task::Bench(BenchArgs {
                which: Some(BenchCommand::Isolation(args)),
                ..
            }) => args,
            Task::Bench(BenchArgs { which: None, .. }) => &default_args,
            _ => unreachable!("IsolationBench is planned for the bench tasks only"),
        };
        let mut params = if smoke {
            isolation::Params::smoke()
        } else {
            isolation::Params::full()
        };
        if let Some(runs) = args.runs {
            params.runs = runs;
        }
        if let Some(samples) = args.samples {
            params.samples = samples;
        }
        params.timeout = Duration::from_secs(args.timeout);
        let mut binaries = self.bins.clone();
        if params.variants.contains(&isolation::Variant::Layered) {
            binaries.push(bench::scx_layered_path());
        }
        isolation::run(self.kernel()?, &binaries, &params)
    }
}

fn guest_env() -> Vec<(String, String)> {
    let mut env = vec![("RUST_BACKTRACE".to_owned(), "1".to_owned())];
    if let Ok(secs) = std::env::var("CORRAL_VM_STRESS_SECS") {
        env.push(("CORRAL_VM_STRESS_SECS".to_owned(), secs));
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        env.push(("RUST_LOG".to_owned(), filter));
    }
    env
}

fn demo_config(args: &DemoArgs) -> PathBuf {
    if args.config.is_absolute() {
        args.config.clone()
    } else {
        xtask::workspace_root().join(&args.config)
    }
}

fn host_runs_sched_ext() -> bool {
    Path::new("/sys/kernel/sched_ext/state").exists()
}
