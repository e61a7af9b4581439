//! One serving process per SQLite database.
//!
//! Part of what keeps a SQLite store exact lives in the memory of the process serving it: the
//! dedupe keys of log entries not yet indexed (`dedupe_tail.rs`), and leadership of every
//! single-reader job (sync, fan-out, WebSocket sources), which on SQLite is simply the process
//! (`cluster.rs`). A second `zoomhook serve` on the same file would accept again a webhook the
//! first one already holds, and sync and fan out beside it. So a serving process holds an
//! exclusive lock on `<log file>.lock` for as long as it runs, and a second one is refused with
//! the first one's process id. The kernel drops the lock when the process ends, however it ends
//! (`kill -9` included): a restart never finds a stale lock.
//!
//! Commands that work on the database beside a server (`token create`, `sync status|rebuild`,
//! `migrate`) do not take it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// An exclusive lock on a SQLite database for this process, held until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// The lock file of the log file at `log`: `zoomhook.db` → `zoomhook.db.lock`.
pub fn lock_path(log: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", log.display()))
}

impl InstanceLock {
    /// Takes the lock of the database whose log file is `log`, or says which process holds it.
    pub fn acquire(log: &Path) -> Result<InstanceLock, StoreError> {
        if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let path = lock_path(log);
        let mut file = open_owner_only(&path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open the lock file {}: {e}", path.display()))
        })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("another zoomhook process (pid {pid})"),
                    Err(_) => "another zoomhook process".to_owned(),
                };
                return Err(StoreError::Unavailable(format!(
                    "{holder} is serving {}: a SQLite database takes one server at a time \
                     (it holds {}). Stop that one first, or use PostgreSQL to run several \
                     instances (docs/cluster.md)",
                    log.display(),
                    path.display()
                )));
            }
            Err(TryLockError::Error(error)) => {
                // A file system without locks should not keep the server from starting; it only
                // loses this guard.
                tracing::warn!(%error, file = %path.display(), "cannot lock the database for this process; nothing stops a second server on it");
                return Ok(InstanceLock { _file: file });
            }
        }
        // Only for the message a second server gets; the lock is what counts.
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        if let Err(error) = written {
            tracing::debug!(%error, file = %path.display(), "cannot write the process id into the lock file");
        }
        Ok(InstanceLock { _file: file })
    }
}

fn open_owner_only(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("sub").join("zoomhook.db");
        let first = InstanceLock::acquire(&log).expect("first lock");
        let refused = InstanceLock::acquire(&log).expect_err("second lock");
        let message = refused.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("one server at a time"), "{message}");
        drop(first);
        InstanceLock::acquire(&log).expect("the lock is free again");
        // Another database in the same directory is not affected.
        let _other = InstanceLock::acquire(&dir.path().join("other.db")).expect("other lock");
    }
}
