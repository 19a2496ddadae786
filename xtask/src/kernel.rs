//! The sched_ext-capable kernel the test guest boots.
//!
//! Where it comes from, in order:
//! 1. `CORRAL_VM_KERNEL_DIR`, a directory holding `vmlinuz-<release>` and `config-<release>`;
//! 2. the cache under `target/vm-kernel/`, filled by [`download_debian_cloud_kernel`] from Debian
//!    unstable's current cloud kernel through apt with a private configuration and state
//!    directory, so the system's apt sources and state are never touched.
//!
//! Either way the kernel's config must say `CONFIG_SCHED_CLASS_EXT=y`; any other kernel is
//! refused, because every VM test needs sched_ext.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The environment variable naming a directory with a ready kernel.
pub const KERNEL_DIR_ENV: &str = "CORRAL_VM_KERNEL_DIR";

/// The Debian metapackage whose dependency names the current cloud kernel.
const CLOUD_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// A kernel image with its config, ready to boot.
#[derive(Debug, Clone)]
pub struct VmKernel {
    /// The bzImage to pass to qemu's `-kernel`.
    pub vmlinuz: PathBuf,
    /// The kernel's config; it goes into the guest at `/boot/config-<release>`, where libbpf
    /// resolves `__kconfig` externs (this kernel has no `/proc/config.gz`).
    pub config: PathBuf,
    /// The release string, as `uname -r` prints it in the guest.
    pub release: String,
}

/// Where the downloaded kernel is cached.
pub fn cache_dir() -> PathBuf {
    crate::target_dir().join("vm-kernel")
}

/// Finds the kernel without downloading: `CORRAL_VM_KERNEL_DIR` if set, else the cache.
///
/// Fails with the fix when neither holds a kernel.
pub fn find() -> Result<VmKernel> {
    if let Some(dir) = std::env::var_os(KERNEL_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return from_dir(&dir).with_context(|| format!("{KERNEL_DIR_ENV}={}", dir.display()));
    }
    let cache = cache_dir();
    from_dir(&cache).with_context(|| {
        format!(
            "no sched_ext kernel in {}: run `cargo xtask setup` to download one, \
             or set {KERNEL_DIR_ENV} to a directory holding vmlinuz-* and config-*",
            cache.display()
        )
    })
}

/// Finds or downloads the kernel, then verifies it.
pub fn ensure() -> Result<VmKernel> {
    if std::env::var_os(KERNEL_DIR_ENV).is_some() {
        let kernel = find()?;
        eprintln!("setup: kernel {} from {KERNEL_DIR_ENV}", kernel.release);
        return Ok(kernel);
    }
    if let Ok(kernel) = from_dir(&cache_dir()) {
        eprintln!(
            "setup: kernel {} cached in {}",
            kernel.release,
            cache_dir().display()
        );
        return Ok(kernel);
    }
    download_debian_cloud_kernel(&cache_dir())?;
    from_dir(&cache_dir())
}

/// Reads a kernel directory: exactly one `vmlinuz-<release>` with a matching `config-<release>`,
/// whose config enables sched_ext.
pub fn from_dir(dir: &Path) -> Result<VmKernel> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut images = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            images.push(release.to_owned());
        }
    }
    images.sort();
    let release = match images.as_slice() {
        [] => bail!("no vmlinuz-<release> file in {}", dir.display()),
        [one] => one.clone(),
        many => bail!(
            "{} holds several kernels ({}); keep one vmlinuz-<release>",
            dir.display(),
            many.join(", ")
        ),
    };
    let vmlinuz = dir.join(format!("vmlinuz-{release}"));
    let config = dir.join(format!("config-{release}"));
    ensure!(
        config.is_file(),
        "{} has vmlinuz-{release} but no config-{release}; the guest needs the config at \
         /boot/config-{release} for libbpf's __kconfig externs",
        dir.display()
    );
    verify_sched_ext(&config)?;
    Ok(VmKernel {
        vmlinuz,
        config,
        release,
    })
}

/// Refuses a kernel whose config lacks `CONFIG_SCHED_CLASS_EXT=y`.
pub fn verify_sched_ext(config: &Path) -> Result<()> {
    let text =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    if text.lines().any(|l| l.trim() == "CONFIG_SCHED_CLASS_EXT=y") {
        return Ok(());
    }
    let found = text
        .lines()
        .find(|l| l.contains("CONFIG_SCHED_CLASS_EXT"))
        .unwrap_or("no CONFIG_SCHED_CLASS_EXT line");
    bail!(
        "{} does not enable sched_ext ({found}); corral's VM tests need a kernel built with \
         CONFIG_SCHED_CLASS_EXT=y",
        config.display()
    )
}

/// Downloads Debian unstable's current cloud kernel into `dest` as `vmlinuz-<release>` and
/// `config-<release>`.
///
/// It uses a private apt configuration (sources list, state and cache under `dest/apt`), with
/// the Debian mirror the system itself uses, so a user's mirror or proxy is respected and the
/// system's apt state is untouched.
pub fn download_debian_cloud_kernel(dest: &Path) -> Result<()> {
    let mirror = system_debian_mirror()?;
    let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    ensure!(
        keyring.is_file(),
        "{} is missing: install the debian-archive-keyring package",
        keyring.display()
    );
    let apt = dest.join("apt");
    for sub in [
        "state/lists/partial",
        "cache/archives/partial",
        "download",
        "unpack",
    ] {
        fs::create_dir_all(apt.join(sub))
            .with_context(|| format!("creating {}", apt.join(sub).display()))?;
    }
    let sources = apt.join("sources.list");
    fs::write(
        &sources,
        format!(
            "deb [signed-by={}] {mirror} unstable main\n",
            keyring.display()
        ),
    )?;
    let options = |cmd: &mut Command| {
        cmd.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", sources.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State={}", apt.join("state").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "Dir::State::status=/dev/null"])
            .args(["-o", "Debug::NoLocking=1"])
            // The private directories belong to the caller; apt's _apt sandbox user cannot write them.
            .args(["-o", "APT::Sandbox::User=root"]);
    };

    eprintln!(
        "setup: downloading the sched_ext kernel: reading Debian unstable's index from {mirror}"
    );
    let mut update = Command::new("apt-get");
    options(&mut update);
    run(
        update.args(["-q", "update"]),
        "apt-get update (private configuration)",
    )?;

    let mut depends = Command::new("apt-cache");
    options(&mut depends);
    let out = depends
        .args(["depends", CLOUD_METAPACKAGE])
        .output()
        .context("running apt-cache depends")?;
    ensure!(
        out.status.success(),
        "apt-cache depends {CLOUD_METAPACKAGE} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let release = cloud_release_from_depends(&String::from_utf8_lossy(&out.stdout))?;
    let version = release
        .strip_suffix("-cloud-amd64")
        .unwrap_or(&release)
        .to_owned();
    eprintln!("setup: current cloud kernel is {release}; downloading its image and config");

    let download = apt.join("download");
    let mut get = Command::new("apt-get");
    options(&mut get);
    get.current_dir(&download)
        .args(["-q", "download"])
        .arg(format!("linux-binary-{version}-cloud-amd64"))
        .arg(format!("linux-base-{version}-cloud-amd64"));
    run(&mut get, "apt-get download")?;

    let unpack = apt.join("unpack");
    for entry in fs::read_dir(&download)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack),
                "dpkg-deb -x",
            )?;
        }
    }
    let moddir = unpack.join("usr/lib/modules").join(&release);
    let vmlinuz = moddir.join("vmlinuz");
    let config = moddir.join("config");
    ensure!(
        vmlinuz.is_file() && config.is_file(),
        "the downloaded packages hold no {} and {}; Debian's layout may have changed",
        vmlinuz.display(),
        config.display()
    );
    verify_sched_ext(&config)?;
    fs::copy(&vmlinuz, dest.join(format!("vmlinuz-{release}")))?;
    fs::copy(&config, dest.join(format!("config-{release}")))?;
    fs::remove_dir_all(&apt).ok();
    eprintln!("setup: kernel {release} cached in {}", dest.display());
    Ok(())
}

/// Picks `linux-image-<release>` out of `apt-cache depends linux-image-cloud-amd64`.
fn cloud_release_from_depends(text: &str) -> Result<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .filter_map(|dep| dep.trim().strip_prefix("linux-image-"))
        .find(|rest| {
            rest.ends_with("-cloud-amd64") && rest.starts_with(|c: char| c.is_ascii_digit())
        })
        .map(str::to_owned)
        .with_context(|| format!("no versioned linux-image dependency in:\n{text}"))
}

/// The URI of the Debian archive in the system's own apt sources (one-line or deb822 format).
fn system_debian_mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        extra.sort();
        files.extend(extra);
    }
    for file in files {
        let name = file.to_string_lossy();
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let found = if name.ends_with(".sources") {
            mirror_from_deb822(&text)
        } else if name.ends_with(".list") {
            mirror_from_one_line(&text)
        } else {
            None
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    bail!(
        "found no Debian archive in /etc/apt/sources.list or /etc/apt/sources.list.d; \
         set {KERNEL_DIR_ENV} to a directory holding a sched_ext kernel instead"
    )
}

fn is_debian_archive(uri: &str, suites: &str) -> bool {
    !suites.contains("security")
        && (uri.trim_end_matches('/').ends_with("/debian") || suites.contains("debian"))
}

fn mirror_from_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("deb ")?;
        // Drop an `[options]` block if present.
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(r) => r.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        let suite = words.next()?;
        is_debian_archive(uri, suite).then(|| uri.to_owned())
    })
}

fn mirror_from_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        };
        if field("Types:").is_some_and(|t| !t.split_whitespace().any(|t| t == "deb")) {
            return None;
        }
        if field("Enabled:").is_some_and(|e| e == "no") {
            return None;
        }
        let uris = field("URIs:")?;
        let suites = field("Suites:").unwrap_or_default();
        uris.split_whitespace()
            .find(|uri| is_debian_archive(uri, &suites))
            .map(str::to_owned)
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    ensure!(status.success(), "{what} failed with {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versioned image is taken from the metapackage's dependencies, not the base package.
    #[test]
    fn release_is_read_from_metapackage_depends() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-base-cloud-amd64\n  \
                    Depends: linux-image-7.2.13+deb14-cloud-amd64\n";
        assert_eq!(
            cloud_release_from_depends(text).unwrap(),
            "7.2.13+deb14-cloud-amd64"
        );
        assert!(cloud_release_from_depends("linux-image-cloud-amd64\n").is_err());
    }

    /// Both apt source formats yield the archive URI, and security suites are skipped.
    #[test]
    fn mirror_is_read_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_from_deb822(deb822).unwrap(),
            "http://mirror.example/debian"
        );
        let list = "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_one_line(list).unwrap(),
            "http://mirror.example/debian"
        );
    }

    /// A kernel without sched_ext is refused, naming the config line it found.
    #[test]
    fn kernel_without_sched_ext_is_refused() {
        let dir = std::env::temp_dir().join(format!("corral-kernel-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinuz-6.1.0-test"), b"not a kernel").unwrap();
        fs::write(
            dir.join("config-6.1.0-test"),
            "# CONFIG_SCHED_CLASS_EXT is not set\n",
        )
        .unwrap();
        let err = from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("does not enable sched_ext"), "{err}");
        assert!(err.contains("is not set"), "{err}");
        fs::write(dir.join("config-6.1.0-test"), "CONFIG_SCHED_CLASS_EXT=y\n").unwrap();
        assert_eq!(from_dir(&dir).unwrap().release, "6.1.0-test");
        fs::remove_dir_all(&dir).unwrap();
    }
}
