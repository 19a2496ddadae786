//! The `cpuset` map backend, the fallback where sched_ext is missing and the baseline every
//! benchmark compares against. An enforcement is one write of the group's CPU list to
//! `cpuset.cpus`: in the container's own cgroup v2 directory where the cpuset controller is
//! enabled there, otherwise in a v1 cpuset cgroup `<v1 root>/<prefix>/<cgroup id>` created for
//! the container (its processes must join it too; the acknowledgement says so in
//! [`Enforcement::join`]). The file system is the source of truth: `entries` reads the files back.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::MapBackend;
use crate::config::{parse_cpu_list, CpuGroup, GroupId};
use crate::container_backend::local::{cgroup_pids, mark, marked};
use crate::container_backend::{CgroupId, CgroupRef, Enforcement};
use crate::error::ActorError;

/// The usual mount point of the v1 cpuset hierarchy.
pub const DEFAULT_V1_ROOT: &str = "/sys/fs/cgroup/cpuset";

/// Where one cgroup's cpuset lives.
#[derive(Debug, Clone)]
enum Placement {
    /// `cpuset.cpus` in the container's v2 directory.
    V2(PathBuf),
    /// A v1 cpuset cgroup of its own.
    V1(PathBuf),
}

/// Enforcement through `cpuset.cpus`.
///
/// Ownership: every v1 cpuset the backend creates carries the extended attribute
/// `trusted.corral.owner` with the backend's owner (by default `corral`; the runtime uses its
/// containers' parent, so two runtimes sharing a prefix tell their cpusets apart). Only
/// cpusets with this owner's mark are read back, moved or removed; the prefix directory is
/// removed only when empty.
#[derive(Debug)]
pub struct CpusetBackend {
    v1_root: PathBuf,
    v1_dir: PathBuf,
    v1_ready: bool,
    owner: Vec<u8>,
    tracked: BTreeMap<CgroupId, Placement>,
    groups: Vec<CpuGroup>,
}

/// The mark of the prefix directory itself.
const PREFIX_MARK: &[u8] = b"corral-cpuset-prefix";

fn write(path: &Path, value: &str) -> Result<(), ActorError> {
    fs::write(path, value).map_err(|e| ActorError::cgroup(format!("write {value:?} to"), path, e))
}

fn read(path: &Path) -> Result<String, ActorError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| ActorError::cgroup("read", path, e))
}

impl CpusetBackend {
    /// A backend using the v1 hierarchy at `v1_root` (when v2 cpuset is not enabled), with its
    /// cgroups under `<v1_root>/<prefix>`. Nothing is created until the first enforcement.
    pub fn new(v1_root: impl Into<PathBuf>, prefix: &str) -> Self {
        let v1_root = v1_root.into();
        CpusetBackend {
            v1_dir: v1_root.join(prefix),
            v1_root,
            v1_ready: false,
            owner: b"corral".to_vec(),
            tracked: BTreeMap::new(),
            groups: Vec::new(),
        }
    }

    /// The same backend, marking its cpusets as `owner`'s: a second backend with the same
    /// prefix and another owner neither sees nor removes them.
    pub fn owned_by(mut self, owner: &str) -> Self {
        self.owner = format!("corral:{owner}").into_bytes();
        self
    }

    /// Whether the v1 cpuset `dir` is this backend's.
    fn owns(&self, dir: &Path) -> bool {
        marked(dir, &self.owner)
    }

    /// The directory holding this backend's v1 cpuset cgroups.
    pub fn v1_dir(&self) -> &Path {
        &self.v1_dir
    }

    fn ensure_v1_dir(&mut self) -> Result<(), ActorError> {
        if self.v1_ready {
            return Ok(());
        }
        if !self.v1_root.join("cpuset.cpus").exists() {
            return Err(ActorError::cgroup(
                "find the cpuset controller: cgroup v2 cpuset is not enabled for the container and \
                 there is no v1 cpuset hierarchy at",
                &self.v1_root,
                std::io::Error::from(ErrorKind::NotFound),
            ));
        }
        if !self.v1_dir.exists() {
            fs::create_dir(&self.v1_dir)
                .map_err(|e| ActorError::cgroup("create", &self.v1_dir, e))?;
            mark(&self.v1_dir, PREFIX_MARK)?;
        } else if !marked(&self.v1_dir, PREFIX_MARK) {
            return Err(ActorError::invalid(
                "enforcement.cpuset_prefix",
                self.v1_dir.display(),
                "this cpuset exists and corral did not create it; choose a prefix of corral's own",
            ));
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read(&self.v1_dir.join(file))?.is_empty() {
                let value = read(&self.v1_root.join(file))?;
                write(&self.v1_dir.join(file), &value)?;
            }
        }
        self.v1_ready = true;
        Ok(())
    }

    fn group_of(&self, cpus_text: &str) -> Option<GroupId> {
        let cpus = parse_cpu_list("cpuset.cpus", cpus_text).ok()?;
        self.groups.iter().find(|g| g.cpus == cpus).map(|g| g.id)
    }
}

impl MapBackend for CpusetBackend {
    fn name(&self) -> &'static str {
        "cpuset"
    }

    fn publish_groups(&mut self, groups: &[CpuGroup]) -> Result<(), ActorError> {
        self.groups = groups.to_vec();
        Ok(())
    }

    fn enforce(&mut self, cgroup: &CgroupRef, group: &CpuGroup) -> Result<Enforcement, ActorError> {
        let cpus = group.cpu_list();
        let mut join = Vec::new();
        match cgroup
            .path
            .as_ref()
            .filter(|p| p.join("cpuset.cpus").exists())
        {
            Some(dir) => {
                write(&dir.join("cpuset.cpus"), &cpus)?;
                self.tracked.insert(cgroup.id, Placement::V2(dir.clone()));
            }
            None => {
                self.ensure_v1_dir()?;
                let dir = self.v1_dir.join(cgroup.id.to_string());
                if !dir.exists() {
                    fs::create_dir(&dir).map_err(|e| ActorError::cgroup("create", &dir, e))?;
                    if let Err(e) = mark(&dir, &self.owner) {
                        let _ = fs::remove_dir(&dir);
                        return Err(e);
                    }
                    let mems = read(&self.v1_dir.join("cpuset.mems"))?;
                    write(&dir.join("cpuset.mems"), &mems)?;
                } else if !self.owns(&dir) {
                    return Err(ActorError::cgroup(
                        "use (it belongs to another runtime or was not made by corral)",
                        &dir,
                        std::io::Error::from(ErrorKind::AlreadyExists),
                    ));
                }
                write(&dir.join("cpuset.cpus"), &cpus)?;
                // Processes already in the container move into the v1 cpuset; later ones join
                // it when they start (see `Enforcement::join`).
                if let Some(v2) = &cgroup.path {
                    for pid in cgroup_pids(v2).unwrap_or_default() {
                        let _ = fs::write(dir.join("cgroup.procs"), pid.to_string());
                    }
                }
                join.push(dir.join("cgroup.procs"));
                self.tracked.insert(cgroup.id, Placement::V1(dir));
            }
        }
        Ok(Enforcement {
            cgroup: cgroup.id,
            group: group.id,
            cpus: group.cpus.clone(),
            sched_ext: false,
            join,
            commit_time: Duration::ZERO,
            sweep_time: Duration::ZERO,
            handled_at: None,
        })
    }

    fn remove(&mut self, cgroup: &CgroupRef) -> Result<bool, ActorError> {
        let placement = self.tracked.remove(&cgroup.id).or_else(|| {
            let dir = self.v1_dir.join(cgroup.id.to_string());
            self.owns(&dir).then_some(Placement::V1(dir))
        });
        match placement {
            None => Ok(false),
            Some(Placement::V2(dir)) => {
                match fs::write(dir.join("cpuset.cpus"), "") {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(ActorError::cgroup("reset cpuset.cpus of", dir, e)),
                }
                Ok(true)
            }
            Some(Placement::V1(dir)) => {
                for pid in cgroup_pids(&dir).unwrap_or_default() {
                    let _ = fs::write(self.v1_root.join("cgroup.procs"), pid.to_string());
                }
                match fs::remove_dir(&dir) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
                    Err(e) => Err(ActorError::cgroup("remove", &dir, e)),
                }
            }
        }
    }

    fn entries(&self) -> Result<Vec<(CgroupId, GroupId)>, ActorError> {
        let mut out = BTreeMap::new();
        for (id, placement) in &self.tracked {
            if let Placement::V2(dir) = placement {
                if let Ok(text) = fs::read_to_string(dir.join("cpuset.cpus")) {
                    if let Some(g) = self.group_of(text.trim()) {
                        out.insert(*id, g);
                    }
                }
            }
        }
        if let Ok(dirs) = fs::read_dir(&self.v1_dir) {
            for entry in dirs.flatten() {
                let Ok(id) = entry.file_name().to_string_lossy().parse::<u64>() else {
                    continue;
                };
                if !self.owns(&entry.path()) {
                    continue;
                }
                if let Ok(text) = fs::read_to_string(entry.path().join("cpuset.cpus")) {
                    if let Some(g) = self.group_of(text.trim()) {
                        out.insert(CgroupId(id), g);
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn close(&mut self) -> Result<(), ActorError> {
        if self.v1_dir.exists() {
            if let Ok(dirs) = fs::read_dir(&self.v1_dir) {
                for entry in dirs.flatten() {
                    let Ok(id) = entry.file_name().to_string_lossy().parse::<u64>() else {
                        continue;
                    };
                    if self.tracked.contains_key(&CgroupId(id)) || self.owns(&entry.path()) {
                        self.remove(&CgroupRef {
                            id: CgroupId(id),
                            path: None,
                        })?;
                    }
                }
            }
            // Only when empty and corral's: another runtime's cpusets may share the prefix.
            if marked(&self.v1_dir, PREFIX_MARK) {
                match fs::remove_dir(&self.v1_dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
                    Err(e) => return Err(ActorError::cgroup("remove", &self.v1_dir, e)),
                }
            }
            self.v1_ready = false;
        }
        Ok(())
    }
}
