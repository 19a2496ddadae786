//! Builds the test guest's initramfs: a static busybox, the requested binaries with the shared
//! libraries `ldd` names (at the same paths), the kernel's config at `/boot/config-<release>`,
//! and an init script that mounts what corral needs, runs one command, and prints the sentinel
//! line the host reads the outcome from.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::kernel::VmKernel;

/// Where the requested binaries go in the guest; it leads the guest's PATH.
pub const GUEST_BIN_DIR: &str = "/corral/bin";
/// The guest command's working directory (a tmpfs).
pub const GUEST_WORK_DIR: &str = "/tmp";
/// The prefix of the sentinel line; the full line is `<prefix> <nonce> <status>`.
pub const SENTINEL_PREFIX: &str = "CORRAL-VM-EXIT";
/// The line init prints once the system is up, just before it runs the guest command. A failure
/// before it is a failed boot, not a failed command.
pub const READY_MARKER: &str = "init: guest ready";

/// What the guest runs.
#[derive(Debug, Clone)]
pub enum GuestCommand {
    /// A program and its arguments, run as given (looked up on PATH).
    Argv(Vec<String>),
    /// A shell script from the host, run with the guest's busybox sh.
    Script(PathBuf),
}

/// Everything that goes into one guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Host binaries to copy into [`GUEST_BIN_DIR`], with their libraries.
    pub binaries: Vec<PathBuf>,
    /// The command the init runs once the system is up.
    pub command: GuestCommand,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
}

/// Builds the initramfs for `spec` at `out`; `nonce` makes the sentinel unforgeable by output
/// that merely looks like it.
pub fn build(spec: &GuestSpec, kernel: &VmKernel, nonce: &str, out: &Path) -> Result<()> {
    let root = out.with_extension("d");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "etc",
        "boot",
        "corral/bin",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }

    let busybox = find_busybox()?;
    copy_file(&busybox, &root.join("bin/busybox"))?;
    fs::copy(
        &kernel.config,
        root.join(format!("boot/config-{}", kernel.release)),
    )
    .context("copying the kernel config into the initramfs")?;
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;

    let mut binaries = spec.binaries.clone();
    if let Some(bpftool) = find_on_path("bpftool") {
        binaries.push(bpftool);
    }
    for bin in &binaries {
        let name = bin
            .file_name()
            .with_context(|| format!("{} has no file name", bin.display()))?;
        let dest = root.join("corral/bin").join(name);
        strip_into(bin, &dest)?;
        for lib in shared_libraries(bin)? {
            let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
            if !dest.exists() {
                fs::create_dir_all(dest.parent().expect("library path has a parent"))?;
                copy_file(&lib, &dest)?;
            }
        }
    }

    let command = match &spec.command {
        GuestCommand::Argv(argv) => {
            ensure!(!argv.is_empty(), "no guest command given");
            argv.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        }
        GuestCommand::Script(path) => {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading guest script {}", path.display()))?;
            fs::write(root.join("corral/script.sh"), text)?;
            "/bin/sh /corral/script.sh".to_owned()
        }
    };
    let env: String = spec
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect();
    let init = INIT_TEMPLATE
        .replace("@ENV@", &env)
        .replace("@COMMAND@", &command)
        .replace("@SENTINEL@", &format!("{SENTINEL_PREFIX} {nonce}"))
        .replace("@READY@", READY_MARKER)
        .replace("@BIN@", GUEST_BIN_DIR)
        .replace("@WORK@", GUEST_WORK_DIR);
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;

    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .context("running cpio (install it with `cargo xtask setup`)")?;
    ensure!(
        status.success(),
        "packing the initramfs with cpio failed with {status}"
    );
    fs::remove_dir_all(&root).ok();
    Ok(())
}

/// The guest's init. It runs as PID 1 under busybox sh.
const INIT_TEMPLATE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=@BIN@:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "init: mounting cgroup2 failed"
echo "+cpu +cpuset" > /sys/fs/cgroup/cgroup.subtree_control || echo "init: enabling +cpu +cpuset failed"
mount -t bpf bpf /sys/fs/bpf || echo "init: mounting bpffs failed"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up 2>/dev/null
export HOME=/root
export CORRAL_IN_VM=1
@ENV@
cd @WORK@
echo "@READY@: $(uname -r), $(nproc) CPUs; running the guest command"
@COMMAND@ </dev/null
rc=$?
sync
echo "@SENTINEL@ $rc"
reboot -f
"#;

fn find_busybox() -> Result<PathBuf> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(candidate);
        if path.is_file() {
            let out = Command::new("ldd").arg(path).output();
            let is_static = out
                .map(|o| {
                    !o.status.success()
                        || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
                })
                .unwrap_or(true);
            if is_static {
                return Ok(path.to_path_buf());
            }
        }
    }
    bail!("no static busybox at /bin/busybox: install busybox-static (`cargo xtask setup`)")
}

/// Looks a program up on PATH, plus the sbin directories a non-root PATH may lack.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

/// The shared libraries `ldd` names for `bin`, the dynamic loader among them.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // `libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    ensure!(
        !libs.is_empty(),
        "ldd named no libraries for dynamic {}:\n{text}",
        bin.display()
    );
    Ok(libs)
}

/// Copies a binary without its debug sections (test binaries carry hundreds of MiB of DWARF,
/// which the guest would have to unpack into RAM); falls back to a plain copy.
fn strip_into(src: &Path, dest: &Path) -> Result<()> {
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(dest)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !stripped {
        copy_file(src, dest)?;
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn copy_file(src: &Path, dest: &Path) -> Result<()> {
    fs::copy(src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    Ok(())
}

/// Quotes a word for POSIX sh.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    /// Arguments with spaces or quotes reach the guest command intact.
    #[test]
    fn shell_quote_keeps_words_intact() {
        assert_eq!(shell_quote("plain"), "plain");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
