//! `cargo xtask fuzz`: the configuration fuzz target (`fuzz/fuzz_targets/config.rs`) under
//! libFuzzer, through cargo-fuzz, for a bounded time.
//!
//! cargo-fuzz is installed from crates.io under `target/tools` the first time (about two
//! minutes on 2 cores; the binary is cached there). The target is built without a sanitizer
//! (`-s none`): the sanitizers need a nightly compiler, this machine has one stable toolchain,
//! and the code under test is safe Rust, where AddressSanitizer adds little; coverage
//! instrumentation and `--cfg fuzzing` need nothing unstable.
//!
//! The corpus grows in `target/fuzz/corpus/config`; `examples/` seeds it on every run (read
//! only), and `fuzz/config.dict` gives libFuzzer the configuration's section headers and keys.
//! An input that panics, trips an assertion of the target, or takes longer than
//! [`INPUT_TIMEOUT_S`] is written under `target/fuzz/artifacts/config/` and fails the run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The cargo-fuzz release installed (`cargo install --locked`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz target.
pub const TARGET: &str = "config";

/// The seconds `cargo xtask test` fuzzes for: long enough to parse a few hundred thousand
/// inputs, short beside CI's budget.
pub const SMOKE_SECONDS: u64 = 60;

/// One input taking longer than this fails the run as a hang (validation answers in
/// microseconds; a hang of the CPU-list parser on `0-4294967295` was a real bug).
pub const INPUT_TIMEOUT_S: u64 = 10;

fn tools_dir() -> PathBuf {
    crate::target_dir().join("tools")
}

fn fuzz_dir() -> PathBuf {
    crate::target_dir().join("fuzz")
}

/// The `cargo-fuzz` binary, installed under `target/tools` when missing or of another version.
pub fn ensure_cargo_fuzz() -> Result<PathBuf> {
    crate::cargo::CargoTool {
        krate: "cargo-fuzz",
        version: CARGO_FUZZ_VERSION,
        what: "cargo-fuzz",
        prefix: "fuzz",
        root: tools_dir(),
        build_dir: tools_dir().join("build"),
        version_args: &["fuzz", "--version"],
        takes: "about 2 minutes on 2 cores",
        needed_by: "`cargo xtask fuzz` and the fuzz phase of `cargo xtask test` need it",
        env: Vec::new(),
    }
    .ensure()
}

/// The libFuzzer arguments of a run of `seconds`.
pub fn libfuzzer_args(seconds: u64, artifacts: &Path) -> Vec<String> {
    let root = crate::workspace_root();
    vec![
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        "-rss_limit_mb=2048".to_owned(),
        // A configuration file is small; longer inputs only slow the search.
        "-max_len=8192".to_owned(),
        format!("-dict={}", root.join("fuzz/config.dict").display()),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".to_owned(),
    ]
}

/// Fuzzes the configuration target for `seconds`; 0 when it found nothing, 1 when it found an
/// input that fails (the artifact's path and how to replay it are printed).
pub fn run(cargo_fuzz: &Path, seconds: u64) -> Result<i32> {
    let root = crate::workspace_root();
    let corpus = fuzz_dir().join("corpus").join(TARGET);
    let artifacts = fuzz_dir().join("artifacts").join(TARGET);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let before: Vec<_> = std::fs::read_dir(&artifacts)?.flatten().collect();
    eprintln!(
        "fuzz: building the `{TARGET}` target with coverage instrumentation (the first build \
         takes several minutes), then fuzzing it for {seconds} s; corpus {}, seeds examples/",
        corpus.display()
    );
    let log_path = fuzz_dir().join(format!("{TARGET}.log"));
    let mut child = Command::new(cargo_fuzz)
        .current_dir(&root)
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(root.join("fuzz"))
        .args(["--sanitizer", "none", "--target-dir"])
        .arg(fuzz_dir().join("target"))
        .arg(TARGET)
        .arg(&corpus)
        .arg(root.join("examples"))
        .arg("--")
        .args(libfuzzer_args(seconds, &artifacts))
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    relay(stderr, &log_path)?;
    let status = child.wait()?;
    if status.success() {
        eprintln!("fuzz: {seconds} s of `{TARGET}` found nothing");
        return Ok(0);
    }
    let found: Vec<_> = std::fs::read_dir(&artifacts)?
        .flatten()
        .filter(|e| !before.iter().any(|b| b.path() == e.path()))
        .map(|e| e.path())
        .collect();
    if found.is_empty() {
        bail!("cargo fuzz run failed with {status} before it fuzzed anything (see above)");
    }
    for input in &found {
        eprintln!(
            "fuzz: FAILED on {}; replay it with: {} fuzz run --fuzz-dir fuzz --sanitizer none \
             --target-dir {} {TARGET} {}",
            input.display(),
            cargo_fuzz.display(),
            fuzz_dir().join("target").display(),
            input.display()
        );
    }
    Ok(1)
}

/// How often a run's progress is shown.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Copies cargo-fuzz's standard error to `log`, and to the terminal all but libFuzzer's line
/// per new input (hundreds a second): of those, one line every [`PROGRESS_EVERY`].
fn relay(stderr: ChildStderr, log: &Path) -> Result<()> {
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    eprintln!("fuzz: libFuzzer's full output goes to {}", log.display());
    let mut shown = Instant::now();
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        file.write_all(&raw)?;
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end();
        let per_input = line.starts_with('#') || line.starts_with("\tNEW_FUNC");
        if !per_input {
            eprintln!("{line}");
        } else if shown.elapsed() >= PROGRESS_EVERY && line.starts_with('#') {
            eprintln!("fuzz: {line}");
            shown = Instant::now();
        }
    }
}
