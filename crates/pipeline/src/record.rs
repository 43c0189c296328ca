//! `runs/<name>/<stage>/stage.json`: what a stage ran on (its resolved config and the hashes of
//! its inputs), whether it finished, how long it took and how much memory it peaked at. A stage
//! whose fingerprint matches a finished record is skipped; one whose record is unfinished with the
//! same fingerprint resumes in its folder; any other starts afresh.

use crate::{PipelineError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const RECORD_FILE: &str = "stage.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Done,
}

/// A throughput figure of a stage, in its own unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    pub fingerprint: String,
    pub status: Status,
    /// The stage's resolved config, as it ran.
    pub config: serde_json::Value,
    /// Input name -> sha256 (files, folders, upstream stages' fingerprints).
    pub inputs: serde_json::Map<String, serde_json::Value>,
    pub seconds: f64,
    /// Peak resident memory during the stage (Linux; 0 where it cannot be measured).
    pub peak_rss_bytes: u64,
    pub throughput: Option<Throughput>,
    /// What the stage produced that later stages and the report read.
    pub outputs: serde_json::Value,
}

impl StageRecord {
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(RECORD_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::io(&path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| PipelineError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
        let text = serde_json::to_string_pretty(self).expect("a stage record serializes");
        ragtune_models::checkpoint::atomic_write(&dir.join(RECORD_FILE), text.as_bytes())?;
        Ok(())
    }
}

/// Builds a stage's fingerprint from named parts.
#[derive(Default)]
pub struct Fingerprint {
    inputs: serde_json::Map<String, serde_json::Value>,
}

impl Fingerprint {
    pub fn value(mut self, name: &str, value: &impl Serialize) -> Self {
        let json = serde_json::to_string(value).expect("a config serializes");
        self.inputs
            .insert(name.to_string(), sha256_hex(json.as_bytes()).into());
        self
    }

    /// The content of a file or every file under a folder.
    pub fn path(mut self, name: &str, path: &Path) -> Result<Self> {
        let hash = ragtune_retrieval::dense::folder_fingerprint(path)?;
        self.inputs.insert(name.to_string(), hash.into());
        Ok(self)
    }

    pub fn upstream(mut self, name: &str, record: &StageRecord) -> Self {
        self.inputs
            .insert(name.to_string(), record.fingerprint.clone().into());
        self
    }

    pub fn finish(self) -> (String, serde_json::Map<String, serde_json::Value>) {
        let text = serde_json::to_string(&self.inputs).expect("a map serializes");
        (sha256_hex(text.as_bytes()), self.inputs)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Peak resident memory since the last [`reset_peak_rss`], from `/proc/self/status` (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the kernel's peak-RSS counter of this process (Linux: `5` into `clear_refs`), so each
/// stage reports its own peak rather than the largest so far.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The folder of a stage and its record path, for messages.
pub fn record_path(dir: &Path) -> PathBuf {
    dir.join(RECORD_FILE)
}
