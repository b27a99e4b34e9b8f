//! Making written files and directory entries durable: the sinks' only platform-specific code.
//!
//! A lake commit makes many files durable at once, and a backfill over thousands of partitions
//! commits thousands of small files in one epoch. One `fsync` per file and per folder costs about
//! a millisecond each on an ordinary disk, which made the commit of 20,000 one-row partitions take
//! far longer than parsing them. On Linux, a large set is made durable with one `syncfs` of the
//! lake's file system instead; a small set (the common case, a few partitions) keeps one `fsync`
//! per file, which does not wait on other processes' writes.
//!
//! Windows: NTFS cannot open a folder as a file to flush it; its metadata journal makes a rename
//! durable by itself once the renamed file's data was flushed, so folder syncs are no-ops there.
//! (Untested on Windows from these machines.)

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::parquet::{Error, io_error};

/// At or above this many files, one file-system-wide sync is cheaper than one per file.
#[cfg(target_os = "linux")]
const BULK_FILES: usize = 16;

/// Makes the data of `files` durable; `root` is any path on their file system.
pub fn sync_files(root: &Path, files: &[PathBuf]) -> Result<(), Error> {
    sync_each(root, files, |path| {
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.sync_all())
            .map_err(io_error(path))
    })
}

/// Makes the entries created, renamed or removed in `dirs` durable; `root` as above.
pub fn sync_dirs(root: &Path, dirs: &[PathBuf]) -> Result<(), Error> {
    sync_each(root, dirs, sync_dir)
}

/// One file-system-wide sync for many paths (Linux), else `one` for each.
fn sync_each(
    root: &Path,
    paths: &[PathBuf],
    one: impl Fn(&Path) -> Result<(), Error>,
) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    if paths.len() >= BULK_FILES {
        return sync_file_system(root);
    }
    let _ = root;
    paths.iter().try_for_each(|p| one(p))
}

/// Fsyncs one folder (a no-op on Windows, see the module docs).
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    #[cfg(windows)]
    {
        Ok(())
    }
    #[cfg(not(windows))]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))
    }
}

#[cfg(target_os = "linux")]
fn sync_file_system(root: &Path) -> Result<(), Error> {
    let file = File::open(root).map_err(io_error(root))?;
    rustix::fs::syncfs(&file).map_err(|e| io_error(root)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_few_and_many() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..40)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, b"x").unwrap();
                p
            })
            .collect();
        sync_files(dir.path(), &files[..2]).unwrap();
        sync_files(dir.path(), &files).unwrap();
        sync_dirs(dir.path(), &[dir.path().to_path_buf()]).unwrap();
        let missing = dir.path().join("gone");
        let err = sync_files(dir.path(), std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
