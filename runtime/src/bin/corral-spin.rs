//! `corral-spin`: the body of `corral run`'s `spin` and `burst` functions. Each thread burns a
//! fixed amount of its own CPU time (not wall time), so a contended group shows up as longer
//! wall time for the same work.
//!
//! It is a separate, dependency-free binary because it starts once per invocation: the full
//! `corral` binary takes about 0.2 s of CPU just to start under qemu TCG, which would swamp a
//! 10 ms function.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: corral-spin --millis <N> [--threads <T>] [--report]\n\
    Burns N ms of CPU time in each of T threads (default 1), then exits.\n\
    --report prints `policy=<scheduling policy>` and `cpus-seen=<CPUs the threads ran on>`.";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(args) => {
            let budget = Duration::from_millis(args.millis);
            let workers: Vec<_> = (0..args.threads)
                .map(|_| std::thread::spawn(move || burn(budget)))
                .collect();
            let mut seen = BTreeSet::new();
            for w in workers {
                match w.join() {
                    Ok(cpus) => seen.extend(cpus),
                    Err(_) => {
                        eprintln!("corral-spin: a thread panicked");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if args.report {
                // SAFETY: sched_getscheduler has no preconditions.
                let policy = unsafe { libc::sched_getscheduler(0) };
                let cpus: Vec<String> = seen.iter().map(u32::to_string).collect();
                println!("policy={policy}");
                println!("cpus-seen={}", cpus.join(","));
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("corral-spin: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    millis: u64,
    threads: u32,
    report: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut millis, mut threads, mut report) = (None, 1u32, false);
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
            "--report" => report = true,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args {
        millis: millis.ok_or("--millis is required")?,
        threads,
        report,
    })
}

/// Spins until this thread has used `budget` of CPU time; returns the CPUs it was seen on.
fn burn(budget: Duration) -> BTreeSet<u32> {
    let start = thread_cpu_time();
    let mut seen = BTreeSet::new();
    let mut x = 0u64;
    while thread_cpu_time() - start < budget {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        if let Some(cpu) = std::fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .as_deref()
            .and_then(corral_bpf::cpus::last_cpu_from_stat)
        {
            seen.insert(cpu);
        }
    }
    std::hint::black_box(x);
    seen
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
