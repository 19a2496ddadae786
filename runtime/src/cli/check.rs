//! `corral check`: diagnoses this machine for corral and gives the fix for each problem.
//!
//! It checks what loading the scheduler needs (sched_ext, BTF, the kernel config for libbpf,
//! privileges), what pinning the maps needs (bpffs), and what the `local` containers and the
//! `cpuset` fallback need (cgroup v2 with the cpuset controller, or the v1 cpuset hierarchy).

use std::path::Path;

use anyhow::Result;
use clap::Args;
use corral_actors::bpf_loader::SchedExtSupport;

/// Diagnose this machine: sched_ext, BTF, bpffs, cgroup controllers, privileges.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The bpffs directory corral pins its maps in.
    #[arg(long, default_value = corral_bpf::DEFAULT_PIN_DIR)]
    pub pin_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Finding {
    level: Level,
    what: &'static str,
    detail: String,
    fix: Option<String>,
}

pub fn run(args: CheckArgs) -> Result<i32> {
    let findings = diagnose(&args.pin_dir);
    for f in &findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("[{tag}] {:<22} {}", f.what, f.detail);
        if let Some(fix) = &f.fix {
            println!("       {:<22} fix: {fix}", "");
        }
    }
    let support = SchedExtSupport::probe();
    let failed = findings.iter().any(|f| f.level == Level::Fail);
    println!();
    if support.available() && !failed {
        println!("corral can enforce groups with the sched_ext scheduler (map backend `bpf`).");
    } else if cpuset_available() {
        println!(
            "corral cannot load its scheduler here; it will enforce groups with cpuset \
             (map backend `cpuset`) until the problems above are fixed."
        );
    } else {
        println!("corral can neither load its scheduler nor fall back to cpuset here.");
    }
    Ok(if failed { 1 } else { 0 })
}

fn diagnose(pin_dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let support = SchedExtSupport::probe();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();

    out.push(if support.kernel {
        let state = std::fs::read_to_string("/sys/kernel/sched_ext/state")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        match (state.as_str(), ops.as_str()) {
            ("enabled", ops) if !ops.is_empty() && ops != "corral" => Finding {
                level: Level::Warn,
                what: "sched_ext",
                detail: format!("another scheduler, `{ops}`, is attached"),
                fix: Some(format!("stop `{ops}` before `corral sched`; only one sched_ext scheduler runs at a time")),
            },
            _ => Finding {
                level: Level::Ok,
                what: "sched_ext",
                detail: format!("kernel {release} supports it (state: {state}{})", if ops.is_empty() { String::new() } else { format!(", ops: {ops}") }),
                fix: None,
            },
        }
    } else {
        Finding {
            level: Level::Fail,
            what: "sched_ext",
            detail: format!("kernel {release} lacks CONFIG_SCHED_CLASS_EXT (/sys/kernel/sched_ext is missing)"),
            fix: Some("boot a 6.12+ kernel built with CONFIG_SCHED_CLASS_EXT=y (Debian's cloud kernel in unstable has it); `cargo xtask demo` runs in a VM meanwhile".into()),
        }
    });

    out.push(if support.btf {
        Finding {
            level: Level::Ok,
            what: "BTF",
            detail: "/sys/kernel/btf/vmlinux present".into(),
            fix: None,
        }
    } else {
        Finding {
            level: Level::Fail,
            what: "BTF",
            detail: "/sys/kernel/btf/vmlinux is missing".into(),
            fix: Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y".into()),
        }
    });

    let boot_config = format!("/boot/config-{release}");
    out.push(if Path::new("/proc/config.gz").exists() || Path::new(&boot_config).exists() {
        Finding { level: Level::Ok, what: "kernel config", detail: "readable for libbpf's __kconfig externs".into(), fix: None }
    } else {
        Finding {
            level: if support.kernel { Level::Fail } else { Level::Warn },
            what: "kernel config",
            detail: format!("neither /proc/config.gz nor {boot_config} exists; libbpf cannot resolve the scheduler's __kconfig externs"),
            fix: Some(format!("install the kernel's config at {boot_config}")),
        }
    });

    out.push(if support.privileged {
        Finding { level: Level::Ok, what: "privileges", detail: "running as root".into(), fix: None }
    } else {
        Finding {
            level: Level::Fail,
            what: "privileges",
            detail: "not root: loading a scheduler and writing its maps need CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN".into(),
            fix: Some("run corral as root (or with those capabilities)".into()),
        }
    });

    out.push(match mount_of_type("bpf", "/sys/fs/bpf") {
        true => Finding {
            level: Level::Ok,
            what: "bpffs",
            detail: format!(
                "mounted at /sys/fs/bpf; maps pin under {}{}",
                pin_dir.display(),
                if pin_dir.exists() {
                    " (present)"
                } else {
                    " (not created yet)"
                }
            ),
            fix: None,
        },
        false => Finding {
            level: Level::Fail,
            what: "bpffs",
            detail: "no bpf filesystem at /sys/fs/bpf".into(),
            fix: Some("mount -t bpf bpf /sys/fs/bpf".into()),
        },
    });

    match cgroup2_root() {
        Some(root) => {
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let subtree =
                std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
            let has = |text: &str, c: &str| text.split_whitespace().any(|w| w == c);
            out.push(if has(&subtree, "cpuset") && has(&subtree, "cpu") {
                Finding {
                    level: Level::Ok,
                    what: "cgroup v2",
                    detail: format!("{} with cpu and cpuset enabled for children", root.display()),
                    fix: None,
                }
            } else if has(&controllers, "cpuset") {
                Finding {
                    level: Level::Warn,
                    what: "cgroup v2",
                    detail: format!("{} offers cpuset but does not enable it for children (subtree_control: `{}`)", root.display(), subtree.trim()),
                    fix: Some(format!("echo '+cpu +cpuset' > {}/cgroup.subtree_control", root.display())),
                }
            } else {
                Finding {
                    level: Level::Warn,
                    what: "cgroup v2",
                    detail: format!("{} has no cpuset controller (controllers: `{}`); it is bound to the v1 hierarchy", root.display(), controllers.trim()),
                    fix: Some("boot with cgroup_no_v1=all or systemd.unified_cgroup_hierarchy=1 for a pure v2 host; the cpuset fallback uses v1 meanwhile".into()),
                }
            });
        }
        None => out.push(Finding {
            level: Level::Fail,
            what: "cgroup v2",
            detail: "no cgroup2 filesystem is mounted; sched_ext maps cgroup ids of v2 directories"
                .into(),
            fix: Some(
                "mount -t cgroup2 none /sys/fs/cgroup (or /sys/fs/cgroup/unified on a hybrid host)"
                    .into(),
            ),
        }),
    }

    out.push(if cpuset_available() {
        Finding { level: Level::Ok, what: "cpuset fallback", detail: "available (v2 cpuset or the v1 cpuset hierarchy)".into(), fix: None }
    } else {
        Finding {
            level: Level::Warn,
            what: "cpuset fallback",
            detail: "neither v2 cpuset nor a v1 cpuset hierarchy is available".into(),
            fix: Some("enable cpuset in cgroup.subtree_control, or mount -t cgroup -o cpuset cpuset /sys/fs/cgroup/cpuset".into()),
        }
    });
    out
}

fn mounts() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let _dev = w.next()?;
            let dir = w.next()?.to_owned();
            let fstype = w.next()?.to_owned();
            Some((dir, fstype))
        })
        .collect()
}

fn mount_of_type(fstype: &str, dir: &str) -> bool {
    mounts().iter().any(|(d, t)| d == dir && t == fstype)
}

/// The first cgroup2 mount (`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one).
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    corral::config::cgroup2_mount()
}

fn cpuset_available() -> bool {
    let v2 = cgroup2_root()
        .and_then(|r| std::fs::read_to_string(r.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|w| w == "cpuset"));
    v2 || Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").exists()
}
