//! Panics kept inside the work that raised them: a bug hit by one delivery attempt must cost that
//! attempt, not a slot of its subscription forever; a bug hit by a long-running loop must cost a
//! restart of that loop, not the end of its work for the life of the process.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;

/// How long a loop that panicked waits before it is started again (so a panic on every start
/// does not spin).
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// The text a panic was raised with (`panic!("…")` carries a `&str` or a `String`).
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs `work`; a panic inside it becomes `Err` with the panic's message.
///
/// Unwind safety: callers hand in work whose state is dropped with it, or state that a panic
/// cannot leave half-updated (the pump's slots are rebuilt on restart).
///
/// Not an `async fn`: that would hold `work` twice (its argument, and the future awaiting it),
/// and a delivery's future is kilobytes, copied whenever it moves.
pub fn contain<F: Future>(work: F) -> impl Future<Output = Result<F::Output, String>> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .map(|result| result.map_err(|payload| message(payload.as_ref())))
}

/// Runs the loop `start()` makes until it ends on its own (it watches `stop` itself); if it
/// panics, logs the panic, counts it in `zoomhook_task_panics_total{task}` and starts a fresh
/// one after a pause, unless `stop` is set by then.
pub async fn restart_on_panic<F, Fut>(task: &'static str, mut stop: watch::Receiver<bool>, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let Err(panic) = contain(start()).await else {
            return;
        };
        metrics::counter!("zoomhook_task_panics_total", "task" => task).increment(1);
        tracing::error!(task, %panic, "a task panicked; starting it again");
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_AFTER) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let formatted = contain(async { panic!("bad value {}", 7) }).await;
        assert_eq!(formatted, Err::<(), _>("bad value 7".to_owned()));
        let literal = contain(async { panic!("plain") }).await;
        assert_eq!(literal, Err::<(), _>("plain".to_owned()));
        assert_eq!(contain(async { 5 }).await, Ok(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_panics_is_started_again_until_it_ends_on_its_own() {
        let (_stop_tx, stop) = watch::channel(false);
        let starts = AtomicUsize::new(0);
        restart_on_panic("test", stop, || async {
            if starts.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("not yet");
            }
        })
        .await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "two panics, then a clean end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_the_pause_ends_the_restarts() {
        let (stop_tx, stop) = watch::channel(false);
        let starts = AtomicUsize::new(0);
        let looping = restart_on_panic("test", stop, || async {
            starts.fetch_add(1, Ordering::SeqCst);
            panic!("always");
        });
        let stopper = async {
            tokio::time::sleep(RESTART_AFTER * 3 + RESTART_AFTER / 2).await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(looping, stopper);
        assert_eq!(
            starts.load(Ordering::SeqCst),
            4,
            "started at 0, 1, 2 and 3 s; stopped at 3.5 s"
        );
    }
}
