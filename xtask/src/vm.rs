//! Boots the sched_ext test guest under qemu TCG and decides the outcome.
//!
//! The guest's console is streamed as it arrives. Pass or fail comes from one sentinel line that
//! the init prints with the guest command's exit status and a per-boot nonce; without it the run
//! fails. The guest is killed at once on a kernel panic, a soft or hard lockup, an RCU stall or
//! the timeout, and the outcome says which.
//!
//! qemu runs single-threaded TCG by default: under multi-threaded TCG this kernel sometimes oopses
//! on `int3` while it patches its own text. A guest that fails *before* init reaches the guest
//! command (an oops or hang during boot) is booted once more, and says so; a failure once the
//! command runs is always the run's outcome.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::initramfs::{self, GuestSpec, SENTINEL_PREFIX};
use crate::kernel::VmKernel;

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Virtual CPUs (`-smp`).
    pub smp: u32,
    /// Guest memory (`-m`).
    pub memory: String,
    /// The whole run, boot included, is killed after this long.
    pub timeout: Duration,
    /// Copy the console to this process's stdout as it arrives.
    pub echo: bool,
    /// Multi-threaded TCG (one host thread per vCPU). Off by default: under MTTCG this kernel
    /// sometimes oopses on `int3` while patching its own text (jump labels, static calls), at
    /// boot or when a scheduler attaches; single-threaded TCG has not shown it.
    pub mttcg: bool,
    /// A guest that has not reached the guest command within this long has failed to boot.
    pub boot_timeout: Duration,
    /// How many more times to boot when the guest fails *before* the guest command starts
    /// (a boot hang or an oops during boot). A failure after it starts is never retried.
    pub boot_retries: u32,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            smp: 4,
            memory: "2G".into(),
            timeout: Duration::from_secs(600),
            echo: true,
            mttcg: false,
            boot_timeout: Duration::from_secs(180),
            boot_retries: 1,
        }
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest command ran to completion with this exit status.
    Exited(i32),
    /// The kernel panicked; the panic line.
    KernelPanic(String),
    /// The lockup detector fired; its line.
    Lockup(String),
    /// RCU reported a stall; its line.
    RcuStall(String),
    /// The guest command finished (with this status), but the kernel warned on the way (a
    /// `WARNING:` or `BUG:` splat): the first such line. A warning is a kernel invariant
    /// broken, which sched_ext code paths can hit on a scheduler's behalf, so it fails the run.
    KernelWarning(i32, String),
    /// No sentinel within the timeout.
    Timeout(Duration),
    /// qemu exited without the sentinel (its status, and why it may have).
    NoSentinel(String),
    /// The guest did not reach the guest command within the boot timeout.
    BootTimeout(Duration),
}

impl VmOutcome {
    /// The status `cargo xtask vm` exits with: the guest command's, or 1 for any failure of
    /// the guest itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmOutcome::Exited(code) => *code,
            _ => 1,
        }
    }

    /// Whether the guest command ran and succeeded.
    pub fn success(&self) -> bool {
        *self == VmOutcome::Exited(0)
    }
}

impl fmt::Display for VmOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmOutcome::Exited(code) => write!(f, "guest command exited with status {code}"),
            VmOutcome::KernelPanic(line) => write!(f, "kernel panic in the guest: {line}"),
            VmOutcome::Lockup(line) => write!(f, "lockup detected in the guest: {line}"),
            VmOutcome::RcuStall(line) => write!(f, "RCU stall in the guest: {line}"),
            VmOutcome::KernelWarning(code, line) => write!(
                f,
                "the guest command exited with status {code}, but the kernel warned: {line}"
            ),
            VmOutcome::Timeout(t) => {
                write!(
                    f,
                    "timed out after {}s without the guest's exit sentinel",
                    t.as_secs()
                )
            }
            VmOutcome::NoSentinel(why) => {
                write!(f, "qemu exited without the guest's exit sentinel ({why})")
            }
            VmOutcome::BootTimeout(t) => {
                write!(
                    f,
                    "the guest did not finish booting within {}s",
                    t.as_secs()
                )
            }
        }
    }
}

/// A finished run: how it ended and the whole console.
#[derive(Debug)]
pub struct VmRun {
    /// How it ended.
    pub outcome: VmOutcome,
    /// Every console line, without carriage returns.
    pub console: Vec<String>,
    /// Wall time from qemu's start to its end.
    pub elapsed: Duration,
    /// Whether the guest reached the guest command.
    pub booted: bool,
    /// Boots that failed before the guest command and were retried, with how they ended.
    pub failed_boots: Vec<VmOutcome>,
}

/// Whether `line` is a kernel log line (printk's `[ seconds.micros]` prefix).
fn is_kernel_line(line: &str) -> bool {
    line.trim_start().starts_with('[')
        && line
            .split_once(']')
            .is_some_and(|(ts, _)| ts.trim_start_matches('[').trim().parse::<f64>().is_ok())
}

/// Whether a console line opens a kernel warning splat (`WARNING: CPU: …`, or a `BUG:` that
/// is not a lockup, which [`failure_marker`] handles).
fn warning_marker(line: &str) -> bool {
    is_kernel_line(line) && (line.contains("WARNING: CPU:") || line.contains("] BUG: "))
}

/// Classifies a console line that means the guest kernel has failed. Only kernel log lines
/// count (printk's `[ seconds.micros]` prefix; this kernel has `CONFIG_PRINTK_TIME`), so a test
/// that merely prints such words does not kill the guest.
fn failure_marker(line: &str) -> Option<VmOutcome> {
    if !is_kernel_line(line) {
        return None;
    }
    if line.contains("Kernel panic - not syncing") {
        Some(VmOutcome::KernelPanic(line.trim().to_owned()))
    } else if line.contains("soft lockup - CPU#")
        || line.contains("BUG: soft lockup")
        || line.contains("hard LOCKUP")
    {
        Some(VmOutcome::Lockup(line.trim().to_owned()))
    } else if line.contains("rcu") && line.contains("detected stall") {
        Some(VmOutcome::RcuStall(line.trim().to_owned()))
    } else {
        None
    }
}

/// Reads the sentinel's status from a line, if the line carries this boot's sentinel.
fn sentinel_status(line: &str, sentinel: &str) -> Option<i32> {
    let at = line.find(sentinel)?;
    line[at + sentinel.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Builds the initramfs for `spec`, boots it and waits for the outcome.
pub fn run(kernel: &VmKernel, spec: &GuestSpec, opts: &VmOptions) -> Result<VmRun> {
    let nonce = nonce();
    let dir = crate::target_dir().join("vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let initrd = dir.join(format!("initramfs-{nonce}.cpio"));
    initramfs::build(spec, kernel, &nonce, &initrd)?;
    let sentinel = format!("{SENTINEL_PREFIX} {nonce}");
    let mut failed_boots = Vec::new();
    let result = loop {
        let run = match boot(kernel, &initrd, &sentinel, opts) {
            Ok(run) => run,
            Err(e) => break Err(e),
        };
        if run.booted || failed_boots.len() as u32 >= opts.boot_retries {
            break Ok(VmRun {
                failed_boots,
                ..run
            });
        }
        eprintln!(
            "xtask vm: the guest failed before running the command ({}); booting again \
             (attempt {} of {})",
            run.outcome,
            failed_boots.len() + 2,
            opts.boot_retries + 1
        );
        failed_boots.push(run.outcome);
    };
    std::fs::remove_file(&initrd).ok();
    result
}

fn boot(kernel: &VmKernel, initrd: &PathBuf, sentinel: &str, opts: &VmOptions) -> Result<VmRun> {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            if opts.mttcg {
                "tcg,thread=multi"
            } else {
                "tcg,thread=single"
            },
        ])
        .args(["-cpu", "max", "-nographic", "-no-reboot"])
        // No NIC (its option ROM chatters on the console) and no VGA; the serial port is the console.
        .args(["-nodefaults", "-serial", "mon:stdio"])
        .args(["-smp", &opts.smp.to_string(), "-m", &opts.memory])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            // loglevel=5: warnings (level 4) reach the console, so that a WARN splat is seen.
            "console=ttyS0 panic=-1 quiet loglevel=5 rcupdate.rcu_cpu_stall_timeout=60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (install it with `cargo xtask setup`)")?;

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_terminal_codes(&String::from_utf8_lossy(&buf));
                    if tx.send(line.trim_end_matches('\n').to_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });

    let mut console = Vec::new();
    let deadline = start + opts.timeout;
    let boot_deadline = start + opts.boot_timeout.min(opts.timeout);
    let mut booted = false;
    let mut outcome = None;
    let mut warning: Option<String> = None;
    let out = std::io::stdout();
    loop {
        let now = Instant::now();
        if now >= deadline {
            outcome = Some(VmOutcome::Timeout(opts.timeout));
            break;
        }
        if !booted && now >= boot_deadline {
            outcome = Some(VmOutcome::BootTimeout(opts.boot_timeout));
            break;
        }
        let wait = if booted {
            deadline - now
        } else {
            boot_deadline - now
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                if opts.echo {
                    let mut out = out.lock();
                    writeln!(out, "{line}").ok();
                    out.flush().ok();
                }
                booted |= line.contains(initramfs::READY_MARKER);
                if warning.is_none() && warning_marker(&line) {
                    warning = Some(line.trim().to_owned());
                }
                if let Some(code) = sentinel_status(&line, sentinel) {
                    outcome = Some(VmOutcome::Exited(code));
                } else if let Some(failure) = failure_marker(&line) {
                    outcome = Some(failure);
                }
                console.push(line);
                if outcome.is_some() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    let outcome = match outcome {
        // The guest reboots itself after the sentinel; give it a moment, then make sure.
        Some(VmOutcome::Exited(code)) => {
            wait_or_kill(&mut child, Duration::from_secs(10));
            match warning {
                Some(line) => VmOutcome::KernelWarning(code, line),
                None => VmOutcome::Exited(code),
            }
        }
        Some(failure) => {
            child.kill().ok();
            child.wait().ok();
            failure
        }
        None => {
            let status = child.wait().context("waiting for qemu")?;
            let stderr = stderr_reader.join().unwrap_or_default();
            let why = if stderr.trim().is_empty() {
                format!("qemu {status}")
            } else {
                format!("qemu {status}: {}", stderr.trim())
            };
            return Ok(VmRun {
                outcome: VmOutcome::NoSentinel(why),
                console,
                elapsed: start.elapsed(),
                booted,
                failed_boots: Vec::new(),
            });
        }
    };
    reader.join().ok();
    Ok(VmRun {
        outcome,
        console,
        elapsed: start.elapsed(),
        booted,
        failed_boots: Vec::new(),
    })
}

fn wait_or_kill(child: &mut Child, grace: Duration) {
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().ok();
}

/// Drops carriage returns and the terminal escape sequences the firmware prints.
fn strip_terminal_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte; otherwise ESC plus one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// 16 random hex digits from the kernel's generator.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        f.read_exact(&mut bytes).ok();
    }
    let salt = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    format!("{:016x}", u64::from_le_bytes(bytes) ^ salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only this boot's sentinel counts; a line that merely resembles it does not.
    #[test]
    fn sentinel_needs_the_nonce() {
        let sentinel = "CORRAL-VM-EXIT 00ff";
        assert_eq!(sentinel_status("CORRAL-VM-EXIT 00ff 3", sentinel), Some(3));
        assert_eq!(
            sentinel_status("[  1.0] x CORRAL-VM-EXIT 00ff 0", sentinel),
            Some(0)
        );
        assert_eq!(sentinel_status("CORRAL-VM-EXIT 1234 0", sentinel), None);
        assert_eq!(sentinel_status("CORRAL-VM-EXIT 00ff", sentinel), None);
    }

    /// Firmware escape sequences and carriage returns do not reach the log.
    #[test]
    fn terminal_codes_are_stripped() {
        assert_eq!(
            strip_terminal_codes("\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS\r\n"),
            "SeaBIOS\n"
        );
    }

    /// Panic, lockup and RCU stall lines are recognised as guest failures.
    #[test]
    fn failure_markers_are_recognised() {
        assert!(matches!(
            failure_marker("[ 3.1] Kernel panic - not syncing: sysrq triggered crash"),
            Some(VmOutcome::KernelPanic(_))
        ));
        assert!(matches!(
            failure_marker("[   22.000001] watchdog: BUG: soft lockup - CPU#1 stuck for 22s!"),
            Some(VmOutcome::Lockup(_))
        ));
        assert!(matches!(
            failure_marker("[   61.5] rcu: INFO: rcu_preempt self-detected stall on CPU"),
            Some(VmOutcome::RcuStall(_))
        ));
        assert!(warning_marker(
            "[   65.0] WARNING: CPU: 2 PID: 1 at kernel/sched/ext/ext.c:5211 scx_sched_free_rcu_work"
        ));
        assert!(warning_marker(
            "[    9.9] BUG: scheduling while atomic: corral/95/0x00000002"
        ));
        assert!(!warning_marker("test prints: WARNING: CPU: 0"));
        // A program printing the same words is not the kernel failing.
        assert_eq!(
            failure_marker("test prints: Kernel panic - not syncing"),
            None
        );
        assert_eq!(
            failure_marker("sched_ext: BPF scheduler \"corral\" enabled"),
            None
        );
    }
}
