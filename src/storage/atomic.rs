//! Outputs that appear whole or not at all: written to a temporary sibling, renamed into place on
//! [`commit`](AtomicFile::commit), removed on drop otherwise.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::error::{Error, Result};

/// Temporary outputs and spill directories alive in this process, so an interrupt handler can
/// remove them before exiting ([`remove_live_temporaries`]).
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Keeps `path` on the list of live temporaries until dropped.
pub struct LiveTemp(PathBuf);

impl LiveTemp {
    /// Registers `path`.
    pub fn register(path: &Path) -> LiveTemp {
        if let Ok(mut l) = LIVE.lock() {
            l.push(path.to_path_buf());
        }
        LiveTemp(path.to_path_buf())
    }
}

impl Drop for LiveTemp {
    fn drop(&mut self) {
        if let Ok(mut l) = LIVE.lock()
            && let Some(i) = l.iter().position(|p| *p == self.0)
        {
            l.swap_remove(i);
        }
    }
}

/// Removes every live temporary output and spill directory (for Ctrl-C: call it, then exit).
/// Returns how many were removed.
pub fn remove_live_temporaries() -> usize {
    let paths: Vec<PathBuf> = match LIVE.lock() {
        Ok(l) => l.clone(),
        Err(_) => return 0,
    };
    let mut n = 0;
    for p in paths {
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p).is_ok()
        } else {
            std::fs::remove_file(&p).is_ok()
        };
        n += usize::from(removed);
    }
    n
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.partial-")
}

/// A file being written; it becomes `target` on [`commit`](Self::commit).
pub struct AtomicFile {
    target: PathBuf,
    writer: BufWriter<NamedTempFile>,
    fsync: bool,
    _live: LiveTemp,
}

impl AtomicFile {
    /// Starts writing a temporary file beside `target`.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let dir = parent_dir(target);
        // Ordinary file permissions (0666 less the umask), not tempfile's private 0600.
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(target))
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, "create temporary file in", e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            _live: LiveTemp::register(tmp.path()),
            writer: BufWriter::with_capacity(8 << 20, tmp),
            fsync: false,
        })
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Makes [`commit`](Self::commit) `fsync` the data before the rename.
    pub fn set_fsync(&mut self, fsync: bool) {
        self.fsync = fsync;
    }

    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| Error::io(&self.target, "write", e))
    }

    /// Flushes what was appended so far and returns a second handle to the temporary file, for
    /// positional writes (`pwrite`) from several threads at once.
    pub fn positional_handle(&mut self) -> Result<File> {
        self.writer
            .flush()
            .map_err(|e| Error::io(&self.target, "write", e))?;
        self.writer
            .get_ref()
            .as_file()
            .try_clone()
            .map_err(|e| Error::io(&self.target, "open", e))
    }

    /// Where the temporary file is, until [`commit`](Self::commit).
    pub fn temp_path(&self) -> &Path {
        self.writer.get_ref().path()
    }

    /// The underlying writer (buffered), for encoders that want `io::Write`.
    pub fn writer(&mut self) -> &mut BufWriter<NamedTempFile> {
        &mut self.writer
    }

    /// Flushes (and with [`set_fsync`](Self::set_fsync), syncs) and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&target, "write", e.into_error()))?;
        if self.fsync {
            tmp.as_file()
                .sync_data()
                .map_err(|e| Error::io(&target, "sync", e))?;
        }
        tmp.persist(&target)
            .map_err(|e| Error::io(&target, "rename into place", e.error))?;
        Ok(())
    }
}

/// A directory being written (a Zarr store); it becomes `target` on [`commit`](Self::commit).
pub struct AtomicDir {
    target: PathBuf,
    tmp: TempDir,
    _live: LiveTemp,
}

impl AtomicDir {
    /// Creates a temporary directory beside `target`.
    pub fn create(target: &Path) -> Result<AtomicDir> {
        let dir = parent_dir(target);
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(target))
            .permissions(std::fs::Permissions::from_mode(0o777))
            .tempdir_in(&dir)
            .map_err(|e| Error::io(&dir, "create temporary directory in", e))?;
        Ok(AtomicDir {
            target: target.to_path_buf(),
            _live: LiveTemp::register(tmp.path()),
            tmp,
        })
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where to write the contents meanwhile.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes a whole file inside the directory (`rel` may contain `/`).
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.tmp.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(parent, "create directory", e))?;
        }
        let mut f = File::create(&p).map_err(|e| Error::io(self.target.join(rel), "create", e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(self.target.join(rel), "write", e))
    }

    /// Moves the directory into place. An existing directory at `target` is replaced: it is first
    /// renamed aside, then removed once the new one is in place.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        let tmp = self.tmp.keep();
        let mut aside = None;
        if target.exists() {
            let old = tmp.with_extension("old");
            std::fs::rename(&target, &old).map_err(|e| Error::io(&target, "move aside", e))?;
            aside = Some(old);
        }
        if let Err(e) = std::fs::rename(&tmp, &target) {
            if let Some(old) = &aside {
                let _ = std::fs::rename(old, &target);
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io(&target, "rename into place", e));
        }
        if let Some(old) = aside {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, "remove old store", e))?;
        }
        Ok(())
    }
}
