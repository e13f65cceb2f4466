//! Admission: how many requests run in the registry component at once. A
//! running request holds an instance from the pool, and the pool is sized
//! from the same number (runtime.rs), so admission turns requests away
//! before the pool could fail them. A request past the cap waits a short
//! while for a slot, then is told to retry later (503).
//!
//! Requests whose body streams into the guest (uploads) can be held open by
//! a slow client for as long as the body timeout allows, so they may hold
//! only three quarters of the slots: the rest stay free for requests without
//! a streamed body (reads, manifests, small blobs).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for a slot before it is turned away.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// The Retry-After a turned-away client gets, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

pub struct Admission {
    slots: usize,
    /// Every request running in the guest holds one of these.
    all: Arc<Semaphore>,
    streaming_slots: usize,
    /// A request with a streamed body holds one of these as well.
    streaming: Arc<Semaphore>,
    wait: Duration,
    rejected: AtomicU64,
    body_timeouts: AtomicU64,
}

/// A running request's claim on the registry; dropping it frees the slot.
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _streaming: Option<OwnedSemaphorePermit>,
}

/// The slots requests with a streamed body may hold: three quarters,
/// rounded down, so at least one of two is kept for the others.
pub fn streaming_share(slots: usize) -> usize {
    slots - slots.div_ceil(4)
}

impl Admission {
    pub fn new(slots: usize, wait: Duration) -> Admission {
        let streaming_slots = streaming_share(slots);
        Admission {
            slots,
            all: Arc::new(Semaphore::new(slots)),
            streaming_slots,
            streaming: Arc::new(Semaphore::new(streaming_slots)),
            wait,
            rejected: AtomicU64::new(0),
            body_timeouts: AtomicU64::new(0),
        }
    }

    /// A slot, or `None` if none came free within the wait. Waiters are
    /// served in arrival order (tokio's semaphore is fair).
    pub async fn admit(&self, streams_body: bool) -> Option<Slot> {
        let take = async {
            // The streaming share first: an upload waiting for it holds no
            // general slot meanwhile.
            let streaming = match streams_body {
                true => Some(self.streaming.clone().acquire_owned().await.ok()?),
                false => None,
            };
            let all = self.all.clone().acquire_owned().await.ok()?;
            Some(Slot {
                _all: all,
                _streaming: streaming,
            })
        };
        let slot = tokio::time::timeout(self.wait, take).await.ok().flatten();
        if slot.is_none() {
            self.rejected.fetch_add(1, Relaxed);
        }
        slot
    }

    pub fn record_body_timeout(&self) {
        self.body_timeouts.fetch_add(1, Relaxed);
    }

    /// Gauges and counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let held = |cap: usize, sem: &Semaphore| (cap - sem.available_permits().min(cap)) as u64;
        let mut s = String::new();
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics::single(&mut s, name, kind, help, v)
        };
        line(
            "skiff_requests_in_flight",
            "gauge",
            "Requests running in the registry component.",
            held(self.slots, &self.all),
        );
        line(
            "skiff_requests_in_flight_limit",
            "gauge",
            "http.maxRequestsInFlight.",
            self.slots as u64,
        );
        line(
            "skiff_uploads_in_flight",
            "gauge",
            "Requests with a streamed body holding a slot.",
            held(self.streaming_slots, &self.streaming),
        );
        line(
            "skiff_requests_rejected_total",
            "counter",
            "Requests answered 503 because no slot came free in time.",
            self.rejected.load(Relaxed),
        );
        line(
            "skiff_request_body_timeouts_total",
            "counter",
            "Requests answered 408 because their body stalled past http.bodyTimeout.",
            self.body_timeouts.load(Relaxed),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_leave_a_quarter_of_the_slots() {
        assert_eq!(streaming_share(2), 1);
        assert_eq!(streaming_share(4), 3);
        assert_eq!(streaming_share(5), 3);
        assert_eq!(streaming_share(256), 192);
    }

    #[test]
    fn past_the_cap_requests_are_turned_away_and_counted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Admission::new(4, Duration::from_millis(20));
            let mut uploads = Vec::new();
            for _ in 0..3 {
                uploads.push(a.admit(true).await.expect("an upload slot"));
            }
            assert!(a.admit(true).await.is_none(), "a fourth upload");
            let read = a.admit(false).await.expect("the kept slot");
            assert!(a.admit(false).await.is_none(), "every slot is taken");
            drop(read);
            drop(uploads.pop());
            assert!(a.admit(true).await.is_some(), "a freed upload slot");
            let m = a.render();
            assert!(m.contains("\nskiff_requests_rejected_total 2\n"), "{m}");
            assert!(m.contains("\nskiff_uploads_in_flight 2\n"), "{m}");
        });
    }
}
