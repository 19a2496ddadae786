//! Where `monitor_load` reads CPU pressure: `/proc/pressure/cpu` (`some avg10`, the share of
//! time runnable tasks waited for a CPU) where the kernel has PSI, else `/proc/loadavg` (the
//! 1-minute load over the online CPUs, as a percentage). The source is a trait so tests inject
//! scripted pressure and stay deterministic.

use std::fmt::Debug;
use std::path::PathBuf;

use crate::config::PressureSourceKind;
use crate::error::ActorError;

/// A source of CPU pressure samples, in percent.
pub trait PressureSource: Send + Debug + 'static {
    /// Takes one sample.
    fn sample(&mut self) -> Result<f64, ActorError>;
    /// What it reads, for logs.
    fn describe(&self) -> String;
}

/// Pressure set by hand (scenarios, tests): every sample reads the value last set. Clones
/// share the value, so one clone goes to the runtime and the other stays with the script.
#[derive(Debug, Clone, Default)]
pub struct ScriptedPressure(std::sync::Arc<std::sync::Mutex<f64>>);

impl ScriptedPressure {
    /// Sets the pressure the next sample reads (a percentage, like `/proc/pressure/cpu`).
    pub fn set(&self, value: f64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

impl PressureSource for ScriptedPressure {
    fn sample(&mut self) -> Result<f64, ActorError> {
        Ok(*self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn describe(&self) -> String {
        "scripted".to_string()
    }
}

/// `/proc/pressure/cpu`, `some avg10`.
#[derive(Debug)]
pub struct PsiPressure {
    path: PathBuf,
}

impl PsiPressure {
    /// Reads `path` (normally `/proc/pressure/cpu`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PsiPressure { path: path.into() }
    }
}

impl PressureSource for PsiPressure {
    fn sample(&mut self) -> Result<f64, ActorError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| ActorError::Pressure {
            path: self.path.clone(),
            source,
        })?;
        parse_psi_some_avg10(&text).ok_or_else(|| ActorError::Pressure {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no `some avg10=` field in {text:?}"),
            ),
        })
    }

    fn describe(&self) -> String {
        format!("{} (some avg10)", self.path.display())
    }
}

/// Extracts `some avg10` from PSI text.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))
        .and_then(|v| v.parse().ok())
}

/// `/proc/loadavg`: 1-minute load × 100 / online CPUs.
#[derive(Debug)]
pub struct LoadAvgPressure {
    path: PathBuf,
    cpus: usize,
}

impl LoadAvgPressure {
    /// Reads `path` (normally `/proc/loadavg`) and scales by `cpus`.
    pub fn new(path: impl Into<PathBuf>, cpus: usize) -> Self {
        LoadAvgPressure {
            path: path.into(),
            cpus: cpus.max(1),
        }
    }
}

impl PressureSource for LoadAvgPressure {
    fn sample(&mut self) -> Result<f64, ActorError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| ActorError::Pressure {
            path: self.path.clone(),
            source,
        })?;
        let load: f64 = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ActorError::Pressure {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unparsable {text:?}"),
                ),
            })?;
        Ok(load * 100.0 / self.cpus as f64)
    }

    fn describe(&self) -> String {
        format!(
            "{} (1-minute load over {} CPUs)",
            self.path.display(),
            self.cpus
        )
    }
}

/// Opens the configured source: PSI where `/proc/pressure/cpu` is readable (for `auto`), else
/// the load average.
pub fn open_source(kind: PressureSourceKind) -> Box<dyn PressureSource> {
    let psi = PsiPressure::new("/proc/pressure/cpu");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match kind {
        PressureSourceKind::Psi => Box::new(psi),
        PressureSourceKind::Loadavg => Box::new(LoadAvgPressure::new("/proc/loadavg", cpus)),
        PressureSourceKind::Auto => {
            let mut probe = PsiPressure::new("/proc/pressure/cpu");
            if probe.sample().is_ok() {
                Box::new(psi)
            } else {
                Box::new(LoadAvgPressure::new("/proc/loadavg", cpus))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `some avg10` is read from PSI text; text without it yields nothing.
    #[test]
    fn psi_some_avg10_is_parsed() {
        let text = "some avg10=12.50 avg60=2.42 avg300=2.72 total=13913783\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_avg10(text), Some(12.5));
        assert_eq!(parse_psi_some_avg10("full avg10=1.00\n"), None);
    }

    /// The load average becomes a percentage of the CPUs, and a missing file is an error
    /// naming it.
    #[test]
    fn loadavg_is_scaled_by_cpus() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loadavg");
        std::fs::write(&path, "1.00 0.50 0.25 1/100 4242\n").unwrap();
        let mut source = LoadAvgPressure::new(&path, 4);
        assert_eq!(source.sample().unwrap(), 25.0);
        let mut missing = LoadAvgPressure::new(dir.path().join("nope"), 1);
        assert!(missing.sample().unwrap_err().to_string().contains("nope"));
    }
}
