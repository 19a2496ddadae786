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
