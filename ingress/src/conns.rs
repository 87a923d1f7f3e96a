//! The node's connection budget. Every connection on a listener holds one
//! slot from accept to close: HTTP requests, idle keep-alive connections,
//! WebSocket upgrades before and after they authenticate. So the cap
//! (`CHAT_MAX_CONNECTIONS`) is exact, concurrent upgrades cannot overshoot
//! it, and it sits below the descriptor limit.
//!
//! At the cap, the connection that has been *evictable* longest is closed
//! to make room: one still sending its request head, idle between requests,
//! or upgraded and not yet authenticated. A request being served and an
//! authenticated socket are never evicted. When nothing is evictable the
//! new connection is refused. A crowd of slow or silent connections
//! therefore cannot lock out health checks and real clients: each newcomer
//! pushes out the oldest of them, and serves its request long before it
//! would be pushed out in turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Descriptors kept back from the cap for Redis, MongoDB, the runtime and
/// files: at least 64, or a sixteenth of the limit.
fn reserve(limit: u64) -> u64 {
    (limit / 16).max(64)
}

/// The cap a node can keep given its descriptor limit: `wanted`, or less
/// when the limit would not hold that many connections. The soft limit is
/// raised to the hard one first, as most servers do at start.
pub fn cap_for_descriptors(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), hard) = (lim.current, lim.maximum)
        && hard.is_none_or(|h| h > cur)
    {
        // Unlimited hard limits still have a kernel ceiling (nr_open).
        let want = hard.unwrap_or(1 << 20);
        let mut raised = lim;
        raised.current = Some(want);
        if setrlimit(Resource::Nofile, raised).is_ok() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    let Some(limit) = lim.current else {
        return wanted;
    };
    let room = limit.saturating_sub(reserve(limit)).max(1);
    let cap = (wanted as u64).min(room) as usize;
    if cap < wanted {
        tracing::info!(
            descriptors = limit,
            cap,
            "connection cap lowered to fit the descriptor limit"
        );
    }
    cap
}

/// Slots of one listener.
pub struct Budget {
    /// A name for metrics and logs (`public`, `metrics`).
    name: &'static str,
    cap: usize,
    permits: Arc<Semaphore>,
    /// Evictable connections by when they became so (oldest first).
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next: u64,
    evictable: BTreeMap<u64, CancellationToken>,
}

impl Budget {
    pub fn new(name: &'static str, cap: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            cap: cap.max(1),
            permits: Arc::new(Semaphore::new(cap.max(1))),
            queue: Mutex::new(Queue::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.cap - self.permits.available_permits()
    }

    /// A slot if one is free now.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// A slot once one is freed (after an eviction).
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(self.slot(permit))
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        metrics::gauge!("chat_listener_connections", "listener" => self.name).increment(1.0);
        let inner = Arc::new(SlotInner {
            budget: self.clone(),
            evict: CancellationToken::new(),
            queued_as: AtomicU64::new(0),
            holds: AtomicUsize::new(0),
            _permit: permit,
        });
        self.enqueue(&mut self.lock(), &inner);
        Slot(inner)
    }

    fn enqueue(&self, q: &mut Queue, slot: &SlotInner) {
        q.next += 1;
        slot.queued_as.store(q.next, Ordering::Relaxed);
        q.evictable.insert(q.next, slot.evict.clone());
    }

    fn dequeue(q: &mut Queue, slot: &SlotInner) {
        let at = slot.queued_as.swap(0, Ordering::Relaxed);
        if at != 0 {
            q.evictable.remove(&at);
        }
    }

    /// Closes the connection that has been evictable longest; false when
    /// every connection is serving a request or an authenticated socket.
    pub fn evict_oldest(&self) -> bool {
        let Some((_, token)) = self.lock().evictable.pop_first() else {
            return false;
        };
        token.cancel();
        metrics::counter!("chat_connections_shed_total", "listener" => self.name, "how" => "evicted")
            .increment(1);
        // One line per shed connection, as for refused sockets; under a
        // flood, RUST_LOG=ingress::conns=warn quiets them (the counter stays).
        tracing::info!(
            listener = self.name,
            reason = "capacity",
            "connection evicted to make room"
        );
        true
    }

    /// Counts a connection refused for want of a slot.
    pub fn refused(&self) {
        metrics::counter!("chat_connections_shed_total", "listener" => self.name, "how" => "refused")
            .increment(1);
        tracing::info!(
            listener = self.name,
            reason = "capacity",
            "connection refused: no slot left (CHAT_MAX_CONNECTIONS)"
        );
    }
}

/// One connection's slot; clones share it, and it is freed with the last.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

struct SlotInner {
    budget: Arc<Budget>,
    evict: CancellationToken,
    /// Its key in the eviction queue, 0 while not evictable. Changed only
    /// under the queue's lock.
    queued_as: AtomicU64,
    /// Live `Hold`s; changed only under the queue's lock.
    holds: AtomicUsize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        Budget::dequeue(&mut self.budget.lock(), self);
        metrics::gauge!("chat_listener_connections", "listener" => self.budget.name).decrement(1.0);
    }
}

impl Slot {
    /// Keeps the connection from eviction while the guard lives: a request
    /// being served, an authenticated socket.
    pub fn hold(&self) -> Hold {
        let mut q = self.0.budget.lock();
        if self.0.holds.fetch_add(1, Ordering::Relaxed) == 0 {
            Budget::dequeue(&mut q, &self.0);
        }
        Hold(self.0.clone())
    }

    /// Resolves when the budget evicts this connection.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.0.evict.clone().cancelled_owned()
    }

    pub fn is_evicted(&self) -> bool {
        self.0.evict.is_cancelled()
    }
}

/// See [`Slot::hold`].
pub struct Hold(Arc<SlotInner>);

impl Drop for Hold {
    fn drop(&mut self) {
        let budget = &self.0.budget;
        let mut q = budget.lock();
        // Evicted ones stay out of the queue: they are closing.
        if self.0.holds.fetch_sub(1, Ordering::Relaxed) == 1 && !self.0.evict.is_cancelled() {
            budget.enqueue(&mut q, &self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_evictable_goes_first_and_held_ones_never() {
        let b = Budget::new("test", 3);
        let a = b.try_admit().expect("a");
        let held = b.try_admit().expect("b");
        let c = b.try_admit().expect("c");
        assert!(b.try_admit().is_none(), "at the cap");
        assert_eq!(b.open(), 3);
        let guard = held.hold();
        assert!(b.evict_oldest());
        assert!(a.is_evicted() && !held.is_evicted() && !c.is_evicted());
        drop(a);
        assert_eq!(b.open(), 2, "an evicted slot is freed with its last clone");
        assert!(b.evict_oldest());
        assert!(c.is_evicted());
        assert!(!b.evict_oldest(), "only a held slot is left");
        drop(guard);
        assert!(b.evict_oldest(), "evictable again once released");
        assert!(held.is_evicted());
    }

    #[test]
    fn a_released_slot_queues_behind_older_ones() {
        let b = Budget::new("test", 4);
        let first = b.try_admit().expect("first");
        let guard = first.hold();
        let second = b.try_admit().expect("second");
        drop(guard);
        assert!(b.evict_oldest());
        assert!(second.is_evicted(), "evictable longest");
        assert!(!first.is_evicted());
    }

    #[test]
    fn the_cap_follows_the_descriptor_limit() {
        assert_eq!(reserve(256), 64);
        assert_eq!(reserve(65_536), 4096);
        // Read after: the call raises the soft limit to the hard one.
        let cap = cap_for_descriptors(usize::MAX);
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(limit) = limit {
            assert_eq!(cap as u64, limit - reserve(limit), "a reserve kept back");
        }
        assert_eq!(cap_for_descriptors(5), 5);
    }
}
