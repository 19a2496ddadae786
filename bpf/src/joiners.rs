//! Partial mode's joiners: tasks that join a mapped cgroup after it was mapped.
//!
//! In partial mode the scheduler only sees `SCHED_EXT` tasks, and a process that joins a mapped
//! cgroup later (a `ctr exec`, an `echo <pid> > cgroup.procs`) would stay on the fair class. The
//! scheduler's `tp_btf/cgroup_attach_task` program reports each such move through the
//! `corral_joiners` ring buffer; [`JoinerWatch`] drains it on its own thread and switches the
//! task (every thread of the process, for a whole-process move) to `SCHED_EXT`. Full switch
//! needs none of this: a task is placed by its cgroup at every enqueue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::{MapHandle, MapImpl, RingBufferBuilder};

use crate::bpf_intf::corral_joiner;
use crate::cgroup::{set_thread_policy, SCHED_EXT};
use crate::error::{Error, Result};
use crate::raw;

/// How long one poll of the ring buffer waits; bounds how long stopping the watch takes.
const POLL: Duration = Duration::from_millis(100);

/// The thread draining `corral_joiners`. Dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct JoinerWatch {
    stop: Arc<AtomicBool>,
    switched: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl JoinerWatch {
    /// Starts draining the scheduler's `corral_joiners` ring buffer.
    pub(crate) fn start<T: std::fmt::Debug>(ring: &MapImpl<'_, T>) -> Result<JoinerWatch> {
        let handle =
            MapHandle::try_from(ring).map_err(|e| Error::map("dup", "corral_joiners", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let switched = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_switched) = (stop.clone(), switched.clone());
        let thread = std::thread::Builder::new()
            .name("corral-joiners".into())
            .spawn(move || drain(handle, thread_stop, thread_switched))
            .map_err(|e| Error::io("spawn the joiner thread", "corral_joiners", e))?;
        Ok(JoinerWatch {
            stop,
            switched,
            thread: Some(thread),
        })
    }

    /// Tasks switched to `SCHED_EXT` so far.
    pub(crate) fn switched(&self) -> u64 {
        self.switched.load(Ordering::Relaxed)
    }
}

impl Drop for JoinerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drain(handle: MapHandle, stop: Arc<AtomicBool>, switched: Arc<AtomicU64>) {
    let mut builder = RingBufferBuilder::new();
    let counter = switched.clone();
    let ring = builder
        .add(&handle, move |data: &[u8]| {
            if let Some(ev) = raw::read::<corral_joiner>(data) {
                counter.fetch_add(switch_joiner(&ev), Ordering::Relaxed);
            }
            0
        })
        .map(|_| ())
        .and_then(|()| builder.build());
    let ring = match ring {
        Ok(ring) => ring,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the joiner ring buffer: tasks that join a mapped cgroup later stay on the fair class");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = ring.poll(POLL) {
            if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "polling the joiner ring buffer failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Switches the joiner's thread (or every thread of its process) to `SCHED_EXT`; returns how
/// many threads were switched. Threads that exited meanwhile are skipped.
fn switch_joiner(ev: &corral_joiner) -> u64 {
    let tids: Vec<i32> = if ev.threadgroup != 0 {
        let dir = format!("/proc/{}/task", ev.tgid);
        match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => return 0,
        }
    } else {
        vec![ev.pid as i32]
    };
    let mut n = 0;
    for tid in tids {
        match set_thread_policy(tid, SCHED_EXT) {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tid, cgroup = ev.cgid, error = %e, "cannot switch a task that joined a mapped cgroup to SCHED_EXT")
            }
        }
    }
    n
}
