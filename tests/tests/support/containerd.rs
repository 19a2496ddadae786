//! What the containerd tests share (the host's `tests/containerd.rs` and the VM suite's
//! `vm/containerd.rs`, which include this file): a containerd daemon of the test's own and a
//! root file system built from busybox and `corral-serve`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container as ContainerdContainer, CreateContainerRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, ListContainersRequest, ListTasksRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use corral::config::cgroup2_mount;
use corral::{
    ContainerBackendKind, FunctionMode, FunctionSpec, GroupConfig, PolicyKind, RuntimeConfig,
};

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "containerd tests start a containerd daemon and make cgroups: run them as root \
         (`cargo xtask test` does)"
    );
}

/// The path of `tool` on `PATH`, or a loud failure saying how to install it.
pub fn require_tool(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not installed, and the containerd tests need it: `cargo xtask setup` \
                 installs containerd and runc"
            )
        })
}

/// `corral-serve`: on `PATH` (the VM guest's), else from the target directory this test was
/// built into.
pub fn corral_serve() -> PathBuf {
    if let Some(on_path) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("corral-serve"))
        .find(|p| p.is_file())
    {
        return on_path;
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let serve = profile_dir.join("corral-serve");
    assert!(
        serve.is_file(),
        "{} is missing: build it with `cargo build -p corral --bin corral-serve` (cargo test \
         --workspace does) before running these tests",
        serve.display()
    );
    serve
}

/// A containerd daemon of the test's own, and a root file system for its containers.
pub struct Daemon {
    /// Its config, root, state, socket and the root file system; removed after it stops.
    pub _dir: tempfile::TempDir,
    pub child: Child,
    pub socket: PathBuf,
    pub rootfs: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        require_root();
        let containerd = require_tool("containerd");
        require_tool("runc");
        require_tool("containerd-shim-runc-v2");
        let dir = tempfile::Builder::new()
            .prefix("corral-ctrd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = socket.display(),
                opt = d.join("opt").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let mut child = Command::new(containerd)
            .arg("--config")
            .arg(&config)
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // The socket appears once the daemon serves (about 50 ms); bounded wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "containerd exited with {status} before serving:\n{}",
                    std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd never made its socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let rootfs = build_rootfs(&d.join("rootfs"));
        Daemon {
            _dir: dir,
            child,
            socket,
            rootfs,
        }
    }

    /// A runtime configuration on this daemon: groups `a` (CPU 0) and `b` (CPU 1), `fa` pinned
    /// to `a` and `fb` to `b`, both `corral-serve` in server mode.
    pub fn config(&self, parent: &Path, namespace: &str) -> RuntimeConfig {
        let mut c = RuntimeConfig::with_groups(
            [("a", "0"), ("b", "1")]
                .iter()
                .map(|(name, cpus)| GroupConfig {
                    name: (*name).into(),
                    cpus: (*cpus).into(),
                    slice_us: 5_000,
                    order: Default::default(),
                    borrow: false,
                    exclusive: false,
                })
                .collect(),
        );
        c.monitor.enabled = false;
        c.placement.policy = PolicyKind::Pinned;
        c.placement.pinned.insert("fa".into(), "a".into());
        c.placement.pinned.insert("fb".into(), "b".into());
        c.containers.backend = Some(ContainerBackendKind::Containerd);
        c.containers.cgroup_parent = Some(parent.to_path_buf());
        c.containers.containerd.socket = self.socket.clone();
        c.containers.containerd.namespace = namespace.into();
        c.containers.containerd.rootfs = Some(self.rootfs.clone());
        c.functions = vec![server("fa"), server("fb")];
        c
    }

    /// The containers in `namespace`, with their labels.
    pub fn containers(&self, namespace: &str) -> HashMap<String, HashMap<String, String>> {
        let (socket, ns) = (self.socket.clone(), namespace.to_string());
        api(move || async move {
            let ch = containerd_client::connect(&socket).await.unwrap();
            let list = ContainersClient::new(ch)
                .list(with_namespace!(ListContainersRequest::default(), ns))
                .await
                .unwrap()
                .into_inner();
            list.containers
                .into_iter()
                .map(|c| (c.id, c.labels))
                .collect()
        })
    }

    /// Creates a container corral did not (no task), with `labels`.
    pub fn create_foreign(&self, namespace: &str, id: &str, labels: &[(&str, &str)]) {
        let (socket, ns, id) = (self.socket.clone(), namespace.to_string(), id.to_string());
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let rootfs = self.rootfs.clone();
        api(move || async move {
            let ch = containerd_client::connect(&socket).await.unwrap();
            let spec = serde_json::json!({
                "ociVersion": "1.0.2",
                "process": {"args": ["/bin/sleep", "1000"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
                "root": {"path": rootfs, "readonly": true},
                "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
            });
            let container = ContainerdContainer {
                id,
                labels,
                runtime: Some(containerd_client::services::v1::container::Runtime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: serde_json::to_vec(&spec).unwrap(),
                }),
                ..Default::default()
            };
            ContainersClient::new(ch)
                .create(with_namespace!(
                    CreateContainerRequest {
                        container: Some(container)
                    },
                    ns
                ))
                .await
                .unwrap();
        })
    }

    /// Removes everything in `namespace` (the foreign containers, and what a failed test left).
    pub fn purge(&self, namespace: &str) {
        let (socket, ns) = (self.socket.clone(), namespace.to_string());
        api(move || async move {
            let Ok(ch) = containerd_client::connect(&socket).await else {
                return;
            };
            let mut tasks = TasksClient::new(ch.clone());
            if let Ok(list) = tasks
                .list(with_namespace!(ListTasksRequest::default(), ns))
                .await
            {
                for t in list.into_inner().tasks {
                    let id = t.id;
                    let _ = tasks
                        .kill(with_namespace!(
                            KillRequest {
                                container_id: id.clone(),
                                signal: 9,
                                all: true,
                                ..Default::default()
                            },
                            ns
                        ))
                        .await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        tasks.clone().wait(with_namespace!(
                            WaitRequest {
                                container_id: id.clone(),
                                ..Default::default()
                            },
                            ns
                        )),
                    )
                    .await;
                    let _ = tasks
                        .delete(with_namespace!(DeleteTaskRequest { container_id: id }, ns))
                        .await;
                }
            }
            let mut containers = ContainersClient::new(ch);
            if let Ok(list) = containers
                .list(with_namespace!(ListContainersRequest::default(), ns))
                .await
            {
                for c in list.into_inner().containers {
                    let _ = containers
                        .delete(with_namespace!(DeleteContainerRequest { id: c.id }, ns))
                        .await;
                }
            }
        })
    }
}

/// The daemon stops; tasks a failed test left were purged by that test's namespace guard, and
/// their shims (which outlive the daemon) exit with them.
impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Runs a containerd API call on a runtime of its own, on a thread of its own (the tests call
/// it from inside their tokio runtime).
pub fn api<T, F>(call: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(call())
    })
    .join()
    .unwrap()
}

/// A test's namespace and cgroup parent. Dropped, it purges the namespace and removes the
/// parent's cgroup directories (plain rmdir, leaves first, in cgroup2 and every v1 hierarchy,
/// where runc mirrors them on hybrid hosts), so that a failing test leaves nothing behind.
pub struct Namespace<'a> {
    pub daemon: &'a Daemon,
    pub name: String,
    pub parent: PathBuf,
    /// More cgroup trees to remove (a test's v1 cpuset prefix).
    pub extra: std::cell::RefCell<Vec<PathBuf>>,
}

impl<'a> Namespace<'a> {
    pub fn new(daemon: &'a Daemon, name: &str, parent_name: &str) -> Self {
        Namespace {
            daemon,
            name: name.into(),
            parent: parent(parent_name),
            extra: Default::default(),
        }
    }

    pub fn also_remove(&self, tree: PathBuf) {
        self.extra.borrow_mut().push(tree);
    }
}

/// Removes the cgroup directory `dir` and its descendants with plain rmdirs, leaves first.
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&child.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        self.daemon.purge(&self.name);
        let v2 = cgroup2_mount().unwrap();
        if let Ok(rel) = self.parent.strip_prefix(&v2) {
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            for line in mounts.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
                    remove_cgroup_tree(&Path::new(f[1]).join(rel));
                }
            }
        }
        for tree in self.extra.borrow().iter() {
            remove_cgroup_tree(tree);
        }
        let fifos = Path::new("/run/corral/containerd").join(self.parent.file_name().unwrap());
        let _ = std::fs::remove_dir_all(fifos);
        let _ = std::fs::remove_dir(Path::new("/run/corral/containerd"));
        let _ = std::fs::remove_dir(Path::new("/run/corral"));
    }
}

/// A root file system: a static busybox (`sh`, `sleep`, `cat`, `grep`, `echo`), and `corral-serve` with the
/// shared libraries `ldd` lists, at their own paths.
pub fn build_rootfs(root: &Path) -> PathBuf {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: `cargo xtask setup` installs busybox-static"
    );
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "grep", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let serve = corral_serve();
    std::fs::copy(&serve, root.join("bin/corral-serve")).unwrap();
    match Command::new("ldd").arg(&serve).output() {
        Ok(ldd) => {
            assert!(ldd.status.success(), "ldd {}", serve.display());
            for lib in String::from_utf8_lossy(&ldd.stdout)
                .split_whitespace()
                .filter(|w| w.starts_with('/'))
            {
                let inside = root.join(lib.trim_start_matches('/'));
                std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
                std::fs::copy(lib, &inside).unwrap();
            }
        }
        // The VM guest has no ldd; its library directories hold only what its binaries need
        // (the harness copied exactly those), so they are copied whole.
        Err(_) => {
            for dir in ["lib", "lib64", "usr/lib", "usr/lib64"] {
                let from = Path::new("/").join(dir);
                if from.is_dir() {
                    copy_tree(&from, &root.join(dir));
                }
            }
        }
    }
    root.to_path_buf()
}

/// Copies a directory tree (files and symbolic links).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let target = std::fs::read_link(&src).unwrap();
            let _ = std::os::unix::fs::symlink(target, &dest);
        } else if kind.is_dir() {
            copy_tree(&src, &dest);
        } else {
            std::fs::copy(&src, &dest).unwrap();
        }
    }
}

pub fn server(name: &str) -> FunctionSpec {
    let mut f = FunctionSpec::named(name);
    f.mode = FunctionMode::Server;
    f.command = vec!["/bin/corral-serve".into()];
    f.timeout_ms = Some(1_000);
    f
}

pub fn parent(name: &str) -> PathBuf {
    cgroup2_mount()
        .expect("a cgroup2 mount")
        .join(format!("corral-test-{}-{name}", std::process::id()))
}
