//! One shutdown for a whole program: a [`CancellationToken`] that every
//! task and thread watches, and a [`TaskTracker`] through which every task
//! is spawned, so that SIGTERM can wait, within a deadline, for the last
//! duties (the offline status, the outbox flush, `--exec` hooks answered or
//! killed). The classic form is mini-redis `src/shutdown.rs`; this is the
//! tokio-util one (`CancellationToken` + `TaskTracker`).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The program's one shutdown signal and the set of its tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks and threads watch (`cancelled().await` or
    /// `is_cancelled()`).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A child token: cancelled with the program, or on its own.
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown begins.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// Spawns a tracked task: [`Shutdown::wait`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Runs blocking work on tokio's blocking pool, tracked.
    pub fn spawn_blocking<F, T>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking(work)
    }

    /// Begins shutdown: every watcher of the token sees it; no new task is
    /// expected after this (the tracker is closed, so `wait` can finish).
    pub fn trigger(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    /// Waits for every tracked task to finish, at most `deadline`. Returns
    /// how many were still running when the deadline passed (0: all done).
    pub async fn wait(&self, deadline: Duration) -> usize {
        self.tracker.close();
        match tokio::time::timeout(deadline, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn wait_returns_once_every_task_has_done_its_last_duty() {
        let s = Shutdown::new();
        let done = Arc::new(AtomicBool::new(false));
        let (token, flag) = (s.token(), done.clone());
        s.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
        });
        s.trigger();
        assert_eq!(s.wait(Duration::from_secs(5)).await, 0);
        assert!(done.load(Ordering::SeqCst), "the task's last duty ran");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_at_the_deadline_and_counts_what_is_left() {
        let s = Shutdown::new();
        s.spawn(std::future::pending::<()>());
        s.spawn(async {});
        s.trigger();
        assert_eq!(s.wait(Duration::from_secs(1)).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_token_is_cancelled_with_the_program() {
        let s = Shutdown::new();
        let child = s.child_token();
        assert!(!child.is_cancelled());
        s.trigger();
        assert!(child.is_cancelled() && s.is_triggered());
    }
}
