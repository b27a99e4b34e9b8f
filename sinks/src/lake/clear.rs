//! Emptying a lake (`ingest --overwrite`): removes what the lake wrote and nothing else.
//!
//! A lake folder is one mailflow made: it holds the state folder `_mailflow`. A folder without it
//! is cleared only when it is empty (a new lake); anything else is refused, because a table's
//! name (`messages`, `rejects`) is a common folder name and the files in it are someone else's.
//! Inside a lake, only files with the names the lake gives are removed: committed files
//! (`part-….parquet`), a writer's temporaries, and then the partition and table folders left
//! empty. Any other file stays where it is, and so do the folders that hold it.

use std::fs;
use std::path::{Path, PathBuf};

use super::journal::{self, STATE_DIR};
use super::{Error, is_lake_file};
use crate::parquet::io_error;

/// What [`clear`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files kept because mailflow did not write them (inside table folders).
    pub kept: Vec<PathBuf>,
}

/// Removes the lake's files from the tables named under `root`; see the module docs. Fails,
/// removing nothing, when `root` is neither a lake nor empty, or another mailflow process is
/// writing to it.
pub fn clear(root: &Path, tables: &[&str]) -> Result<Cleared, Error> {
    let mut cleared = Cleared::default();
    if !ensure_clearable(root)? {
        return Ok(cleared);
    }
    journal::ensure_no_live_writer(root)?;
    for table in tables {
        let dir = root.join(table);
        if !dir.is_dir() {
            continue;
        }
        // Deepest first, so a folder is looked at after its contents.
        let walker = walkdir::WalkDir::new(&dir)
            .contents_first(true)
            .follow_links(false);
        for entry in walker {
            let entry = entry.map_err(|e| io_error(&dir)(e.into()))?;
            let path = entry.path();
            if entry.file_type().is_dir() {
                // Only folders the lake made, and only once empty (a kept file keeps its folder).
                if fs::read_dir(path).map_err(io_error(path))?.next().is_none() {
                    fs::remove_dir(path).map_err(io_error(path))?;
                }
                continue;
            }
            let name = entry.file_name().to_string_lossy();
            if entry.file_type().is_file() && is_lake_file(&name) {
                let bytes = entry.metadata().map_or(0, |m| m.len());
                fs::remove_file(path).map_err(io_error(path))?;
                cleared.files += 1;
                cleared.bytes += bytes;
            } else {
                cleared.kept.push(path.to_path_buf());
            }
        }
    }
    // Pending journals name files that are gone now.
    journal::discard_journals(root)?;
    Ok(cleared)
}

/// Refuses a folder that is neither empty nor a lake (it has no `_mailflow`): nothing of it may
/// be removed. True when there is a lake to clear, false for a missing or empty folder. A run
/// asks this before it takes the lake's lock, which creates `_mailflow`.
pub fn ensure_clearable(root: &Path) -> Result<bool, Error> {
    let mut entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(root)(e).into()),
    };
    match entries.next() {
        None => Ok(false),
        Some(entry) => {
            entry.map_err(io_error(root))?;
            if root.join(STATE_DIR).is_dir() {
                Ok(true)
            } else {
                Err(Error::NotALake {
                    path: root.to_path_buf(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_folder_that_is_not_a_lake() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("notlake");
        fs::create_dir_all(root.join("messages")).unwrap();
        fs::write(root.join("messages/important.txt"), b"keep me").unwrap();
        let err = clear(&root, &["messages"]).unwrap_err();
        assert!(matches!(err, Error::NotALake { .. }), "{err}");
        assert!(err.to_string().contains("notlake"), "{err}");
        assert!(root.join("messages/important.txt").exists());
    }

    #[test]
    fn empty_or_missing_folders_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            clear(dir.path(), &["messages"]).unwrap(),
            Cleared::default()
        );
        let missing = dir.path().join("nothing");
        assert_eq!(clear(&missing, &["messages"]).unwrap(), Cleared::default());
    }

    #[test]
    fn removes_only_what_the_lake_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(STATE_DIR)).unwrap();
        let part = root.join("messages/date=2025-01-14/server=EX01");
        let other = root.join("messages/date=2025-01-15/server=EX01");
        fs::create_dir_all(&part).unwrap();
        fs::create_dir_all(&other).unwrap();
        fs::write(part.join("part-abc-000001.parquet"), b"12345").unwrap();
        fs::write(part.join(journal::temp_name("abc", 2)), b"xx").unwrap();
        fs::write(other.join("part-abc-000003.parquet"), b"1").unwrap();
        fs::write(other.join("notes.txt"), b"mine").unwrap();
        let cleared = clear(root, &["messages", "rejects"]).unwrap();
        assert_eq!(cleared.files, 3);
        assert_eq!(cleared.bytes, 8);
        assert_eq!(cleared.kept, vec![other.join("notes.txt")]);
        assert!(!part.exists(), "emptied partition folders go");
        assert!(other.join("notes.txt").exists());
        assert!(!other.join("part-abc-000003.parquet").exists());
    }

    #[test]
    fn refuses_while_a_writer_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lock = journal::WriterLock::acquire(root, "live").unwrap();
        let part = root.join("messages/date=2025-01-14/server=EX01");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("part-live-000001.parquet"), b"1").unwrap();
        let err = clear(root, &["messages"]).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert!(part.join("part-live-000001.parquet").exists());
        lock.release();
        assert_eq!(clear(root, &["messages"]).unwrap().files, 1);
    }
}
