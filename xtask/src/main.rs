//! `cargo xtask`: corral's one-command setup, VM harness, test runner and demo.
//!
//! - `cargo xtask setup`: installs the system packages and obtains the sched_ext kernel.
//! - `cargo xtask vm -- <command>` / `--script <file>`: runs a command in the sched_ext guest.
//! - `cargo xtask test`: setup, host tests, then the VM test suite in the guest.
//! - `cargo xtask demo`: the main job, `corral run examples/demo.toml`, on the host when it runs
//!   sched_ext and in the guest otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use xtask::initramfs::{GuestCommand, GuestSpec};
use xtask::vm::{self, VmOptions};
use xtask::{cargo, kernel, setup};

/// corral's developer tasks: setup, the VM harness, the test suite and the demo.
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
    /// Idempotent: does nothing when everything is present. The kernel comes from
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
    /// Skip setup and the host tests; run only the VM suite.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => run_setup().map(|_| 0),
        Task::Vm(args) => run_vm(args),
        Task::Test(args) => run_test(args),
        Task::Demo(args) => run_demo(args),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_setup() -> Result<kernel::VmKernel> {
    setup::install_packages()?;
    setup::ensure_bpffs()?;
    kernel::ensure()
}

fn guest_env() -> Vec<(String, String)> {
    let mut env = vec![("RUST_BACKTRACE".to_owned(), "1".to_owned())];
    if let Ok(filter) = std::env::var("RUST_LOG") {
        env.push(("RUST_LOG".to_owned(), filter));
    }
    env
}

fn run_vm(args: VmArgs) -> Result<i32> {
    let kernel = kernel::find()?;
    let command = match (&args.script, args.command.is_empty()) {
        (Some(script), _) => GuestCommand::Script(script.clone()),
        (None, false) => GuestCommand::Argv(args.command.clone()),
        (None, true) => bail!("give a guest command after `--`, or --script <file>"),
    };
    let mut binaries = Vec::new();
    if !args.no_build {
        eprintln!("xtask vm: building the workspace's binaries for the guest");
        binaries = cargo::build_workspace_bins()?;
    }
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
    let run = vm::run(&kernel, &spec, &args.guest.options())?;
    eprintln!(
        "xtask vm: {} ({:.1}s)",
        run.outcome,
        run.elapsed.as_secs_f64()
    );
    Ok(run.outcome.exit_code())
}

/// One phase of `cargo xtask test`, for the closing summary.
struct Phase {
    name: &'static str,
    elapsed: Duration,
    ok: bool,
}

fn run_test(args: TestArgs) -> Result<i32> {
    let mut phases = Vec::new();
    let mut timed = |name: &'static str, f: &mut dyn FnMut() -> Result<bool>| -> Result<bool> {
        let start = Instant::now();
        eprintln!("xtask test: == {name} ==");
        let ok = f()?;
        phases.push(Phase {
            name,
            elapsed: start.elapsed(),
            ok,
        });
        Ok(ok)
    };

    let mut all_ok = true;
    if !args.vm_only {
        timed("setup", &mut || run_setup().map(|_| true))?;
        all_ok &= timed("host tests (cargo test --workspace)", &mut || {
            let status = cargo::cargo()
                .args(["test", "--workspace", "--no-fail-fast"])
                .status()?;
            Ok(status.success())
        })?;
    }
    if !args.host_only {
        let kernel = kernel::find()?;
        let mut vm_bins = Vec::new();
        timed("build VM test binary", &mut || {
            vm_bins = cargo::build_workspace_bins()?;
            vm_bins.insert(0, cargo::build_vm_test_binary()?);
            Ok(true)
        })?;
        all_ok &= timed("VM tests (in the sched_ext guest)", &mut || {
            let test_bin = vm_bins[0]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mut argv = vec![test_bin, "--test-threads=1".to_owned()];
            argv.extend(args.vm_args.iter().cloned());
            let spec = GuestSpec {
                binaries: vm_bins.clone(),
                command: GuestCommand::Argv(argv),
                env: guest_env(),
            };
            let run = vm::run(&kernel, &spec, &args.guest.options())?;
            eprintln!("xtask test: VM suite: {}", run.outcome);
            Ok(run.outcome.success())
        })?;
    }

    eprintln!("xtask test: summary");
    for p in &phases {
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
    Ok(if all_ok { 0 } else { 1 })
}

fn run_demo(args: DemoArgs) -> Result<i32> {
    let root = xtask::workspace_root();
    let config = if args.config.is_absolute() {
        args.config.clone()
    } else {
        root.join(&args.config)
    };
    if !config.is_file() {
        bail!(
            "the demo configuration {} does not exist yet: the corral CLI issue adds it",
            config.display()
        );
    }
    let bins = cargo::build_workspace_bins()?;
    let corral = bins
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "corral"))
        .context("the workspace built no `corral` binary")?
        .clone();
    if host_runs_sched_ext() {
        eprintln!("demo: this host runs sched_ext; running the demo here");
        let status = std::process::Command::new(&corral)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .status()?;
        return Ok(status.code().unwrap_or(1));
    }
    eprintln!(
        "demo: this host's kernel has no sched_ext (/sys/kernel/sched_ext is missing), so the demo \
         runs in a {}-vCPU guest under qemu; booting takes a few seconds",
        args.guest.smp
    );
    let kernel = kernel::find().or_else(|_| run_setup())?;
    let guest_config = "/corral/demo.toml";
    let script = root.join("target/vm/demo.sh");
    std::fs::create_dir_all(script.parent().unwrap())?;
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &script,
        format!(
            "cat > {guest_config} <<'CORRAL_DEMO_EOF'\n{text}\nCORRAL_DEMO_EOF\ncorral run --config {guest_config} --progress lines\n"
        ),
    )?;
    let spec = GuestSpec {
        binaries: bins,
        command: GuestCommand::Script(script),
        env: guest_env(),
    };
    let run = vm::run(&kernel, &spec, &args.guest.options())?;
    eprintln!("demo: {}", run.outcome);
    Ok(run.outcome.exit_code())
}

fn host_runs_sched_ext() -> bool {
    Path::new("/sys/kernel/sched_ext/state").exists()
}
