//! Builds workspace binaries and test binaries with cargo, and returns the paths of the
//! executables it produced (read from cargo's JSON messages, never guessed).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

/// The cargo that runs xtask, or `cargo` from PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(crate::workspace_root());
    cmd
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` and returns the executables of
/// the artifacts it reports. Diagnostics go to stderr as usual.
fn executables(args: &[&str]) -> Result<Vec<PathBuf>> {
    let mut child = cargo()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut found = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            if let Some(exe) = msg["executable"].as_str() {
                found.push(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait()?;
    ensure!(
        status.success(),
        "cargo {} failed with {status}",
        args.join(" ")
    );
    Ok(found)
}

/// Builds the binaries of the workspace's product crates (not xtask) and returns their paths.
pub fn build_workspace_bins() -> Result<Vec<PathBuf>> {
    executables(&["build", "--workspace", "--exclude", "xtask", "--bins"])
}

/// Builds the binaries of one workspace package in release mode (benchmarks) and returns their
/// paths.
pub fn build_release_bins(package: &str) -> Result<Vec<PathBuf>> {
    executables(&["build", "--release", "-p", package, "--bins"])
}

/// Builds the VM test binary (`corral-tests`'s `vm` target) without running it.
pub fn build_vm_test_binary() -> Result<PathBuf> {
    let exes = executables(&["test", "-p", "corral-tests", "--test", "vm", "--no-run"])?;
    exes.into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vm-"))
        })
        .context("cargo built no `vm` test executable for corral-tests")
}

/// A tool installed from crates.io with `cargo install --locked` at a pinned version, under a
/// directory of the target directory, and reused while its binary answers that version.
#[derive(Debug)]
pub struct CargoTool<'a> {
    /// The crate (and binary) name.
    pub krate: &'a str,
    /// The pinned version.
    pub version: &'a str,
    /// What the tool is for, in progress lines ("the peer scheduler scx_layered").
    pub what: &'a str,
    /// The prefix of progress lines (`bench`, `fuzz`).
    pub prefix: &'a str,
    /// `cargo install --root`: the binary lands in `<root>/bin`.
    pub root: PathBuf,
    /// `cargo install --target-dir`.
    pub build_dir: PathBuf,
    /// Arguments that make the binary print its version (`--version`; `fuzz --version` for a
    /// cargo subcommand).
    pub version_args: &'a [&'a str],
    /// How long the install takes, for the progress line.
    pub takes: &'a str,
    /// What fails without it, for the error.
    pub needed_by: &'a str,
    /// Extra environment for the build.
    pub env: Vec<(String, String)>,
}

impl CargoTool<'_> {
    /// The installed binary's path.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin").join(self.krate)
    }

    /// The binary, installed first when it is missing or answers another version.
    pub fn ensure(&self) -> Result<PathBuf> {
        let (bin, prefix, krate, version) = (self.bin(), self.prefix, self.krate, self.version);
        if bin.is_file() {
            let out = Command::new(&bin)
                .args(self.version_args)
                .output()
                .with_context(|| {
                    format!("running {} {}", bin.display(), self.version_args.join(" "))
                })?;
            let answered = String::from_utf8_lossy(&out.stdout);
            if answered.contains(version) {
                eprintln!("{prefix}: {krate} {version} present ({})", bin.display());
                return Ok(bin);
            }
            eprintln!(
                "{prefix}: {} is `{}`, not {version}; reinstalling",
                bin.display(),
                answered.trim()
            );
        }
        eprintln!(
            "{prefix}: installing {} {version} from crates.io into {} (cargo install; {}, once: \
             the binary is cached)",
            self.what,
            self.root.display(),
            self.takes
        );
        let status = cargo()
            .args(["install", krate, "--version", version, "--locked"])
            .arg("--root")
            .arg(&self.root)
            .arg("--target-dir")
            .arg(&self.build_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .status()
            .with_context(|| format!("running cargo install {krate}"))?;
        if !status.success() || !bin.is_file() {
            anyhow::bail!(
                "cargo install {krate} {version} failed with {status}; {}",
                self.needed_by
            );
        }
        Ok(bin)
    }
}
