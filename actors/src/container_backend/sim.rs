//! The `sim` container backend: containers are entries in a table with synthetic cgroup ids; a
//! cold start and an invocation take configurable simulated time and start no process. For
//! logic tests and large simulations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{CgroupId, CgroupRef, Container, ContainerBackend, ContainerInfo};
use crate::config::FunctionSpec;
use crate::error::ActorError;

/// Synthetic cgroup ids start here, far above real cgroupfs inode numbers.
const SIM_CGROUP_BASE: u64 = 1 << 40;

/// Containers without processes.
#[derive(Debug, Clone)]
pub struct SimBackend {
    cold_start: Duration,
    seq: Arc<AtomicU64>,
    containers: Arc<Mutex<BTreeMap<String, ContainerInfo>>>,
    runs: Arc<AtomicU64>,
}

impl SimBackend {
    /// A backend whose cold starts take `cold_start`.
    pub fn new(cold_start: Duration) -> Self {
        SimBackend {
            cold_start,
            seq: Arc::new(AtomicU64::new(1)),
            containers: Arc::new(Mutex::new(BTreeMap::new())),
            runs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Invocations run so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Containers that exist now.
    pub fn len(&self) -> usize {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no container exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ContainerBackend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn check_function(&self, _spec: &FunctionSpec) -> Result<(), ActorError> {
        Ok(())
    }

    fn create(&self, spec: &FunctionSpec) -> BoxFuture<'static, Result<ContainerInfo, ActorError>> {
        let this = self.clone();
        let function = spec.name.clone();
        async move {
            if !this.cold_start.is_zero() {
                tokio::time::sleep(this.cold_start).await;
            }
            let n = this.seq.fetch_add(1, Ordering::Relaxed);
            let info = ContainerInfo {
                id: format!("{function}@{n}"),
                function,
                cgroup: CgroupRef {
                    id: CgroupId(SIM_CGROUP_BASE + n),
                    path: None,
                },
            };
            this.containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(info.id.clone(), info.clone());
            Ok(info)
        }
        .boxed()
    }

    fn destroy(&self, container: &ContainerInfo) -> Result<(), ActorError> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&container.id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<ContainerInfo>, ActorError> {
        Ok(self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect())
    }

    fn run(
        &self,
        container: &Container,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, ActorError>> {
        let run_time = Duration::from_micros(container.spec.simulated_run_us);
        let runs = Arc::clone(&self.runs);
        async move {
            if !run_time.is_zero() {
                tokio::time::sleep(run_time).await;
            }
            runs.fetch_add(1, Ordering::Relaxed);
            Ok(payload)
        }
        .boxed()
    }

    fn close(&self) -> Result<(), ActorError> {
        Ok(())
    }
}
