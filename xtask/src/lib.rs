//! xtask's library: the machine setup, the sched_ext kernel cache and the VM harness. The
//! `cargo xtask` binary drives it, and the harness's own tests (and any test that needs a guest)
//! call it directly.
//!
//! # Layout
//! - [`setup`]: installs the Debian packages the build and the VM need, idempotently.
//! - [`kernel`]: finds or downloads a kernel with `CONFIG_SCHED_CLASS_EXT=y`, and verifies it.
//! - [`initramfs`]: builds the guest's initramfs (busybox, binaries with their libraries, init).
//! - [`vm`]: boots the guest under qemu TCG, streams its console and decides the outcome.
//! - [`cargo`]: builds workspace binaries and test binaries and reports their paths.
//! - [`fuzz`]: installs cargo-fuzz and runs the configuration fuzz target for a bounded time.
//! - [`plan`]: the steps of each task, in order (setup before any build or boot).
//! - [`bench`](mod@bench): benchmarks run in the guest (`cargo xtask bench`), their peers and report.

pub mod bench;
pub mod cargo;
pub mod fuzz;
pub mod initramfs;
pub mod kernel;
pub mod plan;
pub mod setup;
pub mod vm;

use std::path::PathBuf;

/// The workspace root: the parent of the `xtask` crate's directory.
pub fn workspace_root() -> PathBuf {
    // `cargo xtask` (cargo run) sets CARGO_MANIFEST_DIR for the run too; prefer that over the
    // build's value: two checkouts sharing a target directory share this binary, and the
    // compiled-in path would be the other checkout's.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The workspace's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}
