//! The read pool: searches and reports (CPU-bound work over the index) run
//! at most `threads` at once, first come first served (a fair semaphore);
//! at most `queue` more calls wait, and a call beyond that is refused at
//! once (RESOURCE_EXHAUSTED) instead of piling threads onto the cores. A
//! waiting call whose deadline passes leaves the queue (DEADLINE_EXCEEDED);
//! one whose client goes away is dropped with its future.
//!
//! A search holding a slot runs directly on the async worker that polls it
//! while all but one worker are free to (`try_inline`; the server starts
//! one worker per core and one more), else in place with `block_in_place`;
//! reports and similarity run on the blocking pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RequestContext;
use crate::error::{Error, Result};

pub struct ReadPool {
    /// Threads an idle pool lends a search to spread its segments over.
    spread: Option<crate::index::Spread>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    threads: usize,
    queue: usize,
    /// Searches running directly on an async worker (`try_inline`).
    inline: AtomicUsize,
}

/// A search running directly on an async worker; counted until dropped.
pub struct Inline<'a>(&'a AtomicUsize);

impl Drop for Inline<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a waiting call for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReadPool {
    pub fn new(threads: usize, queue: usize) -> Self {
        ReadPool {
            spread: None,
            permits: Arc::new(Semaphore::new(threads.max(1))),
            waiting: AtomicUsize::new(0),
            threads: threads.max(1),
            queue,
            inline: AtomicUsize::new(0),
        }
    }

    /// Lets a search spread its segments over `spread`'s threads while
    /// another slot is free (`spread_if_idle`).
    pub fn with_spread(mut self, spread: Option<crate::index::Spread>) -> Self {
        self.spread = spread;
        self
    }

    /// The threads to spread a search over, when a slot besides the
    /// caller's is free: fewer searches and reports run than the pool's
    /// threads, and none waits (the semaphore hands a freed slot to a
    /// waiting call first), so cores are idle. Under load every slot is
    /// taken and searches run one thread each (spreading adds no throughput).
    pub fn spread_if_idle(&self) -> Option<&crate::index::Spread> {
        let spread = self.spread.as_ref()?;
        (self.permits.available_permits() > 0).then_some(spread)
    }

    /// Leave to run a search directly on the async worker polling it
    /// (no hand-off of the worker to another thread) while fewer than
    /// `workers - 1` searches do: one worker always stays free to serve
    /// every other call, so a long search never stalls the runtime.
    pub fn try_inline(&self, workers: usize) -> Option<Inline<'_>> {
        let most = workers.saturating_sub(1);
        let before = self.inline.fetch_add(1, Ordering::AcqRel);
        let inline = Inline(&self.inline);
        (before < most).then_some(inline)
    }

    /// A slot to run one read in; held until the work is done.
    pub async fn enter(&self, ctx: &RequestContext) -> Result<OwnedSemaphorePermit> {
        ctx.check_deadline()?;
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        let _queued = crate::metrics::queue_depth(crate::metrics::pool::SEARCH).track();
        if before >= self.queue {
            return Err(Error::Busy(format!(
                "all {} search threads are busy and {} calls wait (--search-threads, --search-queue); retry with backoff",
                self.threads, self.queue
            )));
        }
        let acquire = self.permits.clone().acquire_owned();
        let permit = match ctx.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), acquire)
                .await
                .map_err(|_| Error::DeadlineExceeded)?,
            None => acquire.await,
        };
        permit.map_err(|e| Error::Task(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn waits_in_order_then_refuses_beyond_the_queue() {
        let pool = ReadPool::new(1, 1);
        let ctx = RequestContext::internal();
        let held = pool.enter(&ctx).await.unwrap();
        // One call may wait; the next is refused at once.
        let waiter = {
            let pool = &pool;
            let ctx = ctx.clone();
            async move { pool.enter(&ctx).await }
        };
        let refused = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = pool.enter(&ctx).await;
            drop(held);
            r
        };
        let (waited, refused) = tokio::join!(waiter, refused);
        assert!(matches!(refused, Err(Error::Busy(_))));
        drop(waited.expect("the waiting call gets the slot"));

        // A deadline that passes while waiting ends the wait.
        let _busy = pool.enter(&ctx).await.unwrap();
        let short = RequestContext {
            deadline: Some(Instant::now() + Duration::from_millis(30)),
            ..RequestContext::internal()
        };
        assert!(matches!(
            pool.enter(&short).await,
            Err(Error::DeadlineExceeded)
        ));
        assert_eq!(pool.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn spreads_only_while_another_slot_is_free() {
        let ctx = RequestContext::internal();
        let off = ReadPool::new(2, 4);
        let _alone = off.enter(&ctx).await.unwrap();
        assert!(off.spread_if_idle().is_none(), "no spread threads");

        let pool = Arc::new(ReadPool::new(2, 4).with_spread(crate::index::Spread::new(2).unwrap()));
        let first = pool.enter(&ctx).await.unwrap();
        assert!(pool.spread_if_idle().is_some(), "one slot of two taken");
        let second = pool.enter(&ctx).await.unwrap();
        assert!(pool.spread_if_idle().is_none(), "every slot taken");
        // A call waiting for a slot takes the next one freed: still none.
        let waiter = {
            let pool = pool.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move { pool.enter(&ctx).await.map(drop) })
        };
        while pool.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(pool.spread_if_idle().is_none(), "a call waits");
        drop(first);
        assert!(
            pool.spread_if_idle().is_none(),
            "the freed slot went to the waiter"
        );
        waiter.await.unwrap().unwrap();
        assert!(pool.spread_if_idle().is_some(), "the waiter came and went");
        drop(second);
        assert!(pool.spread_if_idle().is_some());
    }

    #[test]
    fn runs_inline_on_all_workers_but_one() {
        let pool = ReadPool::new(4, 0);
        // One worker: never inline (it would stall the runtime).
        assert!(pool.try_inline(1).is_none());
        let first = pool.try_inline(3).expect("first of 3 workers");
        let second = pool.try_inline(3).expect("second of 3 workers");
        assert!(pool.try_inline(3).is_none(), "the third stays free");
        drop(first);
        let again = pool
            .try_inline(3)
            .expect("a slot left by a finished search");
        drop((second, again));
        assert_eq!(pool.inline.load(Ordering::Acquire), 0);
    }
}
