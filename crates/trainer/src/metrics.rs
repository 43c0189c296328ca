//! `runs/<name>/metrics.jsonl`: one JSON object per line, written and flushed as it happens, so a
//! crashed or killed run keeps everything up to its last step.

use crate::{Result, TrainerError};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// A fresh log: an old file of the same name is replaced.
    pub fn create(path: &Path) -> Result<Self> {
        Self::open(path, None)
    }

    /// Continues the log of a run resumed at optimizer step `step`: the records of later steps
    /// (written after that checkpoint by the interrupted run) are dropped, so the log tells one
    /// consistent history.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        Self::open(path, Some(step))
    }

    fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        let kept = match resume_step {
            Some(step) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|e| TrainerError::io(path, e))?;
                let mut kept = String::new();
                for line in text.lines() {
                    // A torn last line of a killed run does not parse; it is dropped with the later steps.
                    let Ok(record) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    if record
                        .get("step")
                        .and_then(Value::as_u64)
                        .is_none_or(|s| s <= step)
                    {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                }
                kept
            }
            _ => String::new(),
        };
        ragtune_models::checkpoint::atomic_write(path, kept.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainerError::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record as a line and flushes it to the OS.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("a JSON value serializes");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainerError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record of a metrics file, with a clear error naming the bad line.
    pub fn read(path: &Path) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainerError::io(path, e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| TrainerError::format(path, format!("line {}: {e}", i + 1)))
            })
            .collect()
    }
}
