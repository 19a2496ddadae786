//! Cgroup names as container runtimes write them, resolved to a cgroup v2 id (the inode of the
//! cgroup directory, which is what the scheduler's maps are keyed by).
//!
//! A name is a path relative to the cgroup2 mount, as `/proc/<pid>/cgroup` prints it; a leading
//! `/` is allowed. Four forms:
//! - Docker's `cgroupfs` driver: `docker/<64 hex>`.
//! - Docker's `systemd` driver: `system.slice/docker-<64 hex>.scope`.
//! - containerd's given path (`/default/<id>`, `k8s.io/<id>`), and any other plain path
//!   (`corral/fn-a`).
//! - A file-system path inside the mount (`/sys/fs/cgroup/corral/fn-a`): the mount's own path is
//!   taken off and the rest read as a name. A cgroup whose own path repeats the mount's (one
//!   named `sys/fs/cgroup/...` under `/sys/fs/cgroup`) cannot be named this way.
//!
//! [`CgroupName::parse`] refuses, without touching the file system, what can never name a cgroup
//! inside the mount: an empty name or component, `.` and `..`, control characters, and a Docker
//! form whose id is not 64 lowercase hex digits. A bare container id is refused too rather than
//! tried under both drivers: the two drivers put the same id in different places, and after a
//! driver switch a stale directory of the other one would be found and silently enforced.
//! [`CgroupName::resolve`] then checks, on the file system, that the name leads to a directory
//! inside the mount (after following symbolic links) on cgroup2.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::local::is_cgroup2;
use super::{CgroupId, CgroupRef};
use crate::error::ActorError;

/// The key a refused name is reported under.
const KEY: &str = "cgroup";
/// How many hex digits a Docker container id has.
const DOCKER_ID_LEN: usize = 64;
/// Where a Docker container id, and the driver in use, can be read.
const DOCKER_HINT: &str = "`docker inspect -f '{{.Id}}' <container>` prints the full id, \
                           `docker info -f '{{.CgroupDriver}}'` the driver";

/// The mount points of cgroup2 file systems, in `/proc/mounts` order (empty when it cannot be
/// read).
pub fn cgroup2_mounts() -> Vec<PathBuf> {
    let mut mounts = mounts_of_type("cgroup2");
    mounts.retain(|p| is_cgroup2(p));
    mounts
}

/// The mount points of file systems of type `fstype` (`cgroup2`, `cgroup`) in `/proc/mounts`
/// order (empty when it cannot be read).
pub fn mounts_of_type(fstype: &str) -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == fstype).then(|| PathBuf::from(point))
        })
        .collect()
}

/// The first cgroup2 mount (`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one).
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mounts().into_iter().next()
}

/// A cgroup named by a container runtime, checked to lie inside the cgroup2 mount.
///
/// Build one with [`CgroupName::parse`]; [`CgroupName::resolve`] checks again that what the name
/// leads to lies inside the mount, so a hand-built value cannot escape it either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupName {
    /// Docker's `cgroupfs` driver: `docker/<id>`.
    DockerCgroupfs {
        /// The container id, 64 lowercase hex digits.
        id: String,
    },
    /// Docker's `systemd` driver: `system.slice/docker-<id>.scope`.
    DockerSystemd {
        /// The container id, 64 lowercase hex digits.
        id: String,
    },
    /// Any other path: containerd's given path, a plain path under the mount, or a file-system
    /// path inside it, as written.
    Path(PathBuf),
}

impl CgroupName {
    /// Reads `name` as one of the forms of the module doc; the error names the value and the fix.
    pub fn parse(name: &str) -> Result<Self, ActorError> {
        let bad = |reason: String| ActorError::invalid(KEY, name, reason);
        if name.is_empty() {
            return Err(bad(format!(
                "is empty; name a cgroup, e.g. docker/<{DOCKER_ID_LEN} hex> or \
                 system.slice/docker-<{DOCKER_ID_LEN} hex>.scope"
            )));
        }
        if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
            return Err(bad(format!(
                "has the control character U+{:04X} at byte {at}; write the name as printable \
                 text",
                u32::from(c)
            )));
        }
        let relative = name.strip_prefix('/').unwrap_or(name);
        if relative.is_empty() {
            return Err(bad(
                "names the root of the cgroup2 mount, which holds every process of the host; \
                 name a cgroup below it"
                    .into(),
            ));
        }
        let parts: Vec<&str> = relative.split('/').collect();
        for part in &parts {
            match *part {
                "" => {
                    return Err(bad(
                        "has an empty component (a doubled, leading or trailing `/`); write \
                         each `/` once and none at the end"
                            .into(),
                    ))
                }
                "." | ".." => {
                    return Err(bad(format!(
                        "has a `{part}` component; name the cgroup by its own path, without \
                         `.` or `..`"
                    )))
                }
                _ => {}
            }
        }
        match parts.as_slice() {
            ["docker", id] => {
                check_docker_id(id, "docker/<id>").map_err(bad)?;
                Ok(CgroupName::DockerCgroupfs {
                    id: (*id).to_owned(),
                })
            }
            ["system.slice", unit] => {
                match unit
                    .strip_prefix("docker-")
                    .and_then(|u| u.strip_suffix(".scope"))
                {
                    Some(id) => {
                        check_docker_id(id, "system.slice/docker-<id>.scope").map_err(bad)?;
                        Ok(CgroupName::DockerSystemd { id: id.to_owned() })
                    }
                    None => Ok(CgroupName::Path(PathBuf::from(name))),
                }
            }
            [one] if one.len() == DOCKER_ID_LEN && one.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Err(bad(format!(
                    "is a bare container id; name its cgroup as Docker's cgroup driver places \
                     it: docker/<id> (cgroupfs) or system.slice/docker-<id>.scope (systemd); \
                     {DOCKER_HINT}"
                )))
            }
            [one] if is_runc_systemd_path(one) => Err(bad(
                "is runc's systemd form slice:prefix:name, not a cgroup path; give the path \
                 that /proc/<pid>/cgroup shows for a process of the container"
                    .into(),
            )),
            _ => Ok(CgroupName::Path(PathBuf::from(name))),
        }
    }

    /// Resolves the name under `cgroup2_mount` to the cgroup's id (its directory's inode) and
    /// its directory, with symbolic links followed.
    ///
    /// Refuses a mount that is not cgroup2, a name that does not exist (naming the other Docker
    /// driver's form when the name has one), one that leads outside the mount, to a file, or to
    /// a directory that is not on cgroup2.
    pub fn resolve(&self, cgroup2_mount: &Path) -> Result<CgroupRef, ActorError> {
        if !is_cgroup2(cgroup2_mount) {
            return Err(ActorError::invalid(
                "cgroup2 mount",
                cgroup2_mount.display(),
                "is not a cgroup2 file system, or does not exist; pass where cgroup2 is \
                 mounted, as `findmnt -t cgroup2` shows (/sys/fs/cgroup, or \
                 /sys/fs/cgroup/unified on a hybrid host)",
            ));
        }
        let dir = self.locate(cgroup2_mount)?;
        // The checks below and the inode read go by path, not through one open descriptor: a
        // cgroup removed and re-created in between yields the new cgroup's id, which is what
        // naming it asks for, and cgroup2 holds no symbolic link that could be swapped in.
        let meta =
            fs::metadata(&dir).map_err(|e| ActorError::cgroup("read the metadata of", &dir, e))?;
        if !meta.is_dir() {
            return Err(ActorError::invalid(
                KEY,
                self,
                format!(
                    "leads to `{}`, a file, not a cgroup directory; name the directory that \
                     holds it",
                    dir.display()
                ),
            ));
        }
        if !is_cgroup2(&dir) {
            return Err(ActorError::invalid(
                KEY,
                self,
                format!(
                    "leads to `{}`, which is not on a cgroup2 file system (another file system \
                     is mounted there); name a cgroup v2 directory",
                    dir.display()
                ),
            ));
        }
        Ok(CgroupRef {
            id: CgroupId(meta.ino()),
            path: Some(dir),
        })
    }

    /// The name's path relative to the mount.
    fn relative(&self) -> PathBuf {
        match self {
            CgroupName::DockerCgroupfs { id } => PathBuf::from(format!("docker/{id}")),
            CgroupName::DockerSystemd { id } => {
                PathBuf::from(format!("system.slice/docker-{id}.scope"))
            }
            CgroupName::Path(p) => p.strip_prefix("/").unwrap_or(p).to_path_buf(),
        }
    }
}

impl CgroupName {
    /// The directory the name leads to, canonical, and checked to lie strictly inside `mount`
    /// (which this does not check is cgroup2, so that tests can use any directory).
    fn locate(&self, mount: &Path) -> Result<PathBuf, ActorError> {
        let root = fs::canonicalize(mount)
            .map_err(|e| ActorError::cgroup("resolve the cgroup2 mount", mount, e))?;
        // A file-system path through the mount (as given, or canonical): the rest is the name,
        // checked as one (it is relative, so this recurses once at most).
        let through_mount = match self {
            CgroupName::Path(p) if p.is_absolute() => [mount, root.as_path()]
                .into_iter()
                .find_map(|m| p.strip_prefix(m).ok()),
            _ => None,
        };
        if let Some(rest) = through_mount {
            if rest.as_os_str().is_empty() {
                return Err(self.names_root());
            }
            return CgroupName::parse(&rest.to_string_lossy())?.locate(mount);
        }
        let joined = root.join(self.relative());
        let dir = match fs::canonicalize(&joined) {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.missing(&root)),
            Err(e) => return Err(ActorError::cgroup("resolve", joined, e)),
        };
        if dir == root {
            return Err(self.names_root());
        }
        if !dir.starts_with(&root) {
            return Err(ActorError::invalid(
                KEY,
                self,
                format!(
                    "leads through a symbolic link to `{}`, outside the cgroup2 mount `{}`; \
                     name a cgroup inside the mount",
                    dir.display(),
                    root.display()
                ),
            ));
        }
        Ok(dir)
    }

    /// The error for a name that leads to the mount's root.
    fn names_root(&self) -> ActorError {
        ActorError::invalid(
            KEY,
            self,
            "names the root of the cgroup2 mount, which holds every process of the host; name a \
             cgroup below it",
        )
    }

    /// The error for a name with no directory under `root`, with what to check for its form.
    fn missing(&self, root: &Path) -> ActorError {
        let root = root.display();
        let reason = match self {
            CgroupName::DockerCgroupfs { id } => format!(
                "no such cgroup under `{root}`; is the container running, and does Docker use \
                 the cgroupfs driver? With the systemd driver its cgroup is \
                 system.slice/docker-{id}.scope ({DOCKER_HINT})"
            ),
            CgroupName::DockerSystemd { id } => format!(
                "no such cgroup under `{root}`; is the container running, and does Docker use \
                 the systemd driver? With the cgroupfs driver its cgroup is docker/{id} \
                 ({DOCKER_HINT})"
            ),
            CgroupName::Path(p) if p.is_absolute() && p.exists() => format!(
                "`{}` exists, but outside the cgroup2 mount `{root}`; name a cgroup inside the \
                 mount",
                p.display()
            ),
            CgroupName::Path(_) => format!(
                "no such cgroup under `{root}`; names are relative to the cgroup2 mount, as \
                 /proc/<pid>/cgroup prints them (a Docker container's is docker/<id> with the \
                 cgroupfs driver, system.slice/docker-<id>.scope with the systemd one)"
            ),
        };
        ActorError::invalid(KEY, self, reason)
    }
}

impl fmt::Display for CgroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupName::Path(p) => write!(f, "{}", p.display()),
            _ => write!(f, "{}", self.relative().display()),
        }
    }
}

/// Checks a Docker container id of a name of `form`; the error says what is wrong and the fix.
fn check_docker_id(id: &str, form: &str) -> Result<(), String> {
    for (n, c) in id.chars().enumerate() {
        let at = n + 1;
        if c.is_ascii_uppercase() && c.is_ascii_hexdigit() {
            return Err(format!(
                "has the uppercase `{c}` at character {at} of the id; {form} takes Docker's id \
                 in lowercase, as `docker inspect` prints it"
            ));
        }
        if !matches!(c, '0'..='9' | 'a'..='f') {
            return Err(format!(
                "has `{c}` at character {at} of the id, not a hex digit; {form} takes the \
                 container's {DOCKER_ID_LEN}-hex id, not its name ({DOCKER_HINT})"
            ));
        }
    }
    let len = id.chars().count();
    if len != DOCKER_ID_LEN {
        return Err(format!(
            "expected {form} with a {DOCKER_ID_LEN}-hex id, got {len} characters; give the full \
             id, not the short one ({DOCKER_HINT})"
        ));
    }
    Ok(())
}

/// Whether `s` is runc's systemd cgroup path, `slice:prefix:name` (the slice may be empty).
fn is_runc_systemd_path(s: &str) -> bool {
    let fields: Vec<&str> = s.split(':').collect();
    fields.len() == 3 && (fields[0].is_empty() || fields[0].ends_with(".slice"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container id as Docker writes one.
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    /// A second one, to show that two cgroups resolve to two ids.
    const OTHER_ID: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    /// The reason of a refusal, which must be an `InvalidConfig` naming `value`.
    fn refusal(result: Result<impl fmt::Debug, ActorError>, value: &str) -> String {
        match result {
            Err(ActorError::InvalidConfig {
                value: v, reason, ..
            }) => {
                assert_eq!(v, value, "the error names the value at fault");
                reason
            }
            other => panic!("expected {value:?} to be refused as invalid, got {other:?}"),
        }
    }

    /// The cgroup2 mount; panics if there is none, since the resolve tests need real cgroup
    /// v2 directories.
    fn cgroup2_mount() -> PathBuf {
        super::cgroup2_mount().unwrap_or_else(|| {
            panic!(
                "no cgroup2 file system is mounted (/proc/mounts lists none); these tests \
                 resolve real cgroup v2 directories: mount one with \
                 `mount -t cgroup2 none /sys/fs/cgroup`"
            )
        })
    }

    /// A test's own cgroup v2 directory under the cgroup2 mount, passed to `resolve` as the
    /// mount; every directory made in it is removed, deepest first, when it is dropped.
    struct Scratch {
        root: PathBuf,
        made: Vec<PathBuf>,
    }

    impl Scratch {
        fn new(test: &str) -> Self {
            let root =
                cgroup2_mount().join(format!("corral-test-names-{}-{test}", std::process::id()));
            fs::create_dir(&root).unwrap_or_else(|e| {
                panic!(
                    "cannot create the test cgroup {} ({e}); these tests run as root on a \
                     cgroup2 host",
                    root.display()
                )
            });
            Scratch {
                made: vec![root.clone()],
                root,
            }
        }

        /// Makes `relative` (and the directories above it) under the root; returns its inode.
        fn make(&mut self, relative: &str) -> u64 {
            let mut dir = self.root.clone();
            for part in Path::new(relative).components() {
                dir.push(part);
                if !dir.exists() {
                    fs::create_dir(&dir).unwrap_or_else(|e| {
                        panic!("cannot create the test cgroup {} ({e})", dir.display())
                    });
                    self.made.push(dir.clone());
                }
            }
            fs::metadata(&dir).expect("stat a test cgroup").ino()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            for dir in self.made.iter().rev() {
                if let Err(e) = fs::remove_dir(dir) {
                    eprintln!("cannot remove the test cgroup {}: {e}", dir.display());
                }
            }
        }
    }

    /// Docker's cgroupfs form parses to its variant with the id, with or without the leading
    /// `/` that /proc/<pid>/cgroup prints.
    #[test]
    fn docker_cgroupfs_form_parses_with_or_without_leading_slash() {
        for name in [format!("docker/{ID}"), format!("/docker/{ID}")] {
            assert_eq!(
                CgroupName::parse(&name).unwrap(),
                CgroupName::DockerCgroupfs { id: ID.into() },
                "{name}"
            );
        }
    }

    /// Docker's systemd form parses to its variant with the id.
    #[test]
    fn docker_systemd_form_parses_with_or_without_leading_slash() {
        for name in [
            format!("system.slice/docker-{ID}.scope"),
            format!("/system.slice/docker-{ID}.scope"),
        ] {
            assert_eq!(
                CgroupName::parse(&name).unwrap(),
                CgroupName::DockerSystemd { id: ID.into() },
                "{name}"
            );
        }
    }

    /// containerd's given paths, plain paths, file-system paths and names that only look like
    /// a Docker form (`docker` itself, a cgroup nested in a container's, another systemd unit)
    /// are kept as written.
    #[test]
    fn other_paths_parse_as_written() {
        for name in [
            format!("/default/{ID}"),
            format!("k8s.io/{ID}"),
            "corral/fn-a".to_owned(),
            "/sys/fs/cgroup/corral/fn-a".to_owned(),
            "docker".to_owned(),
            format!("docker/{ID}/init.scope"),
            "system.slice/docker.service".to_owned(),
        ] {
            assert_eq!(
                CgroupName::parse(&name).unwrap(),
                CgroupName::Path(PathBuf::from(&name)),
                "{name}"
            );
        }
    }

    /// Display gives back a name that parses to the same value.
    #[test]
    fn display_round_trips_through_parse() {
        for name in [
            format!("/docker/{ID}"),
            format!("system.slice/docker-{ID}.scope"),
            "/default/x".to_owned(),
        ] {
            let parsed = CgroupName::parse(&name).unwrap();
            assert_eq!(CgroupName::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }

    /// An id one digit short or long is refused, with its length and the fix, in both Docker
    /// forms.
    #[test]
    fn docker_id_of_wrong_length_is_refused_with_its_length() {
        let short = &ID[..63];
        let long = format!("{ID}0");
        for (name, len) in [
            (format!("docker/{short}"), 63),
            (format!("docker/{long}"), 65),
            (format!("system.slice/docker-{short}.scope"), 63),
            (format!("docker/{}", &ID[..12]), 12),
        ] {
            let reason = refusal(CgroupName::parse(&name), &name);
            assert!(
                reason.contains(&format!("64-hex id, got {len} characters")),
                "{name}: {reason}"
            );
            assert!(reason.contains("docker inspect"), "the fix: {reason}");
        }
    }

    /// A character that is no hex digit (a container name given instead of its id) is refused
    /// at its position.
    #[test]
    fn docker_id_with_non_hex_is_refused_at_the_character() {
        let name = format!("docker/{}g{}", &ID[..4], &ID[5..]);
        let reason = refusal(CgroupName::parse(&name), &name);
        assert!(reason.contains("`g` at character 5"), "{reason}");
        let name = "system.slice/docker-my-web.scope";
        let reason = refusal(CgroupName::parse(name), name);
        assert!(reason.contains("`m` at character 1"), "{reason}");
        assert!(reason.contains("not its name"), "{reason}");
    }

    /// Uppercase hex is refused (cgroup directories are case-sensitive, Docker writes
    /// lowercase) rather than folded.
    #[test]
    fn docker_id_in_uppercase_is_refused() {
        let name = format!("docker/{}", ID.to_uppercase());
        let reason = refusal(CgroupName::parse(&name), &name);
        assert!(reason.contains("uppercase `A` at character 11"), "{reason}");
    }

    /// A bare id is refused, and the error gives both driver forms rather than guessing one.
    #[test]
    fn bare_docker_id_is_refused_naming_both_driver_forms() {
        for name in [ID.to_owned(), format!("/{ID}")] {
            let reason = refusal(CgroupName::parse(&name), &name);
            assert!(reason.contains("docker/<id>"), "{reason}");
            assert!(
                reason.contains("system.slice/docker-<id>.scope"),
                "{reason}"
            );
        }
    }

    /// `.` and `..` are refused anywhere, including a file-system path climbing out of the
    /// mount.
    #[test]
    fn dot_and_dot_dot_components_are_refused() {
        for name in [
            "docker/..",
            "../etc",
            "corral/./fn-a",
            "/sys/fs/cgroup/../../etc",
            ".",
        ] {
            let reason = refusal(CgroupName::parse(name), name);
            assert!(reason.contains("without `.` or `..`"), "{name}: {reason}");
        }
    }

    /// Doubled, leading and trailing slashes are refused.
    #[test]
    fn empty_components_are_refused() {
        for name in [
            format!("docker//{ID}"),
            format!("docker/{ID}/"),
            format!("//docker/{ID}"),
        ] {
            let reason = refusal(CgroupName::parse(&name), &name);
            assert!(reason.contains("empty component"), "{name}: {reason}");
        }
    }

    /// An empty name, the root, and control characters (NUL, a newline) are refused.
    #[test]
    fn empty_root_and_control_characters_are_refused() {
        assert!(refusal(CgroupName::parse(""), "").contains("is empty"));
        assert!(refusal(CgroupName::parse("/"), "/").contains("root of the cgroup2 mount"));
        let reason = refusal(CgroupName::parse("corral/a\0b"), "corral/a\0b");
        assert!(reason.contains("U+0000 at byte 8"), "{reason}");
        let reason = refusal(CgroupName::parse("corral\nb"), "corral\nb");
        assert!(reason.contains("U+000A at byte 6"), "{reason}");
    }

    /// runc's `slice:prefix:name` is refused with a pointer to the real path.
    #[test]
    fn runc_systemd_form_is_refused() {
        let name = format!("system.slice:docker:{ID}");
        let reason = refusal(CgroupName::parse(&name), &name);
        assert!(reason.contains("slice:prefix:name"), "{reason}");
    }

    /// Docker's cgroupfs form resolves to its directory and that directory's inode; a second
    /// container's resolves to another id, so the comparison can fail.
    #[test]
    fn docker_cgroupfs_form_resolves_to_the_directory_inode() {
        let mut scratch = Scratch::new("cgroupfs");
        let ino = scratch.make(&format!("docker/{ID}"));
        let other = scratch.make(&format!("docker/{OTHER_ID}"));
        let got = CgroupName::parse(&format!("/docker/{ID}"))
            .unwrap()
            .resolve(&scratch.root)
            .unwrap();
        assert_eq!(got.id, CgroupId(ino));
        assert_eq!(got.path, Some(scratch.root.join(format!("docker/{ID}"))));
        let got_other = CgroupName::parse(&format!("docker/{OTHER_ID}"))
            .unwrap()
            .resolve(&scratch.root)
            .unwrap();
        assert_eq!(got_other.id, CgroupId(other));
        assert_ne!(got.id, got_other.id);
    }

    /// Docker's systemd form resolves under a `system.slice` of the test's own.
    #[test]
    fn docker_systemd_form_resolves_to_the_directory_inode() {
        let mut scratch = Scratch::new("systemd");
        let ino = scratch.make(&format!("system.slice/docker-{ID}.scope"));
        let got = CgroupName::parse(&format!("system.slice/docker-{ID}.scope"))
            .unwrap()
            .resolve(&scratch.root)
            .unwrap();
        assert_eq!(got.id, CgroupId(ino));
    }

    /// containerd's given paths, a plain path and a file-system path inside the mount resolve
    /// to their directories' inodes.
    #[test]
    fn containerd_plain_and_file_system_paths_resolve() {
        let mut scratch = Scratch::new("paths");
        for relative in [
            format!("default/{ID}"),
            format!("k8s.io/{ID}"),
            "corral/fn-a".into(),
        ] {
            let ino = scratch.make(&relative);
            let absolute = scratch.root.join(&relative).display().to_string();
            for name in [format!("/{relative}"), relative.clone(), absolute] {
                let got = CgroupName::parse(&name)
                    .unwrap()
                    .resolve(&scratch.root)
                    .unwrap();
                assert_eq!(got.id, CgroupId(ino), "{name}");
            }
        }
    }

    /// A file-system path through the mount that names a Docker form is checked as one.
    #[test]
    fn file_system_path_is_checked_as_the_name_it_holds() {
        let scratch = Scratch::new("fspath");
        let name = format!("{}/docker/{}", scratch.root.display(), &ID[..63]);
        let reason = refusal(
            CgroupName::parse(&name).unwrap().resolve(&scratch.root),
            &format!("docker/{}", &ID[..63]),
        );
        assert!(reason.contains("got 63 characters"), "{reason}");
    }

    /// A missing Docker cgroup names the other driver's form; a missing path says names are
    /// relative to the mount.
    #[test]
    fn missing_cgroup_names_the_other_driver() {
        let scratch = Scratch::new("missing");
        let name = format!("docker/{ID}");
        let reason = refusal(
            CgroupName::parse(&name).unwrap().resolve(&scratch.root),
            &name,
        );
        assert!(reason.contains("no such cgroup"), "{reason}");
        assert!(
            reason.contains(&format!("system.slice/docker-{ID}.scope")),
            "{reason}"
        );
        let name = format!("system.slice/docker-{ID}.scope");
        let reason = refusal(
            CgroupName::parse(&name).unwrap().resolve(&scratch.root),
            &name,
        );
        assert!(reason.contains(&format!("docker/{ID}")), "{reason}");
        let name = "corral/nope";
        let reason = refusal(
            CgroupName::parse(name).unwrap().resolve(&scratch.root),
            name,
        );
        assert!(reason.contains("relative to the cgroup2 mount"), "{reason}");
    }

    /// A name that leads to a file of a cgroup is refused as no directory.
    #[test]
    fn file_in_a_cgroup_is_refused() {
        let scratch = Scratch::new("file");
        let reason = refusal(
            CgroupName::parse("cgroup.procs")
                .unwrap()
                .resolve(&scratch.root),
            "cgroup.procs",
        );
        assert!(
            reason.contains("a file, not a cgroup directory"),
            "{reason}"
        );
    }

    /// A mount that is not cgroup2 is refused before any name is looked up.
    #[test]
    fn mount_not_on_cgroup2_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("corral")).unwrap();
        let reason = refusal(
            CgroupName::parse("corral").unwrap().resolve(tmp.path()),
            &tmp.path().display().to_string(),
        );
        assert!(reason.contains("is not a cgroup2 file system"), "{reason}");
    }

    /// A symbolic link out of the mount is refused after canonicalization (cgroup2 cannot
    /// hold one, so the check runs on a plain directory through `locate`).
    #[test]
    fn symbolic_link_out_of_the_mount_is_refused() {
        let mount = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), mount.path().join("escape")).unwrap();
        let reason = refusal(
            CgroupName::parse("escape").unwrap().locate(mount.path()),
            "escape",
        );
        assert!(reason.contains("outside the cgroup2 mount"), "{reason}");
        let inside = mount.path().join("inside");
        fs::create_dir(&inside).unwrap();
        std::os::unix::fs::symlink(&inside, mount.path().join("alias")).unwrap();
        assert_eq!(
            CgroupName::parse("alias")
                .unwrap()
                .locate(mount.path())
                .unwrap(),
            fs::canonicalize(&inside).unwrap(),
            "a link that stays inside is followed"
        );
    }

    /// An absolute path outside the mount is refused as outside, not looked up under it.
    #[test]
    fn absolute_path_outside_the_mount_is_refused() {
        let scratch = Scratch::new("outside");
        let tmp = tempfile::tempdir().unwrap();
        let name = tmp.path().display().to_string();
        let reason = refusal(
            CgroupName::parse(&name).unwrap().resolve(&scratch.root),
            &name,
        );
        assert!(reason.contains("outside the cgroup2 mount"), "{reason}");
    }
}
