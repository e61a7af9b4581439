//! A task on a thread of its own: a current-thread Tokio runtime, for a loop that must not wait
//! behind the shared runtime's tasks (the committer), or whose tasks wake each other so often
//! that waking them on one thread costs far less than across threads (the delivery pump, its
//! attempts and their HTTP connections).

use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

/// Runs `work` on a new thread named `name`, on a current-thread runtime (what `work` spawns
/// runs there too). Returns a handle on the calling runtime that completes when `work` ends,
/// and an abort handle for `work`; `work` is also aborted if the calling runtime shuts down
/// first. If the thread or its runtime cannot be made, `work` runs as a task on the calling
/// runtime instead.
pub fn spawn(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, AbortHandle) {
    spawn_with(
        std::thread::Builder::new().name(name.to_owned()),
        name,
        work,
    )
}

/// [`spawn`] with the thread made by `thread`.
fn spawn_with(
    thread: std::thread::Builder,
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, AbortHandle) {
    // The thread first, waiting for its runtime: if the OS refuses the thread, nothing has been
    // moved into it yet (a runtime dropped inside async code would panic), and `work` still runs.
    let (hand_over, handed) = std::sync::mpsc::channel::<(Runtime, JoinHandle<()>)>();
    let (done, finished) = oneshot::channel::<()>();
    let started = thread.spawn(move || {
        let Ok((runtime, task)) = handed.recv() else {
            return; // no runtime came: the work runs elsewhere
        };
        // Ends when the work does (finished, or aborted); what it spawned is dropped with
        // the runtime.
        let _ = runtime.block_on(task);
        let _ = done.send(());
    });
    if let Err(error) = started {
        tracing::error!(%error, thread = name, "cannot start a thread; running on the shared runtime");
        return on_shared_runtime(work);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::warn!(%error, thread = name, "cannot build a runtime of its own; running on the shared one");
            return on_shared_runtime(work); // dropping `hand_over` ends the waiting thread
        }
    };
    let task = runtime.spawn(work);
    let abort = task.abort_handle();
    if let Err(std::sync::mpsc::SendError((runtime, _task))) = hand_over.send((runtime, task)) {
        // The thread is gone already. Not a plain drop: that panics inside async code.
        tracing::error!(thread = name, "the thread ended before its work started");
        runtime.shutdown_background();
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

/// `work` as a task of the calling runtime.
fn on_shared_runtime(
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, AbortHandle) {
    let task = crate::metrics::spawn(work);
    let abort = task.abort_handle();
    (task, abort)
}

/// Aborts a task when dropped (a no-op once the task has ended).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_its_own_named_thread_and_the_handle_ends_with_it() {
        let (tx, rx) = oneshot::channel();
        let (handle, _abort) = spawn("zoomhook-test-own", async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        assert_eq!(rx.await.unwrap().as_deref(), Some("zoomhook-test-own"));
        ends(handle, "the handle completes when the work ends").await;
    }

    /// Waits (at most 5 s) for `handle` to complete without error.
    async fn ends(handle: JoinHandle<()>, what: &str) {
        tokio::time::timeout(std::time::Duration::from_secs(5), handle)
            .await
            .expect(what)
            .unwrap();
    }

    #[tokio::test]
    async fn aborting_ends_the_work() {
        let (handle, abort) = spawn("zoomhook-test-abort", std::future::pending());
        abort.abort();
        ends(handle, "an aborted work ends its thread").await;
    }

    #[tokio::test]
    async fn a_thread_the_os_refuses_leaves_the_work_running_on_the_calling_runtime() {
        // A stack no machine can give: the thread cannot be made.
        let refused = std::thread::Builder::new()
            .name("zoomhook-test-refused".into())
            .stack_size(usize::MAX / 2);
        let (tx, rx) = oneshot::channel();
        let (handle, _abort) = spawn_with(refused, "zoomhook-test-refused", async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let ran_on = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the work still runs")
            .unwrap();
        assert_ne!(ran_on.as_deref(), Some("zoomhook-test-refused"));
        handle.await.unwrap();
    }
}
