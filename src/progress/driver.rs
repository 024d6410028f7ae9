//! Who runs passes: the progress thread's loop, and host threads that wait
//! for completions anyway (`mcfx_progress`), one thread at a time.
//!
//! Owns [`Driver`]: the progress state behind a lock that is only ever
//! tried (a thread that finds it taken leaves: someone is running a pass),
//! the flag that says a pass left work behind, and the progress thread's
//! loop (`run`) with its sleeps (the idle policy is `idle`).
//!
//! Why callers may run passes: a host that polls for its completions (as
//! Mooncake's `getTransferStatus` loops and its Python sync calls do) holds
//! a CPU while it waits. Beside busy threads the progress thread may then
//! wait milliseconds for a CPU of its own, and the callers wait for it. A
//! caller that runs the pass itself turns that waiting into the work, as
//! the C++ design's callers do when they post their own ops.
//!
//! Invariants:
//! - one pass at a time: `Progress` is reached only through `progress`'s
//!   lock, so FlagCX's transfer and status calls of this transport are made
//!   by one thread at a time, and a transfer id is polled by one thread at
//!   a time (the lock hands the state over with acquire/release);
//! - the lock is only tried, never waited for, except at shutdown (once no
//!   caller can be inside: the gate is closed);
//! - no lost work: whoever ends a pass stores whether it left anything
//!   outstanding (in flight, waiting for a connection, zombies, failures
//!   to log) in `outstanding` and, if so, wakes the progress thread when it
//!   sleeps for good (`Wake::notify_parked`); the thread, about to sleep for
//!   good, re-checks the flag after announcing it (the `wake` protocol). So
//!   what a caller's pass leaves behind is looked after even if that caller
//!   never calls again;
//! - a thread running a pass for a caller is marked as the transport's own
//!   (`Wake::drive_here`, `wait_graph::owner_for_now`): a callback on it
//!   that destroys the transport gets `MCFX_E_IN_CALLBACK`, and one that
//!   submits never waits for room only this pass could free.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::idle::{Idle, Next};
use super::Progress;
use crate::transport_state::TransportState;

/// Longest nap while a caller holds the passes: the thread then takes
/// over within this if the callers stop.
const CALLER_NAP: Duration = Duration::from_micros(200);

pub(crate) struct Driver {
    progress: Mutex<Progress>,
    /// The last pass left something to look after (see the invariants).
    outstanding: AtomicBool,
    /// Passes run by callers; the progress thread watches it (Relaxed: a
    /// hint for the idle policy, not a synchronization).
    caller_passes: AtomicU64,
    shared: Arc<TransportState>,
}

impl Driver {
    pub(crate) fn new(progress: Progress) -> Driver {
        let shared = Arc::clone(&progress.shared);
        Driver {
            progress: Mutex::new(progress),
            outstanding: AtomicBool::new(false),
            caller_passes: AtomicU64::new(0),
            shared,
        }
    }

    /// A caller's pass (`mcfx_progress`): runs one if no other thread is
    /// running one, and returns how many ops it completed (their callbacks
    /// ran on this thread, inside this call); 0 when another thread holds
    /// the passes. The caller must have been admitted by the transport's
    /// gate (so shutdown has not begun).
    pub(crate) fn drive(&self) -> u64 {
        let Some(mut p) = self.progress.try_lock() else {
            return 0;
        };
        if self.shared.queue.is_closed() {
            // Shutdown completed everything (or is about to, on the
            // progress thread): nothing is left to drive.
            return 0;
        }
        let _here = self.shared.queue.wake().drive_here();
        let id = self.shared.slot.0.id.load(Relaxed);
        let _owner = crate::wait_graph::owner_for_now(id);
        let before = p.completions;
        p.pass();
        let done = p.completions - before;
        let outstanding = p.has_outstanding();
        // Under the lock: one writer at a time.
        self.caller_passes.store(self.caller_passes.load(Relaxed).wrapping_add(1), Relaxed);
        drop(p);
        self.set_outstanding(outstanding);
        if outstanding {
            self.shared.queue.wake().notify_parked();
        }
        done
    }

    fn set_outstanding(&self, outstanding: bool) {
        // Written only when it changes: callers read this line.
        if self.outstanding.load(Relaxed) != outstanding {
            self.outstanding.store(outstanding, Relaxed);
        }
    }

    /// New work that needs no look inside the progress state.
    #[inline]
    fn has_new_work(&self) -> bool {
        !self.shared.queue.is_empty() || self.shared.connects.has_results()
    }

    /// The progress thread's body; returns after shutdown, once every op
    /// completed.
    pub(crate) fn run(self: Arc<Driver>) {
        let shared = Arc::clone(&self.shared);
        shared.queue.wake().bind_current();
        let mut idle = Idle::new(shared.config.spin_grace, shared.config.pin_asleep);
        let mut seen_caller_passes = 0;
        while !shared.queue.is_closed() {
            // Nothing outstanding and nothing new: spin on a few loads,
            // without the lock (a thread preempted here blocks no caller).
            if !self.outstanding.load(Relaxed) && !self.has_new_work() {
                if let Next::Sleep { pin, .. } = idle.next(false) {
                    self.sleep(None, pin, &mut idle);
                }
                continue;
            }
            let Some(mut p) = self.progress.try_lock() else {
                // A caller is running a pass: it does the work.
                let now = Instant::now();
                idle.callers_drive(now);
                self.sleep(Some(CALLER_NAP), false, &mut idle);
                continue;
            };
            let moved = p.pass();
            let inflight = p.has_inflight();
            self.set_outstanding(p.has_outstanding());
            let passes = self.caller_passes.load(Relaxed);
            if passes != seen_caller_passes {
                seen_caller_passes = passes;
                idle.callers_drive(Instant::now());
            }
            if moved {
                idle.worked();
                continue;
            }
            if let Next::Sleep { idle: for_how_long, pin } = idle.next(inflight) {
                let timeout = p.sleep_timeout(for_how_long);
                drop(p);
                self.sleep(timeout, pin, &mut idle);
            }
        }
        self.progress.lock().shut_down();
    }

    /// Sleeps until woken, or for `timeout`; `pin`: pinned to this CPU
    /// while asleep. A timed nap that ends far too late tells the idle
    /// policy the CPUs are contended.
    fn sleep(&self, timeout: Option<Duration>, pin: bool, policy: &mut Idle) {
        let shared = &self.shared;
        let has_work =
            || self.has_new_work() || shared.queue.is_closed() || self.outstanding.load(Relaxed);
        // A thread that sleeps for good must not miss what a caller's pass
        // left behind (`outstanding`); a timed nap looks at it afterwards.
        let started = timeout.map(|_| Instant::now());
        shared.queue.wake().park(has_work, timeout, pin);
        if let (Some(asked), Some(started)) = (timeout, started) {
            let now = Instant::now();
            policy.napped(asked, now.saturating_duration_since(started), now);
        }
    }
}
