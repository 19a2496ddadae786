//! `corral spin`: the body of the demo's CPU-bound functions. Each thread burns a fixed amount
//! of its own CPU time (not wall time), so when a group is contended the invocation takes longer
//! in wall time while doing the same work, which is what the report shows.

use std::time::Duration;

use anyhow::{ensure, Result};
use clap::Args;

/// Burn CPU on purpose: the demo's functions.
#[derive(Debug, Args)]
pub struct SpinArgs {
    /// CPU time each thread burns, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub millis: u64,
    /// Threads that burn in parallel (a multi-threaded burst when > 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
}

pub fn run(args: SpinArgs) -> Result<()> {
    ensure!(args.millis > 0, "--millis must be positive");
    let budget = Duration::from_millis(args.millis);
    let workers: Vec<_> = (0..args.threads)
        .map(|_| std::thread::spawn(move || burn(budget)))
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a spin thread panicked"))?;
    }
    Ok(())
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
