//! The bounded MPSC submission queue between callers and the progress thread.
//!
//! Invariants:
//! - capacity is fixed at creation; a push never allocates (crossbeam's
//!   `ArrayQueue` is a preallocated ring of slots with per-slot stamps);
//! - only the progress thread pops;
//! - admission: a submitter registers itself in `submitters`, then checks
//!   `accepting` (SeqCst both). `close` clears `accepting`, then waits until
//!   `submitters` drains, so once `close` returns no op can be pushed any more
//!   and every op that was pushed is visible to the progress thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::error::{fail, Status};
use crate::op::Op;
use crate::wake::Wake;

pub struct SubmitQueue {
    ops: ArrayQueue<Op>,
    wake: Wake,
    accepting: AtomicBool,
    submitters: AtomicUsize,
}

/// Proof that a submitter was admitted; leaving is automatic on drop.
pub struct Admission<'a> {
    queue: &'a SubmitQueue,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.queue.submitters.fetch_sub(1, SeqCst);
    }
}

impl SubmitQueue {
    /// A queue of `capacity` slots; `MCFX_E_INTERNAL` when the memory for
    /// them cannot be had (the ring itself cannot report a failed
    /// allocation, so the same size is reserved and freed first: the host is
    /// not aborted for a capacity the system cannot give).
    pub fn new(capacity: usize) -> crate::error::Result<SubmitQueue> {
        let mut probe: Vec<Op> = Vec::new();
        if probe.try_reserve_exact(capacity.saturating_mul(2)).is_err() {
            return fail(
                Status::MCFX_E_INTERNAL,
                format!("no memory for a queue of {capacity} slots"),
            );
        }
        drop(probe);
        Ok(SubmitQueue {
            ops: ArrayQueue::new(capacity),
            wake: Wake::new(),
            accepting: AtomicBool::new(true),
            submitters: AtomicUsize::new(0),
        })
    }

    /// Admits a submitter, or `None` once the queue is closing.
    pub fn enter(&self) -> Option<Admission<'_>> {
        self.submitters.fetch_add(1, SeqCst);
        let admission = Admission { queue: self };
        self.accepting.load(SeqCst).then_some(admission)
    }

    /// Pushes one op; gives it back when the queue stays full past `wait`.
    /// Hot path: one CAS-based push; on a full queue, yields until `wait`
    /// ends (zero: fail at once).
    pub fn push(&self, _admitted: &Admission<'_>, op: Op, wait: Duration) -> Result<(), Op> {
        let mut op = match self.ops.push(op) {
            Ok(()) => return Ok(()),
            Err(op) => op,
        };
        // The progress thread drains the queue, so it must never wait for
        // room itself (a completion callback that submits runs on it).
        if wait.is_zero() || self.wake.is_consumer() {
            return Err(op);
        }
        // The progress thread drains the queue; make sure it is awake.
        self.wake.notify();
        let until = Instant::now() + wait;
        loop {
            std::thread::yield_now();
            op = match self.ops.push(op) {
                Ok(()) => return Ok(()),
                Err(op) => op,
            };
            if Instant::now() >= until {
                return Err(op);
            }
        }
    }

    /// Wakes the progress thread if it sleeps; true when it did.
    pub fn notify(&self) -> bool {
        self.wake.notify()
    }

    pub fn pop(&self) -> Option<Op> {
        self.ops.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Stops admitting submitters and waits for those inside to leave.
    pub fn close(&self) {
        self.accepting.store(false, SeqCst);
        while self.submitters.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    pub fn is_closed(&self) -> bool {
        !self.accepting.load(SeqCst)
    }
}
