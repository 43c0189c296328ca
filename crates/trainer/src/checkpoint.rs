//! Checkpoint folders `checkpoints/step-<N>/`, each written whole or not at all: the files go
//! into a temp folder, each is fsynced, the folder is fsynced and renamed into place, and the parent
//! is fsynced. A run killed mid-save leaves only a temp folder, which is ignored and later removed.
//! Only the newest `keep_last` checkpoints are kept, plus the best one.

use crate::{Result, TrainerError};
use std::path::{Path, PathBuf};

const STEP_PREFIX: &str = "step-";
const TEMP_PREFIX: &str = ".tmp-";
/// The file a checkpoint folder is not complete without (the trainer writes it last).
pub const STATE_FILE: &str = "trainer_state.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub step: u64,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CheckpointManager {
    dir: PathBuf,
    keep_last: usize,
}

fn fsync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrainerError::io(path, e))
}

impl CheckpointManager {
    /// Manages the checkpoints under `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Self {
        CheckpointManager {
            dir: dir.into(),
            keep_last: keep_last.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<Checkpoint>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TrainerError::io(&self.dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TrainerError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(step) = name
                .strip_prefix(STEP_PREFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if path.join(STATE_FILE).is_file() {
                found.push(Checkpoint { step, path });
            }
        }
        found.sort_by_key(|c| c.step);
        Ok(found)
    }

    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        Ok(self.list()?.pop())
    }

    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{STEP_PREFIX}{step:08}"))
    }

    /// Writes checkpoint `step`: `write` fills the given (temporary) folder and must write
    /// [`STATE_FILE`]; its files must be fsynced (`ragtune_models::checkpoint::{atomic_write,
    /// save_safetensors}` do). Replaces an older checkpoint of the same step.
    pub fn save(&self, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<Checkpoint> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TrainerError::io(&self.dir, e))?;
        self.remove_temp_dirs()?;
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{STEP_PREFIX}{step:08}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&temp).map_err(|e| TrainerError::io(&temp, e))?;
        write(&temp)?;
        if !temp.join(STATE_FILE).is_file() {
            return Err(TrainerError::format(
                &temp,
                format!("checkpoint writer did not write {STATE_FILE}"),
            ));
        }
        fsync_dir(&temp)?;
        let path = self.path_for(step);
        if path.exists() {
            // A rename cannot replace a non-empty folder: move the old one aside first.
            let old = self
                .dir
                .join(format!("{TEMP_PREFIX}old-{step:08}-{}", std::process::id()));
            std::fs::rename(&path, &old).map_err(|e| TrainerError::io(&path, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| TrainerError::io(&old, e))?;
        }
        std::fs::rename(&temp, &path).map_err(|e| TrainerError::io(&path, e))?;
        fsync_dir(&self.dir)?;
        Ok(Checkpoint { step, path })
    }

    /// Deletes all but the newest `keep_last` checkpoints and `keep_step` (the best one).
    pub fn prune(&self, keep_step: Option<u64>) -> Result<()> {
        let all = self.list()?;
        let newest_kept = all.len().saturating_sub(self.keep_last);
        for checkpoint in &all[..newest_kept] {
            if Some(checkpoint.step) != keep_step {
                std::fs::remove_dir_all(&checkpoint.path)
                    .map_err(|e| TrainerError::io(&checkpoint.path, e))?;
            }
        }
        Ok(())
    }

    /// Leftovers of saves that were interrupted.
    fn remove_temp_dirs(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| TrainerError::io(&self.dir, e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|e| TrainerError::io(&path, e))?;
            }
        }
        Ok(())
    }
}
