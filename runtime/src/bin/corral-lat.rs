//! `corral-lat`: the workload of `cargo xtask bench isolation`, a latency-sensitive function and
//! the noise beside it. Dependency-free (std and libc), so it starts fast in the guest.
//!
//! - `corral-lat calibrate --burst-us <U>`: how many work iterations burn `U` µs of this
//!   thread's CPU time, measured on CPU time (not wall time) and taken as the median of 5.
//! - `corral-lat run --iters <N> --samples <S> --mean-gap-us <G>`: an open loop. Arrival times
//!   are fixed in advance (exponential gaps with mean `G`, a fixed seed, so every run sees the
//!   same schedule) against absolute `CLOCK_MONOTONIC` times, so a late arrival never pushes
//!   the later ones back. Each arrival runs `N` iterations of fixed work; response time is
//!   completion − scheduled arrival (it includes the wake-up and any queueing behind the
//!   previous arrival). Prints one JSON line: p50/p99/max, and `cdf_us`, the percentiles
//!   1..=100 of response time for a CDF plot.
//! - `corral-lat noise --threads <T>`: `T` threads of pure CPU spinning at the default policy
//!   until SIGTERM or SIGINT; then prints one JSON line with the CPUs they ran on and the work
//!   they did.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const USAGE: &str = "usage:\n  corral-lat calibrate --burst-us <U>\n  \
    corral-lat run --iters <N> [--samples <S>] [--mean-gap-us <G>] [--warmup <W>] [--seed <X>]\n  \
    corral-lat noise [--threads <T>]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("calibrate") => Flags::parse(&args[1..], &["--burst-us"]).and_then(calibrate),
        Some("run") => Flags::parse(
            &args[1..],
            &[
                "--iters",
                "--samples",
                "--mean-gap-us",
                "--warmup",
                "--seed",
            ],
        )
        .and_then(run),
        Some("noise") => Flags::parse(&args[1..], &["--threads"]).and_then(noise),
        _ => Err("give a mode: calibrate, run or noise".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("corral-lat: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` pairs, each name from an allowed list.
struct Flags(Vec<(String, u64)>);

impl Flags {
    fn parse(args: &[String], allowed: &[&str]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            if !allowed.contains(&name.as_str()) {
                return Err(format!("unknown argument `{name}`"));
            }
            let value = it.next().ok_or(format!("{name} needs a value"))?;
            let value = value
                .parse::<u64>()
                .map_err(|_| format!("{name} {value}: give a whole number"))?;
            out.push((name.clone(), value));
        }
        Ok(Flags(out))
    }

    fn get(&self, name: &str, default: Option<u64>, range: (u64, u64)) -> Result<u64, String> {
        let value = self
            .0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .or(default)
            .ok_or(format!("{name} is required"))?;
        if !(range.0..=range.1).contains(&value) {
            return Err(format!("{name} {value}: give {} to {}", range.0, range.1));
        }
        Ok(value)
    }
}

/// One unit of fixed work: a few multiply-adds the compiler cannot remove.
#[inline(never)]
fn work(iters: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..iters {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into valid memory.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Sleeps until the absolute `CLOCK_MONOTONIC` time `at_ns`; returns at once if it has passed.
fn sleep_until(at_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: clock_nanosleep reads one valid timespec; the remainder pointer may be null
        // with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The response-time distribution for a plot: the nearest-rank percentiles 1, 2, …, 100 of
/// sorted samples, in µs (the last is the maximum).
fn cdf_us(sorted: &[u64]) -> String {
    (1..=100)
        .map(|p| format!("{:.1}", percentile(sorted, f64::from(p)) as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(",")
}

fn cpu_list(mask: u64) -> String {
    let cpus: Vec<String> = (0..64)
        .filter(|c| mask & (1 << c) != 0)
        .map(|c: u32| c.to_string())
        .collect();
    format!("[{}]", cpus.join(","))
}

fn calibrate(flags: Flags) -> Result<(), String> {
    let burst_us = flags.get("--burst-us", None, (100, 1_000_000))?;
    let chunk = 100_000u64;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let start = thread_cpu_ns();
        let mut done = 0u64;
        // About 100 ms of CPU per measurement, so clock granularity does not matter.
        while thread_cpu_ns() - start < 100_000_000 {
            std::hint::black_box(work(chunk));
            done += chunk;
        }
        let spent = thread_cpu_ns() - start;
        rates.push(done as f64 / spent as f64);
    }
    rates.sort_by(f64::total_cmp);
    let per_ns = rates[rates.len() / 2];
    let iters = (per_ns * burst_us as f64 * 1000.0).round().max(1.0) as u64;
    println!(
        "{{\"burst_us\":{burst_us},\"iters\":{iters},\"iters_per_ms_min\":{:.0},\"iters_per_ms_max\":{:.0}}}",
        rates[0] * 1e6,
        rates[rates.len() - 1] * 1e6
    );
    Ok(())
}

/// xorshift64*: a fixed-seed generator, so every run has the same arrival schedule.
struct Rng(u64);

impl Rng {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // 53 random bits in (0, 1].
        ((x >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

fn run(flags: Flags) -> Result<(), String> {
    let iters = flags.get("--iters", None, (1, u64::MAX))?;
    let samples = flags.get("--samples", Some(500), (1, 1_000_000))? as usize;
    let mean_gap_ns = flags.get("--mean-gap-us", Some(20_000), (100, 10_000_000))? * 1000;
    let warmup = flags.get("--warmup", Some(10), (0, 10_000))? as usize;
    let seed = flags.get("--seed", Some(1), (1, u64::MAX))?;

    let mut rng = Rng(seed);
    let total = warmup + samples;
    let start = now_ns() + 50_000_000;
    let mut at = start;
    let mut arrivals = Vec::with_capacity(total);
    for _ in 0..total {
        arrivals.push(at);
        // Exponential gaps (Poisson arrivals), capped at 10× the mean.
        let gap = (-rng.next_unit().ln() * mean_gap_ns as f64).min(10.0 * mean_gap_ns as f64);
        at += gap as u64;
    }

    let mut response = Vec::with_capacity(samples);
    let mut start_delay = Vec::with_capacity(samples);
    let mut burst_cpu = Vec::with_capacity(samples);
    let mut cpus = 0u64;
    let mut sink = 0u64;
    for (i, &arrival) in arrivals.iter().enumerate() {
        sleep_until(arrival);
        let began = now_ns();
        let cpu_before = thread_cpu_ns();
        sink ^= work(iters);
        let cpu_after = thread_cpu_ns();
        let done = now_ns();
        if let Some(cpu) = current_cpu().filter(|c| *c < 64) {
            cpus |= 1 << cpu;
        }
        if i >= warmup {
            response.push(done - arrival);
            start_delay.push(began.saturating_sub(arrival));
            burst_cpu.push(cpu_after - cpu_before);
        }
    }
    std::hint::black_box(sink);
    let elapsed_ns = now_ns() - start;
    let mean_us = response.iter().sum::<u64>() as f64 / response.len() as f64 / 1000.0;
    for v in [&mut response, &mut start_delay, &mut burst_cpu] {
        v.sort_unstable();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "{{\"samples\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"mean_us\":{mean_us:.1},\
         \"start_delay_p50_us\":{:.1},\"start_delay_p99_us\":{:.1},\"burst_cpu_p50_us\":{:.1},\
         \"iters\":{iters},\"mean_gap_us\":{},\"cpus\":{},\"elapsed_s\":{:.2},\"cdf_us\":[{}]}}",
        response.len(),
        us(percentile(&response, 50.0)),
        us(percentile(&response, 99.0)),
        us(*response.last().unwrap_or(&0)),
        us(percentile(&start_delay, 50.0)),
        us(percentile(&start_delay, 99.0)),
        us(percentile(&burst_cpu, 50.0)),
        mean_gap_ns / 1000,
        cpu_list(cpus),
        elapsed_ns as f64 / 1e9,
        cdf_us(&response),
    );
    Ok(())
}

fn noise(flags: Flags) -> Result<(), String> {
    let threads = flags.get("--threads", Some(4), (1, 256))?;
    // Block the stop signals before the spinners start, so they inherit the mask and only
    // the main thread's sigwait takes them.
    // SAFETY: plain libc signal-set calls on a zeroed, then initialised, sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let cpus = Arc::new(AtomicU64::new(0));
    let work_done = Arc::new(AtomicU64::new(0));
    let start = now_ns();
    for _ in 0..threads {
        let (cpus, work_done) = (cpus.clone(), work_done.clone());
        std::thread::spawn(move || loop {
            std::hint::black_box(work(1 << 20));
            work_done.fetch_add(1, Ordering::Relaxed);
            if let Some(cpu) = current_cpu().filter(|c| *c < 64) {
                cpus.fetch_or(1 << cpu, Ordering::Relaxed);
            }
        });
    }
    let mut sig = 0;
    // SAFETY: sigwait reads a valid set and writes one int.
    unsafe { libc::sigwait(&set, &mut sig) };
    let elapsed = (now_ns() - start) as f64 / 1e9;
    let units = work_done.load(Ordering::Relaxed);
    println!(
        "{{\"threads\":{threads},\"cpus\":{},\"work_units\":{units},\"units_per_s\":{:.1},\"elapsed_s\":{elapsed:.2}}}",
        cpu_list(cpus.load(Ordering::Relaxed)),
        units as f64 / elapsed.max(1e-9),
    );
    // The spinners never return; ending the process ends them.
    std::process::exit(0);
}
