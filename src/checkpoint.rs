//! The run's own record of what is finished: per source file (by fingerprint), the offset up
//! to which every table is complete, derived ones included.
//!
//! The lake's footers say which raw rows it holds, and that is enough to never write a line
//! twice. They cannot say whether the sessions and messages those lines belong to were
//! written: a run killed between committing a file's lines and committing the sessions that
//! were still open in them leaves the lines stored and the sessions nowhere. So a file counts
//! as finished only once a run that read it has ended and committed everything, and it is
//! recorded here then. A run after a kill reads again every file not recorded: the lake drops
//! the lines it holds, the sessions and messages it holds are dropped by their lineage key, and
//! what the kill cut off is made whole.
//!
//! The store is `<lake>/_mailflow/checkpoints.json`, replaced atomically (written aside,
//! synced, renamed), so a kill while saving leaves the old one or the new one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What is finished of one source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path when it was read, for people.
    pub file: String,
    /// Every table holds everything of the file before this offset.
    pub complete: u64,
}

/// The store, by source fingerprint.
#[derive(Debug, Default)]
pub struct Checkpoints {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    sources: BTreeMap<String, Entry>,
}

/// Where the store of the lake at `root` is kept.
fn store_path(root: &Path) -> PathBuf {
    root.join("_mailflow").join("checkpoints.json")
}

/// Removes the file at `path`; a file already gone is no error.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

impl Checkpoints {
    /// The store of the lake at `root` (empty if it has none yet).
    pub fn load(root: &Path) -> Result<Self> {
        let path = store_path(root);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{}: not a checkpoint store mailflow can read; remove it and the next \
                         run reads again every file it cannot tell is finished",
                        path.display()
                    )
                })?;
                on_disk.sources
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Checkpoints { path, entries })
    }

    /// Forgets every file the lake at `root` was told is finished (its tables emptied by
    /// `--overwrite`).
    pub fn remove(root: &Path) -> Result<()> {
        remove_if_present(&store_path(root))
    }

    /// Whether everything of the source before `len` is finished.
    pub fn is_complete(&self, fingerprint: &str, len: u64) -> bool {
        self.entries
            .get(fingerprint)
            .is_some_and(|e| e.complete >= len)
    }

    /// How far the source is finished (0 if it is not known).
    pub fn complete_offset(&self, fingerprint: &str) -> u64 {
        self.entries.get(fingerprint).map_or(0, |e| e.complete)
    }

    /// Records that everything of the source before `complete` is finished.
    pub fn set(&mut self, fingerprint: &str, file: &str, complete: u64) {
        let e = self
            .entries
            .entry(fingerprint.to_string())
            .or_insert_with(|| Entry {
                file: file.to_string(),
                complete,
            });
        e.file = file.to_string();
        e.complete = e.complete.max(complete);
    }

    /// Writes the store durably: to a temporary beside it, synced, renamed over it.
    pub fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            sources: self.entries.clone(),
        })?;
        write_atomically(&self.path, &json)
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old content or the new: written to a
/// hidden temporary beside it, synced, renamed over it, the folder synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let temp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)?;
        mailflow_sinks::durable::sync_dir(dir).map_err(std::io::Error::other)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_store_reads_back_and_a_broken_one_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(tmp.path()).unwrap();
        assert!(!c.is_complete("fp", 10));
        c.set("fp", "a.log", 10);
        c.set("fp", "a.log", 5);
        c.save().unwrap();
        let c = Checkpoints::load(tmp.path()).unwrap();
        assert!(c.is_complete("fp", 10));
        assert!(!c.is_complete("fp", 11));
        std::fs::write(tmp.path().join("_mailflow/checkpoints.json"), "{oops").unwrap();
        let e = Checkpoints::load(tmp.path()).unwrap_err();
        assert!(format!("{e:#}").contains("remove it"), "{e:#}");
    }
}
