//! `corral-spin`: the body of `corral run`'s `spin` and `burst` functions. Each thread burns a
//! fixed amount of its own CPU time (not wall time), so a contended group shows up as longer
//! wall time for the same work.
//!
//! It is a separate, dependency-free binary because it starts once per invocation: the full
//! `corral` binary takes about 0.2 s of CPU just to start under qemu TCG, which would swamp a
//! 10 ms function.

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: corral-spin --millis <N> [--threads <T>]\n\
    Burns N ms of CPU time in each of T threads (default 1), then exits.";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok((millis, threads)) => {
            let budget = Duration::from_millis(millis);
            let workers: Vec<_> = (0..threads)
                .map(|_| std::thread::spawn(move || burn(budget)))
                .collect();
            for w in workers {
                if w.join().is_err() {
                    eprintln!("corral-spin: a thread panicked");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("corral-spin: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(u64, u32), String> {
    let (mut millis, mut threads) = (None, 1u32);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--millis" => {
                let v = value("--millis")?;
                millis = Some(v.parse::<u64>().ok().filter(|m| *m > 0).ok_or(format!(
                    "--millis {v}: give a positive number of milliseconds"
                ))?);
            }
            "--threads" => {
                let v = value("--threads")?;
                threads = v
                    .parse::<u32>()
                    .ok()
                    .filter(|t| (1..=256).contains(t))
                    .ok_or(format!("--threads {v}: give 1 to 256"))?;
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok((millis.ok_or("--millis is required")?, threads))
}

/// Spins until this thread has used `budget` of CPU time.
fn burn(budget: Duration) {
    let start = thread_cpu_time();
    let mut x = 0u64;
    while thread_cpu_time() - start < budget {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    std::hint::black_box(x);
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into valid memory.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
