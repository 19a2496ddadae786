//! `corral-serve`: an example `server`-mode function. Started once per container at its cold
//! start, it serves every invocation of that container over corral's framed protocol
//! (`corral_actors::container_backend::frame`): a length-prefixed request on standard input, a
//! status byte and a length-prefixed reply on standard output, one at a time, until its input
//! ends.
//!
//! A request's payload is read as a command, so that one binary shows the protocol and
//! exercises each of its outcomes:
//!
//! | payload | reply |
//! |---|---|
//! | `spin <ms>` | burns `<ms>` of CPU time, then `served <n> by pid <pid>: spun <ms> ms, last on cpu <c>` |
//! | `fail <message>` | a failed reply (status 1) carrying `<message>` |
//! | `big <bytes>` | `<bytes>` bytes of `x` |
//! | `exit <code>` | none: exits with `<code>` (a server that dies) |
//! | `garbage` | none: writes a line of text that is not a frame (a broken server) |
//! | `hang` | none: sleeps until it is killed (a server that hangs) |
//! | `startup` | `served <n> by pid <pid>: started with cpus allowed <list> on cpu <c>`: the CPUs it was allowed when it started (`Cpus_allowed_list` of `/proc/self/status`) and the CPU it was on, read first thing |
//! | anything else | `served <n> by pid <pid>: <payload>` |
//!
//! `<n>` counts the invocations this process has served, so a caller sees that one process
//! served them all.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use corral_actors::container_backend::frame::{read_request_blocking, write_reply_blocking};

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        println!(
            "usage: corral-serve\n\
             An example server-mode function: serves corral's framed protocol on standard \
             input and output until its input ends. Payloads: `spin <ms>`, `fail <message>`, \
             `big <bytes>`, `exit <code>`, `garbage`, `hang`, `startup`, or anything else to echo."
        );
        return ExitCode::SUCCESS;
    }
    // First thing: where this process may run as it starts (corral starts a server only once
    // its container is enforced, so this is its group's CPUs).
    let started_on = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    // SAFETY: sched_getcpu has no preconditions.
    let started_cpu = unsafe { libc::sched_getcpu() };
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = BufWriter::new(io::stdout().lock());
    let pid = std::process::id();
    let mut served = 0u64;
    loop {
        let payload = match read_request_blocking(&mut input) {
            Ok(Some(p)) => p,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("corral-serve: cannot read a request: {e}");
                return ExitCode::FAILURE;
            }
        };
        served += 1;
        let text = String::from_utf8_lossy(&payload).into_owned();
        let (verb, arg) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        let reply: Result<Vec<u8>, String> = match verb {
            "spin" => match arg.trim().parse::<u64>() {
                Ok(ms) => {
                    burn(Duration::from_millis(ms));
                    Ok(format!(
                        "served {served} by pid {pid}: spun {ms} ms, last on cpu {}",
                        current_cpu()
                    )
                    .into_bytes())
                }
                Err(_) => Err(format!("spin takes milliseconds, got {arg:?}")),
            },
            "fail" => Err(arg.to_string()),
            "big" => match arg.trim().parse::<usize>() {
                Ok(n) => Ok(vec![b'x'; n]),
                Err(_) => Err(format!("big takes a byte count, got {arg:?}")),
            },
            "exit" => {
                let code = arg.trim().parse::<u8>().unwrap_or(1);
                eprintln!("corral-serve: exiting with {code} as asked");
                return ExitCode::from(code);
            }
            "garbage" => {
                let _ = output.write_all(b"this is not a frame\n");
                let _ = output.flush();
                continue;
            }
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "startup" => Ok(format!(
                "served {served} by pid {pid}: started with cpus allowed {started_on} on cpu \
                 {started_cpu}"
            )
            .into_bytes()),
            _ => Ok(format!("served {served} by pid {pid}: {text}").into_bytes()),
        };
        let written = match &reply {
            Ok(out) => write_reply_blocking(&mut output, Ok(out)),
            Err(msg) => write_reply_blocking(&mut output, Err(msg)),
        };
        if let Err(e) = written {
            eprintln!("corral-serve: cannot write a reply: {e}");
            return ExitCode::FAILURE;
        }
    }
}

/// Burns `budget` of this thread's CPU time.
fn burn(budget: Duration) {
    let start = thread_cpu_time();
    let mut x = 0u64;
    while thread_cpu_time().saturating_sub(start) < budget {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() }
}
