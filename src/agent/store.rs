//! The agent's checkpoint store: `<state_dir>/checkpoints.json`, one entry per source file (by
//! fingerprint), replaced atomically (written aside, synced, renamed) so a kill while saving
//! leaves the old store or the new one.
//!
//! An entry's `offset` is where a restart replays the file from: every sink has acknowledged
//! everything before it, and no session or message still open needs a line before it. Its
//! `durable` is how far the sinks held the file's own lines when the store was saved, so a
//! restart knows which replayed lines the lake has without reading every footer; `log_time`
//! is the log time reached, which says which days of the lake a replay can touch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What the agent knows of one source file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path when last read, for people.
    pub file: String,
    /// The server its rows are filed under.
    pub server: String,
    /// Replay from here after a restart.
    pub offset: u64,
    /// The sinks held every line before this when the store was saved.
    pub durable: u64,
    /// Log time (ms since the epoch) of the last row read, if any.
    pub log_time: Option<i64>,
    /// The file was read to its end after Exchange moved on to a newer one: nothing more comes.
    pub complete: bool,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// When it was saved (ms since the epoch).
    saved_at: i64,
    sources: BTreeMap<String, Entry>,
}

/// The store, by source fingerprint.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// When the store read at start was saved; `None` when there was none (a first start).
    pub saved_at: Option<SystemTime>,
    pub entries: BTreeMap<String, Entry>,
}

/// Where the store in `dir` is kept.
fn path_in(dir: &Path) -> PathBuf {
    dir.join("checkpoints.json")
}

impl Store {
    /// The store in `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = path_in(dir);
        let (saved_at, entries) = match std::fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{}: not a checkpoint store mailflow can read; move it away and the \
                         agent reads its sources again (the lake drops what it holds)",
                        path.display()
                    )
                })?;
                let at = UNIX_EPOCH
                    + std::time::Duration::from_millis(
                        u64::try_from(on_disk.saved_at).unwrap_or(0),
                    );
                (Some(at), on_disk.sources)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, BTreeMap::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Store {
            path,
            saved_at,
            entries,
        })
    }

    /// Removes the store in `dir`, if there is one: every source is read again from its start.
    pub fn remove(dir: &Path) -> Result<()> {
        crate::checkpoint::remove_if_present(&path_in(dir))
    }

    /// Writes `entries` as the store in `dir`, durably.
    pub fn save_entries(dir: &Path, entries: BTreeMap<String, Entry>) -> Result<()> {
        Store {
            path: path_in(dir),
            saved_at: None,
            entries,
        }
        .save()
    }

    /// Writes the store durably.
    pub fn save(&self) -> Result<()> {
        let saved_at = crate::ingest::file_time_ms(SystemTime::now());
        let json = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            saved_at,
            sources: self.entries.clone(),
        })?;
        crate::checkpoint::write_atomically(&self.path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_store_reads_back_and_a_broken_one_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::load(tmp.path()).unwrap();
        assert!(s.saved_at.is_none() && s.entries.is_empty());
        s.entries.insert(
            "fp".into(),
            Entry {
                file: "a.log".into(),
                server: "EX01".into(),
                offset: 10,
                durable: 20,
                log_time: Some(5),
                complete: false,
            },
        );
        s.save().unwrap();
        let back = Store::load(tmp.path()).unwrap();
        assert!(back.saved_at.is_some());
        assert_eq!(back.entries, s.entries);
        std::fs::write(tmp.path().join("checkpoints.json"), "{oops").unwrap();
        let e = Store::load(tmp.path()).unwrap_err();
        assert!(format!("{e:#}").contains("move it away"), "{e:#}");
    }
}
