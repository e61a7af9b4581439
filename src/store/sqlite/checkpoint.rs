//! The thread that checkpoints each SQLite database's WAL in the background, and starts the
//! writing of the state database's WAL between checkpoints.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;
use super::open::keep_plans;

/// Restart attempts are at most this frequent (each one holds appends back for a moment).
const RESTART_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Longest a RESTART checkpoint holds appends back while it waits for readers.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(100);
/// How long a RESTART checkpoint first waits for readers; each attempt that could not finish
/// doubles it, up to [`CHECKPOINT_BUSY`], and one that finishes starts over from here.
const RESTART_BUSY_FIRST: Duration = Duration::from_millis(10);
/// Bytes of a WAL frame besides its page.
const WAL_FRAME_HEADER: i64 = 24;
/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How often the kernel is asked to start writing a WAL whose commits do not sync it. Left to
/// the checkpoint's sync, the state database's WAL (sync's and the indexer's pages: ~100 MB/s
/// in a flood) reached the disk in bursts of tens of MB every [`CHECKPOINT_EVERY`], and the log
/// commits that met one waited for it: in `bench/ab-sqlite-ingest.sh` pairs the ack p99 went
/// from 25–29 ms to 17–20 ms with this, at the same rate (`bench/RESULTS.md`).
const WRITEBACK_EVERY: Duration = Duration::from_millis(10);

/// Starts the thread that checkpoints the WAL in the background, on its own connection.
///
/// A PASSIVE checkpoint never blocks the writer or readers; it copies what it can and the writer
/// restarts the WAL from the beginning once everything is copied. Doing this inline (SQLite's
/// auto-checkpoint) would put a large write and an extra fsync of the database file inside some
/// commits and so into the tail latency of their acks.
///
/// But the WAL only restarts when no reader is still using it, and under sustained load (sync,
/// fan-out and the admin API read all the time) that moment may never come: the WAL then grows
/// without bound (1 GB in 15 s was seen). So once the frames in use pass `wal_limit` bytes,
/// right after a PASSIVE checkpoint has copied nearly everything, a RESTART checkpoint holds new
/// writes back while the readers finish (they are short) so the next commit starts the WAL over,
/// and `journal_size_limit` cuts the file back. Each attempt costs writers a pause — the wait for
/// readers, 10 ms at first and up to [`CHECKPOINT_BUSY`] only after attempts that could not
/// finish (a flat 100 ms stalled every writer for that long), and copying what PASSIVE could not
/// — which grows with the limit: measured in `bench/ingest` (`bench/RESULTS.md`), 64 MiB with at most one
/// attempt a second gave an ack p99 of 29 ms and a worst ack of 0.41 s, 1 GiB a p99 of 25 ms but
/// a worst ack of 1.7 s (Zoom gives up at 3 s), no limit 27 ms and a WAL of gigabytes. The wait is bounded, so a
/// reader that never finishes (a backup tool holding a read transaction) costs appends at most
/// that pause per attempt, not seconds; such a reader keeps the WAL from restarting, which is
/// SQLite's rule, and the `zoomhook_sqlite_wal_bytes` gauge shows it. Every attempt is counted
/// (`zoomhook_sqlite_wal_restarts_total`) and timed (`zoomhook_sqlite_wal_restart_seconds`: how
/// long that database's writers were held back). One that finds frames committed since the
/// PASSIVE checkpoint holds them for a sync of the database file as well: those frames must be
/// durable in it before the WAL may be overwritten. Measured under load: 5–26 ms each, every
/// ~1.3 s for the state database at 1,000 deliveries/s, which is the tail of the
/// ingest→delivery delay (`bench/RESULTS.md`). The thread ends when the store is dropped.
///
/// With `wal_writeback` (a database whose commits do not sync its WAL: the state database), the
/// thread also asks the kernel every [`WRITEBACK_EVERY`] to start writing the WAL's new pages
/// ([`Writeback`]), so they reach the disk in a steady trickle instead of in one burst at the
/// next checkpoint's sync — a burst the log's commits, on the same disk, wait behind.
pub(super) fn spawn_checkpointer(
    path: &Path,
    file: &'static str,
    wal_limit: u64,
    writer: std::sync::Weak<Mutex<Connection>>,
    wal_writeback: bool,
) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    keep_plans(&conn)?;
    let page_bytes: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_path = wal.clone();
    let recorder = crate::metrics::current();
    // What a checkpoint reports: whether it could not finish (busy), and the frames in the WAL.
    let checkpoint = move |mode: &str, busy: Duration| -> Option<(bool, i64)> {
        if let Err(error) = conn.busy_timeout(busy) {
            tracing::warn!(%error, mode, "cannot set the checkpoint's busy timeout; will retry");
            return None;
        }
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        match conn.query_row(&sql, [], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
        }) {
            Ok(outcome) => {
                if outcome.0 {
                    tracing::debug!(mode, "WAL checkpoint could not finish (busy); will retry");
                }
                Some(outcome)
            }
            Err(error) => {
                tracing::warn!(%error, mode, "WAL checkpoint failed; will retry");
                None
            }
        }
    };
    let wal_bytes = move || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut last_restart = Instant::now() - RESTART_AT_MOST_EVERY;
            let mut restart_busy = RESTART_BUSY_FIRST;
            let mut writeback = wal_writeback.then(|| Writeback::new(wal_path));
            // At writeback pace while the WAL is being written (its frame count moved between
            // the last two checkpoints), else at checkpoint pace: an idle database's thread
            // wakes four times a second, not a hundred. (Not from the file's length and
            // modification time: a build that read them on every tick lost most of the p99 gain,
            // measured in `bench/RESULTS.md`; why was not established.)
            let mut writing = false;
            let mut frames_before = -1;
            let mut last_checkpoint = Instant::now();
            while writer.strong_count() > 0 {
                std::thread::sleep(match writeback {
                    Some(_) if writing => WRITEBACK_EVERY,
                    _ => CHECKPOINT_EVERY,
                });
                if let Some(w) = &mut writeback
                    && let Err(error) = w.start()
                {
                    tracing::warn!(%error, file, "cannot start writing the WAL in the background; leaving it to the checkpoints");
                    writeback = None;
                }
                if last_checkpoint.elapsed() < CHECKPOINT_EVERY {
                    continue;
                }
                last_checkpoint = Instant::now();
                // The frames in use, not the file's size: the file is cut back to the limit
                // only when the WAL starts over, and stays that large while it is reused.
                let frames = checkpoint("PASSIVE", Duration::ZERO).map_or(0, |(_, frames)| frames);
                writing = frames != frames_before;
                frames_before = frames;
                let used = frames.saturating_mul(page_bytes + WAL_FRAME_HEADER) as u64;
                // Each attempt holds writers back while it waits for readers: rarely, only past
                // the limit, and first briefly; longer only after a short wait did not do.
                if used > wal_limit && last_restart.elapsed() >= RESTART_AT_MOST_EVERY {
                    last_restart = Instant::now();
                    let result = checkpoint("RESTART", restart_busy);
                    let held = last_restart.elapsed();
                    let outcome = match result {
                        Some((false, _)) => "restarted",
                        Some((true, _)) => "busy",
                        None => "failed",
                    };
                    crate::metrics::on_thread(recorder.as_ref(), || {
                        metrics::counter!("zoomhook_sqlite_wal_restarts_total", "file" => file, "outcome" => outcome)
                            .increment(1);
                        metrics::histogram!("zoomhook_sqlite_wal_restart_seconds", "file" => file)
                            .record(held.as_secs_f64());
                    });
                    restart_busy = match result {
                        Some((false, _)) => RESTART_BUSY_FIRST,
                        _ => (restart_busy * 2).min(CHECKPOINT_BUSY),
                    };
                }
                let size = wal_bytes();
                crate::metrics::on_thread(recorder.as_ref(), || {
                    metrics::gauge!("zoomhook_sqlite_wal_bytes", "file" => file).set(size as f64);
                });
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

/// Starts the kernel writing a file's dirty pages to disk, without waiting for them and without
/// a flush of the disk's cache (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): durability is still
/// the checkpoint's sync, this only spreads the writing over time. The file is opened on first
/// use (a WAL appears with the first write) on a descriptor of its own: SQLite never locks a WAL
/// file, so opening and closing one cannot release a lock SQLite holds (its locks are on the
/// database and `-shm` files, which this never opens). A no-op where the call does not exist.
struct Writeback {
    path: PathBuf,
    file: Option<File>,
}

impl Writeback {
    fn new(path: PathBuf) -> Writeback {
        Writeback { path, file: None }
    }

    /// Starts writing what the file holds dirty; nothing (and no error) while it does not exist.
    fn start(&mut self) -> std::io::Result<()> {
        let file = match &self.file {
            Some(file) => file,
            None => match File::open(&self.path) {
                Ok(file) => self.file.insert(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        start_writeback(file)
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and the call takes no
    // pointers; it only queues the range's dirty pages for writing.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writeback_waits_for_the_file_and_then_starts_writing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db-wal");
        let mut w = Writeback::new(path.clone());
        w.start().expect("a WAL not created yet is no error");
        assert!(w.file.is_none(), "nothing opened while the file is absent");

        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        w.start()
            .expect("writeback of a file with dirty pages starts");
        assert!(w.file.is_some(), "the file is kept open for the next ticks");
        f.write_all(&vec![8u8; 1 << 20]).unwrap();
        w.start().expect("and again, on the same descriptor");
    }

    #[test]
    fn writeback_reports_a_path_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        // A path through a regular file: not "not found", a real error the caller must see.
        let blocker = dir.path().join("file");
        File::create(&blocker).unwrap();
        let mut w = Writeback::new(blocker.join("x.db-wal"));
        assert!(w.start().is_err());
    }
}
