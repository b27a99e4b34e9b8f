//! The lake's redo journal and writer locks, under `<root>/_mailflow/`.
//!
//! A rename is atomic, but a commit often touches several files: every file of a writer's epoch
//! (their rows come from the same sources, and resuming relies on all or none of them being
//! visible), or a compaction's new file and the small files it replaces. The journal makes such a
//! change all-or-nothing: the files are first written and synced under hidden temporary names,
//! then the list of renames and deletions is written and synced as `journal/<writer>.json`, then
//! carried out, then the journal is removed. A crash before the journal exists leaves temporaries
//! only (removed on the next start); a crash after it is finished on the next start by replaying
//! the journal, which is idempotent.
//!
//! Each writer holds an exclusive lock on `writers/<writer>.lock` while it runs. Recovery only
//! touches the journals and temporaries of writers whose lock is free, i.e. whose process ended,
//! so several agents can share one lake folder.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::durable::{sync_dir, sync_dirs};
use crate::parquet::{io_error, publish};

/// The lake's own folder; the `_` prefix keeps DuckDB and Spark out of it.
pub(crate) const STATE_DIR: &str = "_mailflow";
const WRITERS: &str = "writers";
const JOURNAL: &str = "journal";
/// A dead writer's lock file is removed only once it is this old, so a writer that has created
/// its lock file but not yet locked it is never mistaken for a dead one.
const LOCK_GRACE: Duration = Duration::from_secs(60);

/// What a commit will do, paths relative to the lake root.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Journal {
    /// (temporary, final) pairs.
    pub renames: Vec<(String, String)>,
    /// Files to remove once every rename is done.
    pub deletes: Vec<String>,
}

/// The temporary name of a writer's `seq`-th file; hidden, and never ending in `.parquet`.
pub(crate) fn temp_name(writer: &str, seq: u64) -> String {
    format!(".{writer}-{seq:06}.parquet.tmp")
}

/// The writer a temporary belongs to, if the name is one of [`temp_name`]'s.
fn temp_owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".parquet.tmp")?;
    let (writer, seq) = rest.rsplit_once('-')?;
    (seq.bytes().all(|b| b.is_ascii_digit()) && !writer.is_empty()).then_some(writer)
}

fn state(root: &Path, sub: &str) -> PathBuf {
    root.join(STATE_DIR).join(sub)
}

/// A writer's claim on the lake: the lock is held until this is dropped (or the process ends).
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    pub(crate) fn acquire(root: &Path, writer: &str) -> Result<Self, Error> {
        let path = state(root, WRITERS).join(format!("{writer}.lock"));
        let file = lock_file(&path, || path.display().to_string())?;
        Ok(WriterLock { _file: file, path })
    }

    /// Releases the lock and removes the lock file (a clean exit).
    pub(crate) fn release(self) {
        let path = self.path.clone();
        drop(self);
        let _ = fs::remove_file(path);
    }
}

/// One run's exclusive claim on a whole lake (`_mailflow/run.lock`), held until dropped or the
/// process ends: two runs writing one lake at once would each find the other's sources missing
/// and store them twice.
#[derive(Debug)]
pub struct LakeLock {
    _file: File,
}

impl LakeLock {
    /// Takes the lake, or says that another process holds it.
    pub fn acquire(root: &Path) -> Result<Self, Error> {
        let path = root.join(STATE_DIR).join("run.lock");
        let file = lock_file(&path, || {
            format!(
                "the lake at {} (another ingest into it is running; wait for it to end)",
                root.display()
            )
        })?;
        Ok(LakeLock { _file: file })
    }
}

/// Opens (creating it and its folder) and exclusively locks `path`; `what` names the lock in
/// the error when another process holds it.
fn lock_file(path: &Path, what: impl FnOnce() -> String) -> Result<File, Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.try_lock().map_err(|e| Error::Busy {
        what: what(),
        reason: e.to_string(),
    })?;
    Ok(file)
}

/// Writes `journal` durably as `writer`'s pending commit.
pub(crate) fn record(root: &Path, writer: &str, journal: &Journal) -> Result<(), Error> {
    let dir = state(root, JOURNAL);
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let path = dir.join(format!("{writer}.json"));
    let temp = dir.join(format!(".{writer}.json.tmp"));
    let text = serde_json::to_vec(journal).map_err(|e| Error::Journal {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut f = File::create(&temp).map_err(io_error(&temp))?;
    f.write_all(&text).map_err(io_error(&temp))?;
    f.sync_all().map_err(io_error(&temp))?;
    drop(f);
    publish(&temp, &path)?;
    Ok(())
}

/// Carries out a journal. Safe to repeat: a rename whose temporary is gone was done before.
pub(crate) fn apply(root: &Path, journal: &Journal) -> Result<(), Error> {
    let mut dirs = BTreeSet::new();
    for (temp, target) in &journal.renames {
        let (temp, target) = (root.join(temp), root.join(target));
        if temp.exists() {
            fs::rename(&temp, &target).map_err(io_error(&target))?;
            if let Some(dir) = target.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
    }
    sync_dirs(root, &dirs.into_iter().collect::<Vec<_>>())?;
    let mut dirs = BTreeSet::new();
    for path in &journal.deletes {
        let path = root.join(path);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    dirs.insert(dir.to_path_buf());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e).into()),
        }
    }
    sync_dirs(root, &dirs.into_iter().collect::<Vec<_>>())?;
    Ok(())
}

/// Removes `writer`'s journal once applied.
pub(crate) fn clear(root: &Path, writer: &str) -> Result<(), Error> {
    let dir = state(root, JOURNAL);
    let path = dir.join(format!("{writer}.json"));
    match fs::remove_file(&path) {
        Ok(()) => Ok(sync_dir(&dir)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path)(e).into()),
    }
}

/// Fails with [`Error::Busy`] when a writer of another process is running on the lake.
pub(crate) fn ensure_no_live_writer(root: &Path) -> Result<(), Error> {
    let writers = state(root, WRITERS);
    let Ok(entries) = fs::read_dir(&writers) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(io_error(&writers))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "lock") {
            continue;
        }
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if let Err(e) = file.try_lock() {
            return Err(Error::Busy {
                what: path.display().to_string(),
                reason: e.to_string(),
            });
        }
    }
    Ok(())
}

/// Removes every pending journal (after the files they name were removed).
pub(crate) fn discard_journals(root: &Path) -> Result<(), Error> {
    let dir = state(root, JOURNAL);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(io_error(&dir))?.path();
        fs::remove_file(&path).map_err(io_error(&path))?;
    }
    Ok(())
}

/// Whether `name` is one of a writer's temporaries ([`temp_name`]).
pub(crate) fn is_temp(name: &str) -> bool {
    temp_owner(name).is_some()
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Interrupted commits finished from their journal.
    pub journals_replayed: usize,
    /// Temporaries of dead writers removed.
    pub temporaries_removed: usize,
}

/// Finishes the interrupted commits of writers that are gone and removes their temporaries.
pub(crate) fn recover(root: &Path) -> Result<Recovery, Error> {
    let mut report = Recovery::default();
    let mut live = BTreeSet::new();
    let mut dead_locks = Vec::new();
    let writers = state(root, WRITERS);
    if let Ok(entries) = fs::read_dir(&writers) {
        for entry in entries {
            let entry = entry.map_err(io_error(&writers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".lock") else {
                continue;
            };
            let path = entry.path();
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => dead_locks.push((path, file)),
                Err(_) => {
                    live.insert(id.to_string());
                }
            }
        }
    }
    let journals = state(root, JOURNAL);
    if let Ok(entries) = fs::read_dir(&journals) {
        for entry in entries {
            let entry = entry.map_err(io_error(&journals))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') {
                // A journal that was never published: its commit never started.
                if name.ends_with(".json.tmp") {
                    let owner = name.trim_start_matches('.').trim_end_matches(".json.tmp");
                    if !live.contains(owner) {
                        let _ = fs::remove_file(&path);
                    }
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if live.contains(id) {
                continue;
            }
            let text = fs::read(&path).map_err(io_error(&path))?;
            let journal: Journal = serde_json::from_slice(&text).map_err(|e| Error::Journal {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            apply(root, &journal)?;
            clear(root, id)?;
            report.journals_replayed += 1;
        }
    }
    report.temporaries_removed = remove_dead_temporaries(root, &live)?;
    for (path, file) in dead_locks {
        let old = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > LOCK_GRACE);
        drop(file);
        if old {
            let _ = fs::remove_file(path);
        }
    }
    Ok(report)
}

fn remove_dead_temporaries(root: &Path, live: &BTreeSet<String>) -> Result<usize, Error> {
    let mut removed = 0;
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.depth() > 1 || e.file_name() != STATE_DIR);
    for entry in walker {
        let entry = entry.map_err(|e| io_error(root)(e.into()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if temp_owner(&name).is_some_and(|owner| !live.contains(owner)) {
            fs::remove_file(entry.path()).map_err(io_error(entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_round_trip() {
        let name = temp_name("19a2b3c4d5e-00ff12ab", 7);
        assert_eq!(name, ".19a2b3c4d5e-00ff12ab-000007.parquet.tmp");
        assert_eq!(temp_owner(&name), Some("19a2b3c4d5e-00ff12ab"));
        assert_eq!(temp_owner("part-x.parquet"), None);
        assert_eq!(temp_owner(".x.parquet.tmp"), None);
    }

    #[test]
    fn replay_finishes_an_interrupted_commit_and_spares_live_writers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let part = root.join("t/date=2025-01-14/server=EX01");
        fs::create_dir_all(&part).unwrap();
        // A dead writer "dead": one file renamed already, one still a temporary, an old file
        // to delete, and a stray temporary that never made it into the journal.
        fs::write(part.join("part-dead-000001.parquet"), b"1").unwrap();
        fs::write(part.join(temp_name("dead", 2)), b"2").unwrap();
        fs::write(part.join(temp_name("dead", 3)), b"3").unwrap();
        fs::write(part.join("part-old.parquet"), b"old").unwrap();
        let rel = |n: &str| format!("t/date=2025-01-14/server=EX01/{n}");
        let journal = Journal {
            renames: vec![
                (rel(&temp_name("dead", 1)), rel("part-dead-000001.parquet")),
                (rel(&temp_name("dead", 2)), rel("part-dead-000002.parquet")),
            ],
            deletes: vec![rel("part-old.parquet")],
        };
        record(root, "dead", &journal).unwrap();
        // A live writer's temporary must survive.
        let live = WriterLock::acquire(root, "live").unwrap();
        fs::write(part.join(temp_name("live", 1)), b"l").unwrap();

        let report = recover(root).unwrap();
        assert_eq!(report.journals_replayed, 1);
        assert_eq!(report.temporaries_removed, 1);
        let mut names: Vec<_> = fs::read_dir(&part)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                temp_name("live", 1),
                "part-dead-000001.parquet".to_string(),
                "part-dead-000002.parquet".to_string(),
            ]
        );
        // Replaying again changes nothing.
        assert_eq!(recover(root).unwrap(), Recovery::default());
        live.release();
        assert_eq!(recover(root).unwrap().temporaries_removed, 1);
    }

    #[test]
    fn a_held_lock_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let _a = WriterLock::acquire(dir.path(), "w").unwrap();
        let err = WriterLock::acquire(dir.path(), "w").unwrap_err();
        assert!(err.to_string().contains("w.lock"), "{err}");
    }
}
