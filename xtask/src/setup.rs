//! Sets the machine up for building and for the test VM: the Debian packages, bpffs, and the
//! sched_ext kernel (through [`crate::kernel`]).
//!
//! Idempotent: [`check`] asks dpkg which packages are present, reads `/proc/mounts` and looks
//! for the kernel, and [`run`] installs, mounts or downloads only what is missing, saying what
//! and why before it does. With everything present it prints one line and returns. It uses
//! `sudo` when not root, and never edits the system's apt configuration.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernel::{self, VmKernel};

/// What [`check`] found missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Packages of [`PACKAGES`] that dpkg does not report as installed.
    pub packages: Vec<&'static str>,
    /// bpffs is not mounted at /sys/fs/bpf.
    pub bpffs: bool,
    /// Why no VM kernel was found, when one was asked for and none was.
    pub vm_kernel: Option<String>,
}

impl Missing {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && !self.bpffs && self.vm_kernel.is_none()
    }

    /// One line per thing setup will do about it.
    pub fn actions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in &self.packages {
            let why = PACKAGES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, w)| *w)
                .unwrap_or("");
            out.push(format!("install the Debian package {name} ({why})"));
        }
        if self.bpffs {
            out.push("mount bpffs at /sys/fs/bpf (corral pins its maps there)".to_owned());
        }
        if let Some(why) = &self.vm_kernel {
            out.push(format!("obtain the sched_ext kernel for the guest ({why})"));
        }
        out
    }
}

/// Finds what is missing, without changing anything. `vm_kernel`: the task needs the guest's
/// kernel.
pub fn check(vm_kernel: bool) -> Result<Missing> {
    Ok(Missing {
        packages: missing_packages()?,
        bpffs: !bpffs_mounted()?,
        vm_kernel: if vm_kernel {
            kernel::find().err().map(|e| format!("{e:#}"))
        } else {
            None
        },
    })
}

/// The whole setup: checks, then installs, mounts or downloads what is missing, having said what.
/// Returns the VM kernel when `vm_kernel` asked for it.
pub fn run(vm_kernel: bool) -> Result<Option<VmKernel>> {
    let missing = check(vm_kernel)?;
    if missing.is_empty() {
        let kernel = if vm_kernel {
            Some(kernel::find()?)
        } else {
            None
        };
        eprintln!(
            "setup: everything present ({} packages, bpffs{})",
            PACKAGES.len(),
            kernel
                .as_ref()
                .map(|k| format!(", kernel {}", k.release))
                .unwrap_or_default()
        );
        return Ok(kernel);
    }
    eprintln!("setup: before anything is built, setup will:");
    for action in missing.actions() {
        eprintln!("setup:   - {action}");
    }
    if !missing.packages.is_empty() {
        install_packages()?;
    }
    if missing.bpffs {
        ensure_bpffs()?;
    }
    if vm_kernel {
        return kernel::ensure().map(Some);
    }
    Ok(None)
}

/// The packages the build and the VM need, with why each is needed.
pub const PACKAGES: &[(&str, &str)] = &[
    (
        "clang-19",
        "compiles the BPF scheduler (scx_cargo needs clang >= 18)",
    ),
    ("llvm-19", "llvm-strip for the BPF object"),
    ("libelf-dev", "libbpf links against libelf"),
    ("zlib1g-dev", "libbpf links against zlib"),
    ("pkg-config", "locates libelf and zlib for libbpf-sys"),
    ("qemu-system-x86", "boots the sched_ext test guest"),
    (
        "busybox-static",
        "the guest's shell and tools, and the containerd tests' root file system",
    ),
    ("cpio", "packs the guest's initramfs"),
    ("bpftool", "dumps the pinned maps in tests and in the guest"),
    (
        "protobuf-compiler",
        "protoc, which containerd-client's build script runs on containerd's API",
    ),
    (
        "containerd",
        "the containerd container backend, and the daemon its host tests start",
    ),
    (
        "runc",
        "the OCI runtime containerd's runc shim runs tasks with",
    ),
];

/// Returns the packages of [`PACKAGES`] that dpkg does not report as installed.
pub fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for (name, _) in PACKAGES {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", name])
            .output()
            .context("running dpkg-query (is this a Debian system?)")?;
        let status = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !status.contains("install ok installed") {
            missing.push(*name);
        }
    }
    Ok(missing)
}

/// Installs whatever is missing from [`PACKAGES`]; prints what it does, and nothing else happens
/// when all are present.
pub fn install_packages() -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        eprintln!(
            "setup: system packages present ({} checked)",
            PACKAGES.len()
        );
        return Ok(());
    }
    for name in &missing {
        let why = PACKAGES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| *w)
            .unwrap_or("");
        eprintln!("setup: installing {name}: {why}");
    }
    // A fresh machine may carry stale package lists: try once, update, then try again.
    if apt_get(&["install", "-y", "--no-install-recommends"], &missing).is_err() {
        eprintln!("setup: install failed; refreshing the package lists and retrying");
        apt_get(&["update"], &[])?;
        apt_get(&["install", "-y", "--no-install-recommends"], &missing)?;
    }
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get reported success but these packages are still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf when it is not mounted, so the host can pin corral's maps (the
/// host tests create real pinned maps even though the host kernel cannot run sched_ext).
pub fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted()? {
        eprintln!("setup: bpffs mounted at /sys/fs/bpf");
        return Ok(());
    }
    eprintln!("setup: mounting bpffs at /sys/fs/bpf (corral pins its maps there)");
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        Command::new("mount")
    } else {
        Command::new("sudo")
    };
    if !root {
        cmd.arg("mount");
    }
    let status = cmd
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context("running mount -t bpf")?;
    if !status.success() {
        bail!(
            "mount -t bpf bpf /sys/fs/bpf failed with {status}; corral needs bpffs to pin its maps"
        );
    }
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")))
}

fn apt_get(args: &[&str], packages: &[&str]) -> Result<()> {
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    cmd.args(args)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let status = cmd.status().with_context(|| {
        format!(
            "running apt-get {}{}",
            args.join(" "),
            if root { "" } else { " through sudo" }
        )
    })?;
    if !status.success() {
        bail!(
            "apt-get {} {} failed with {status}",
            args.join(" "),
            packages.join(" ")
        );
    }
    Ok(())
}
