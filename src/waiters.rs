//! Host threads that wait for their own ops asleep (`mcfx_progress`), and
//! the progress side that wakes them when one of their ops completes.
//!
//! Why: Mooncake's callers wait by polling (`getTransferStatus` loops, the
//! Python sync calls). Ten polling threads on two CPUs are eleven runnable
//! threads with the progress thread, and the scheduler gives each its fair
//! share: the one running the pass got about a fifth of a CPU, and 60 % of
//! the CPU time went to the polling loops (kv_small_4k, perf). A caller
//! that has waited a little for its ops now sleeps until one of them
//! completes, so the thread running the passes has the CPUs.
//!
//! Each host thread gets one of [`SLOTS`] waiter slots (round robin, on its
//! first submit); every op carries its submitter's slot. Per slot: ops
//! submitted (submitters add, one add per chunk) and completed (the thread
//! running a pass stores; passes run one at a time). A thread with ops
//! outstanding in its slot may sleep on the slot until its completed count
//! moves. Two threads that share a slot (more than `SLOTS` threads) only
//! wake each other early.
//!
//! Invariant (no lost wake-up): the protocol of `sync::Sleepers`, with the
//! slot's completed count as the condition (waker: store `completed`,
//! fence, wake the slot if a sleeper counts itself; sleeper: count itself,
//! fence, re-check `completed` and `stop` under the lock before every
//! wait). Every sleep is bounded too (`wait`'s timeout), so a host loop
//! never stops for long. Model: `tests/loom_waiters.rs`.

use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::sync::{fence, AtomicU64, Ordering, Sleepers};

/// Waiter slots per transport (a bit each in a pass's wake mask).
pub const SLOTS: usize = 64;

/// Ops of the slot's threads: submitted and completed, each on its own
/// line (submitters write one, the pass the other).
struct Slot {
    submitted: CachePadded<AtomicU64>,
    completed: CachePadded<AtomicU64>,
    /// Threads inside `wait` on this slot.
    sleepers: Sleepers,
}

pub struct Waiters {
    slots: Box<[Slot]>,
    /// Slots seen waiting (a call with ops outstanding that ran no pass)
    /// in the current window, a bit each; `prev`: those of the window
    /// before. See `waiting_threads`.
    active: CachePadded<AtomicU64>,
    prev: AtomicU64,
    /// Start of the current window, in ns since `epoch`.
    window: AtomicU64,
    epoch: Instant,
}

/// A waiting thread counts for the window of its last waiting call and the
/// next (its sleeps are 200 us at most, so it calls several times a window
/// unless it waits long for a CPU).
const WINDOW_NS: u64 = 2_000_000;

/// The CPUs this process may run on (affinity, cgroup quota), once.
pub fn cpus() -> u32 {
    static CPUS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(u32::MAX as usize) as u32)
    })
}

impl Default for Waiters {
    fn default() -> Self {
        Self::new()
    }
}

/// Slots handed out so far (round robin over `SLOTS`).
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

std::thread_local! {
    /// This thread's slot, plus one (0: none yet).
    static MINE: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// The calling thread's waiter slot, the same in every transport (handed
/// out on first use, round robin, so up to `SLOTS` threads get one each).
#[inline]
pub fn my_slot() -> u8 {
    // `try_with`: a thread whose locals are being destroyed shares slot 0.
    MINE.try_with(|m| {
        let v = m.get();
        if v != 0 {
            return v - 1;
        }
        let s = (NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SLOTS) as u8;
        m.set(s + 1);
        s
    })
    .unwrap_or(0)
}

impl Waiters {
    pub fn new() -> Waiters {
        Self::with_slots(SLOTS)
    }

    /// `n` slots (1 to `SLOTS`; the loom models use few).
    pub fn with_slots(n: usize) -> Waiters {
        let slots = (0..n.clamp(1, SLOTS))
            .map(|_| Slot {
                submitted: CachePadded::new(AtomicU64::new(0)),
                completed: CachePadded::new(AtomicU64::new(0)),
                sleepers: Sleepers::new(),
            })
            .collect();
        Waiters {
            slots,
            active: CachePadded::new(AtomicU64::new(0)),
            prev: AtomicU64::new(0),
            window: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Notes that slot `w`'s thread is waiting at `now`, and returns how
    /// many threads waited on this transport lately (in this window or the
    /// last, 2 ms each; threads that share a slot count once). Two loads
    /// per call once the thread's bit is set in the window.
    pub fn waiting_threads(&self, w: u8, now: Instant) -> u32 {
        let t = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let start = self.window.load(Ordering::Relaxed);
        if t.saturating_sub(start) > WINDOW_NS
            && self.window.compare_exchange(start, t, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let m = self.active.swap(0, Ordering::Relaxed);
            self.prev.store(m, Ordering::Relaxed);
        }
        let bit = 1u64 << (w as u32 % 64);
        let mut m = self.active.load(Ordering::Relaxed);
        if m & bit == 0 {
            m = self.active.fetch_or(bit, Ordering::Relaxed) | bit;
        }
        (m | self.prev.load(Ordering::Relaxed)).count_ones()
    }

    fn slot(&self, w: u8) -> &Slot {
        &self.slots[w as usize % self.slots.len()]
    }

    /// Submitter side: `n` ops of slot `w` were accepted; call before they
    /// are published (so `completed` never passes `submitted`).
    #[inline]
    pub fn submitted(&self, w: u8, n: u64) {
        self.slot(w).submitted.fetch_add(n, Ordering::Relaxed);
    }

    /// Pass side: `n` ops of slot `w` completed. Only the thread running a
    /// pass calls it (one at a time: a load and a store, no locked
    /// instruction). Wake the slot's sleepers with `wake` once the pass ends.
    #[inline]
    pub fn completed(&self, w: u8, n: u64) {
        let c = &self.slot(w).completed;
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Slot `w`'s ops not yet completed, and its completed count.
    #[inline]
    pub fn outstanding(&self, w: u8) -> (u64, u64) {
        let s = self.slot(w);
        let done = s.completed.load(Ordering::Relaxed);
        (s.submitted.load(Ordering::Relaxed).wrapping_sub(done), done)
    }

    /// Pass side, after `completed`: wakes the sleepers of every slot in
    /// `mask` (bit `w`: slot `w`). A fence and a load per slot when none
    /// sleeps.
    pub fn wake(&self, mut mask: u64) {
        fence(Ordering::SeqCst);
        if self.slots.len() < SLOTS {
            // Fewer slots (a model): fold the mask onto them.
            mask = self.fold(mask);
        }
        while mask != 0 {
            let w = mask.trailing_zeros() as u8;
            mask &= mask - 1;
            let s = &self.slot(w).sleepers;
            if s.any() {
                s.wake_all();
            }
        }
    }

    fn fold(&self, mask: u64) -> u64 {
        let n = self.slots.len();
        (0..SLOTS).filter(|b| mask & (1 << b) != 0).fold(0, |m, b| m | 1 << (b % n))
    }

    /// Wakes every sleeper (shutdown: their `stop` now says so).
    #[cold]
    pub fn wake_all(&self) {
        self.wake(u64::MAX);
    }

    /// Sleeper side: sleeps until slot `w`'s completed count is no longer
    /// `seen`, `stop()` says to, or `timeout` passed. Returns true when the
    /// count moved.
    pub fn wait(&self, w: u8, seen: u64, timeout: Duration, stop: impl Fn() -> bool) -> bool {
        let s = self.slot(w);
        s.sleepers
            .sleep(timeout, || {
                if s.completed.load(Ordering::Relaxed) != seen {
                    Some(true)
                } else {
                    stop().then_some(false)
                }
            })
            .unwrap_or(false)
    }
}
