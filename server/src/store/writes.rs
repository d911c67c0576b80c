//! What happened to the writes of a request that ran out of time.
//!
//! A request's writes wait in the single writer's queue. When the request's time limit runs out, the client must be
//! told the truth: either nothing was written (and a retry is safe), or a write started (and then the client gets
//! the real answer, or is told the outcome is unknown). The rule, kept by the writer and the HTTP timeout:
//!
//! 1. Every request runs under one [`RequestWrites`] ([`track`]); the store picks it up ([`current`]) for each
//!    write the request queues. Writes made outside a request (jobs, the CLI, deferred audit batches run by their
//!    own task) are not tracked and always run.
//! 2. The writer asks [`RequestWrites::begin`] just before it runs a job. The first job of a request moves it from
//!    *open* to *started*; from then on every job of the request runs, and a started job runs to completion:
//!    it commits or rolls back with its batch like any other, its audit row in the same transaction.
//! 3. The timeout calls [`RequestWrites::abandon`]. If no job of the request has started, the request becomes
//!    *abandoned*: the writer skips its queued jobs (nothing of them is written) and the store refuses new ones
//!    before queueing them, so "not applied; retry" is true. If a job has started, `abandon` says so and changes
//!    nothing: the caller lets the request finish (and answers what it did) or reports the outcome as unknown.
//!
//! `begin` and `abandon` are one compare-and-swap each on the same word, so they cannot both win.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const OPEN: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

tokio::task_local! {
    static CURRENT: Arc<RequestWrites>;
}

/// The write state of one request (see the module docs).
#[derive(Debug, Default)]
pub struct RequestWrites {
    state: AtomicU8,
}

/// What [`RequestWrites::abandon`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// No write of the request started, and none will: nothing was written.
    NothingWritten,
    /// A write of the request started (it commits or rolls back on its own): the outcome is the request's.
    WriteStarted,
}

impl RequestWrites {
    pub fn new() -> Arc<RequestWrites> {
        Arc::new(RequestWrites::default())
    }

    /// Writer side, just before a job of this request runs: false when the request was abandoned (skip the job).
    pub fn begin(&self) -> bool {
        match self.state.compare_exchange(OPEN, STARTED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(s) => s == STARTED,
        }
    }

    /// Timeout side: abandons the request unless one of its writes has started.
    pub fn abandon(&self) -> Abandoned {
        match self.state.compare_exchange(OPEN, ABANDONED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Abandoned::NothingWritten,
            Err(ABANDONED) => Abandoned::NothingWritten,
            Err(_) => Abandoned::WriteStarted,
        }
    }

    pub fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::Acquire) == ABANDONED
    }

    pub fn has_started(&self) -> bool {
        self.state.load(Ordering::Acquire) == STARTED
    }
}

/// Runs `f` with `writes` as the request whose writes the store tracks.
pub async fn track<F: Future>(writes: Arc<RequestWrites>, f: F) -> F::Output {
    CURRENT.scope(writes, f).await
}

/// Why [`within`] gave up on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// The time ran out before any write of the request started: nothing was applied, a retry is safe.
    NothingWritten,
    /// The time ran out twice after a write had started: the change may have been applied.
    OutcomeUnknown,
}

/// Runs `f` as one tracked request within `limit` (rule 3): when the time runs out and no write has started, the
/// request is abandoned; when one has, it gets the same time again to finish and answer what it did.
pub async fn within<F: Future>(limit: std::time::Duration, f: F) -> Result<F::Output, TimedOut> {
    let writes = RequestWrites::new();
    let run = track(writes.clone(), f);
    tokio::pin!(run);
    match tokio::time::timeout(limit, &mut run).await {
        Ok(r) => Ok(r),
        Err(_) => match writes.abandon() {
            Abandoned::NothingWritten => Err(TimedOut::NothingWritten),
            Abandoned::WriteStarted => {
                tokio::time::timeout(limit, &mut run).await.map_err(|_| TimedOut::OutcomeUnknown)
            }
        },
    }
}

/// The request being served by this task, if any.
pub fn current() -> Option<Arc<RequestWrites>> {
    CURRENT.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_request_cannot_be_abandoned() {
        let w = RequestWrites::new();
        assert!(w.begin());
        assert!(w.begin(), "later jobs of a started request run too");
        assert_eq!(w.abandon(), Abandoned::WriteStarted);
        assert!(!w.is_abandoned());
    }

    #[test]
    fn an_abandoned_request_never_starts_a_write() {
        let w = RequestWrites::new();
        assert_eq!(w.abandon(), Abandoned::NothingWritten);
        assert_eq!(w.abandon(), Abandoned::NothingWritten);
        assert!(!w.begin());
        assert!(w.is_abandoned());
    }

    #[test]
    fn begin_and_abandon_race_with_exactly_one_winner() {
        for _ in 0..200 {
            let w = RequestWrites::new();
            let w2 = w.clone();
            let t = std::thread::spawn(move || w2.begin());
            let a = w.abandon();
            let began = t.join().unwrap_or(false);
            assert_eq!(began, a == Abandoned::WriteStarted);
        }
    }

    #[tokio::test]
    async fn the_tracked_request_is_visible_inside_and_not_outside() {
        assert!(current().is_none());
        let w = RequestWrites::new();
        let inside = track(w.clone(), async { current() }).await;
        assert!(inside.is_some_and(|i| Arc::ptr_eq(&i, &w)));
        // A task spawned by the request is not the request (deferred audit batches run on their own).
        let spawned = track(w, async { tokio::spawn(async { current().is_none() }).await.unwrap_or(false) }).await;
        assert!(spawned);
    }
}
