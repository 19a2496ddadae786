//! The machine's CPUs as the kernel lists them (`/sys/devices/system/cpu/{possible,online}`), so
//! groups are validated against the real machine rather than a hard-coded list.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};

const POSSIBLE: &str = "/sys/devices/system/cpu/possible";
const ONLINE: &str = "/sys/devices/system/cpu/online";

/// A set of CPUs together with the kernel's text for it (kept for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList {
    /// The CPUs.
    pub cpus: BTreeSet<u32>,
    /// The list as the kernel wrote it, e.g. `0-3,6`.
    pub text: String,
}

impl CpuList {
    /// Parses a kernel CPU list such as `0-3,6,8-9` (with `scx_utils::read_cpulist`, which
    /// the scx schedulers use for the same files); the empty string is the empty set.
    ///
    /// Only for lists the kernel wrote: the configuration's CPU lists go through
    /// `corral_actors::config::parse_cpu_list` instead, which bounds CPU numbers before it
    /// expands a range (`0-4294967295` would otherwise allocate billions of entries) and names
    /// the key in its errors.
    pub fn parse(text: &str) -> Option<CpuList> {
        let text = text.trim();
        let mut cpus = BTreeSet::new();
        if !text.is_empty() {
            for cpu in scx_utils::read_cpulist(text).ok()? {
                cpus.insert(u32::try_from(cpu).ok()?);
            }
        }
        Some(CpuList {
            cpus,
            text: text.to_string(),
        })
    }

    /// Reads and parses a CPU list file.
    pub fn read(path: &Path) -> Result<CpuList> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        CpuList::parse(&text).ok_or_else(|| Error::Parse {
            path: path.into(),
            content: text,
        })
    }

    /// Whether `cpu` is in the list.
    pub fn contains(&self, cpu: u32) -> bool {
        self.cpus.contains(&cpu)
    }
}

/// The CPUs that can ever exist on this machine.
pub fn possible_cpus() -> Result<CpuList> {
    CpuList::read(Path::new(POSSIBLE))
}

/// The CPUs online now.
pub fn online_cpus() -> Result<CpuList> {
    CpuList::read(Path::new(ONLINE))
}

/// The fields of a `/proc/.../stat` line after the command name (field 2), which may itself hold
/// spaces and parentheses; index 0 is field 3 (the state).
pub fn stat_fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Field 39 (`processor`) of a `stat` line: the CPU the thread last ran on.
pub fn last_cpu_from_stat(stat: &str) -> Option<u32> {
    stat_fields_after_comm(stat)?.get(39 - 3)?.parse().ok()
}

/// The CPU thread `tid` last ran on, from `/proc/<tid>/stat`; `None` once the thread is gone.
pub fn last_cpu(tid: i32) -> Option<u32> {
    last_cpu_from_stat(&std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 39 is counted after the command name, which may contain spaces and parentheses.
    #[test]
    fn last_cpu_reads_field_39_after_the_comm() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[39 - 3] = "1".into();
        let stat = format!("42 (a (weird) name) {}", fields.join(" "));
        assert_eq!(last_cpu_from_stat(&stat), Some(1));
        assert_eq!(last_cpu_from_stat("42 (truncated) R 1"), None);
        // This very thread ran on an online CPU.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let cpu = last_cpu(tid).expect("our own stat");
        assert!(online_cpus().unwrap().contains(cpu));
    }

    /// Ranges, single CPUs and the empty list parse; text that is not a CPU list is refused.
    /// (A backwards range, which the kernel never writes, reads as empty, as scx_utils has it.)
    #[test]
    fn parses_kernel_cpu_lists() {
        let l = CpuList::parse("0-3,6,8-9\n").unwrap();
        assert_eq!(
            l.cpus.into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 6, 8, 9]
        );
        assert!(CpuList::parse("").unwrap().cpus.is_empty());
        assert!(CpuList::parse("a").is_none());
        assert!(CpuList::parse("0-1,x").is_none());
    }
}
