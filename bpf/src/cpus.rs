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
    /// Parses a kernel CPU list such as `0-3,6,8-9`; the empty string is the empty set.
    pub fn parse(text: &str) -> Option<CpuList> {
        let text = text.trim();
        let mut cpus = BTreeSet::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
                    if lo > hi {
                        return None;
                    }
                    cpus.extend(lo..=hi);
                }
                None => {
                    cpus.insert(part.parse().ok()?);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges, single CPUs and the empty list parse; malformed lists are refused.
    #[test]
    fn parses_kernel_cpu_lists() {
        let l = CpuList::parse("0-3,6,8-9\n").unwrap();
        assert_eq!(
            l.cpus.into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 6, 8, 9]
        );
        assert!(CpuList::parse("").unwrap().cpus.is_empty());
        assert!(CpuList::parse("3-1").is_none());
        assert!(CpuList::parse("a").is_none());
    }
}
