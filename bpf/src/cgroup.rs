//! Cgroup helpers: a cgroup v2 directory's id (the key of the cgroup map), and switching every
//! thread of a cgroup into `SCHED_EXT` and back.
//!
//! With `SCX_OPS_SWITCH_PARTIAL` the scheduler only sees tasks whose policy is `SCHED_EXT`, so
//! mapping a cgroup is two steps: the map update (which places tasks already under sched_ext)
//! and this policy switch (which brings the cgroup's threads under sched_ext). New threads inherit
//! the policy of the thread that created them.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::pinned::nix_statfs;
use crate::CgroupId;

/// The `SCHED_EXT` scheduling policy number.
pub const SCHED_EXT: u32 = 7;
/// The `SCHED_NORMAL` (a.k.a. `SCHED_OTHER`) scheduling policy number.
pub const SCHED_NORMAL: u32 = 0;

const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

/// Passes over `cgroup.threads` before giving up on threads that keep appearing.
const MAX_SWITCH_PASSES: usize = 8;

/// The id of the cgroup v2 directory at `path`: the inode number of the directory, which is the
/// kernel's cgroup id (what `bpf_get_current_cgroup_id()` and `cgrp->kn->id` return).
pub fn cgroup_id_of(path: impl AsRef<Path>) -> Result<CgroupId> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_dir() || nix_statfs(path)? != CGROUP2_SUPER_MAGIC {
        return Err(Error::NotCgroup2 { path: path.into() });
    }
    Ok(meta.ino())
}

/// The thread ids listed in the cgroup's `cgroup.threads`.
pub fn cgroup_threads(path: impl AsRef<Path>) -> Result<Vec<i32>> {
    let file = path.as_ref().join("cgroup.threads");
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
    text.lines()
        .map(|l| {
            l.trim().parse::<i32>().map_err(|_| Error::Parse {
                path: file.clone(),
                content: l.into(),
            })
        })
        .collect()
}

/// Sets thread `tid`'s policy to `policy` (keeping its nice value) with `sched_setattr`.
/// `Ok(false)` when the thread has exited.
pub fn set_thread_policy(tid: i32, policy: u32) -> Result<bool> {
    // getpriority can return -1 legitimately; errno tells.
    // SAFETY: errno is thread-local; setting it to 0 before the call is the documented idiom.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall with integer arguments.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    if nice == -1 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(0) => {}
            Some(libc::ESRCH) => return Ok(false),
            _ => {
                return Err(Error::Thread {
                    call: "getpriority",
                    tid,
                    source: err,
                })
            }
        }
    }
    let attr = libc::sched_attr {
        size: size_of::<libc::sched_attr>() as u32,
        sched_policy: policy,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: attr is a valid, correctly sized struct sched_attr for the call's duration.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid,
            &attr as *const libc::sched_attr,
            0u32,
        )
    };
    if ret != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(false);
        }
        return Err(Error::Thread {
            call: "sched_setattr",
            tid,
            source: err,
        });
    }
    Ok(true)
}

/// Thread `tid`'s scheduling policy (`sched_getscheduler`).
pub fn thread_policy(tid: i32) -> Result<u32> {
    // SAFETY: plain syscall with an integer argument.
    let ret = unsafe { libc::sched_getscheduler(tid) };
    if ret < 0 {
        return Err(Error::Thread {
            call: "sched_getscheduler",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(ret as u32 & !(libc::SCHED_RESET_ON_FORK as u32))
}

/// Switches every thread in the cgroup at `path` to `SCHED_EXT` (`enable`), or its `SCHED_EXT`
/// threads back to `SCHED_NORMAL` (threads on any other policy, e.g. `SCHED_FIFO`, are left
/// alone), and returns how many threads it switched.
///
/// `cgroup.threads` is re-read until a pass finds no thread it has not switched yet, so threads
/// created by a thread before it was switched are caught too. Threads that exit meanwhile are
/// skipped.
pub fn set_cgroup_sched_ext(path: impl AsRef<Path>, enable: bool) -> Result<usize> {
    let path = path.as_ref();
    let policy = if enable { SCHED_EXT } else { SCHED_NORMAL };
    let mut seen = BTreeSet::new();
    let mut switched = 0;
    for _ in 0..MAX_SWITCH_PASSES {
        let mut new = 0;
        for tid in cgroup_threads(path)? {
            if seen.insert(tid) {
                new += 1;
                if !enable && !matches!(thread_policy(tid), Ok(SCHED_EXT)) {
                    continue;
                }
                if set_thread_policy(tid, policy)? {
                    switched += 1;
                }
            }
        }
        if new == 0 {
            break;
        }
    }
    Ok(switched)
}

/// How deep [`set_cgroup_tree_sched_ext`] descends below the cgroup it is given.
const MAX_TREE_DEPTH: usize = 16;

/// [`set_cgroup_sched_ext`] for the cgroup at `path` and its descendant cgroups (a mapping
/// applies to descendants too: the scheduler walks a task's ancestors). Descendants for which
/// `skip` returns true are left alone with their whole subtree, e.g. ones with a mapping of
/// their own. Returns how many threads it switched.
pub fn set_cgroup_tree_sched_ext(
    path: impl AsRef<Path>,
    enable: bool,
    skip: impl Fn(&Path) -> bool,
) -> Result<usize> {
    let mut switched = 0;
    let mut stack = vec![(path.as_ref().to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        switched += set_cgroup_sched_ext(&dir, enable)?;
        if depth >= MAX_TREE_DEPTH {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        for entry in entries.flatten() {
            let child = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && !skip(&child) {
                stack.push((child, depth + 1));
            }
        }
    }
    Ok(switched)
}
