//! A task on a thread of its own: a current-thread Tokio runtime, for a loop that must not wait
//! behind the shared runtime's tasks (the committer), or whose tasks wake each other so often
//! that waking them on one thread costs far less than across threads (the delivery pump, its
//! attempts and their HTTP connections).

use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

/// Runs `work` on a new thread named `name`, on a current-thread runtime (what `work` spawns
/// runs there too). Returns a handle on the calling runtime that completes when `work` ends,
/// and an abort handle for `work`; `work` is also aborted if the calling runtime shuts down
/// first. If the runtime cannot be built, `work` runs as a task on the calling runtime instead.
pub fn spawn(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, AbortHandle) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::warn!(%error, thread = name, "cannot build a runtime of its own; running on the shared one");
            let task = crate::metrics::spawn(work);
            let abort = task.abort_handle();
            return (task, abort);
        }
    };
    let task = runtime.spawn(work);
    let abort = task.abort_handle();
    let (done, finished) = oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Ends when the work does (finished, or aborted); what it spawned is dropped with
            // the runtime.
            let _ = runtime.block_on(task);
            let _ = done.send(());
        });
    if let Err(error) = started {
        tracing::error!(%error, thread = name, "cannot start a thread");
    }
    // The work lives no longer than the runtime that started it: if that runtime drops this
    // waiter (it shut down without the work ending), the guard aborts the work.
    let guard = AbortOnDrop(abort.clone());
    let handle = crate::metrics::spawn(async move {
        let _guard = guard;
        let _ = finished.await;
    });
    (handle, abort)
}

/// Aborts a task when dropped (a no-op once the task has ended).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
