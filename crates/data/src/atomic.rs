//! Atomic file replacement: write to a temp file in the target's folder, fsync, rename over the target.
//!
//! A rename within one folder is atomic on POSIX file systems, so a reader (or a crash) sees either
//! the previous file whole or the new file whole, never a half-written one.

use crate::{DataError, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written in place of `target`. Dropping it without [`AtomicFile::commit`] deletes the
/// temp file and leaves `target` exactly as it was.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        let name = target
            .file_name()
            .ok_or_else(|| DataError::Invalid(format!("{} is not a file path", target.display())))?
            .to_string_lossy();
        // The dot prefix keeps half-written files out of globs; pid + counter keep concurrent writers apart.
        let temp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&temp).map_err(|e| DataError::io(&temp, e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The open temp file, for writers that take ownership of a `Write` (a clone of the handle).
    pub fn handle(&self) -> Result<File> {
        self.file
            .as_ref()
            .expect("file is present until commit")
            .try_clone()
            .map_err(|e| DataError::io(&self.temp, e))
    }

    /// Flushes to disk and moves the temp file over the target.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all().map_err(|e| DataError::io(&self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| DataError::io(&self.target, e))?;
        // The rename itself lives in the folder's metadata; sync it so it survives a power cut.
        if let Some(dir) = self.target.parent() {
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let file = AtomicFile::create(target)?;
    let mut w = BufWriter::new(file.handle()?);
    w.write_all(bytes).map_err(|e| DataError::io(target, e))?;
    w.flush().map_err(|e| DataError::io(target, e))?;
    drop(w);
    file.commit()
}

/// Writes text through a buffered writer to `target` atomically; `fill` produces the content.
pub fn write_atomic_with(
    target: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let file = AtomicFile::create(target)?;
    let mut w = BufWriter::new(file.handle()?);
    fill(&mut w).map_err(|e| DataError::io(target, e))?;
    w.flush().map_err(|e| DataError::io(target, e))?;
    drop(w);
    file.commit()
}
