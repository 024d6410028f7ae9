//! The bounded MPSC submission queue between callers and the progress thread.
//!
//! Invariants:
//! - capacity is fixed at creation; a push never allocates (`ring::Ring`, a
//!   preallocated ring of slots with per-slot stamps);
//! - a push reserves all the slots it needs with one CAS and publishes them
//!   together, so the progress thread sees a push whole or not at all (a
//!   submit call pushes its ops in chunks, see `Transport::submit`);
//! - only the progress thread pops;
//! - admission ([`Gate`], the transport's one shutdown flag): a submitter
//!   is admitted only while the gate is open; once `close` returns no op can
//!   be pushed any more and every op that was pushed is visible to the
//!   progress thread (model: `tests/loom_gate.rs`).

use std::time::{Duration, Instant};

use crate::error::{fail, Status};
use crate::gate::{Admission, Gate};
use crate::op::Op;
use crate::ring::Ring;
use crate::wake::Wake;

pub(crate) struct SubmitQueue {
    ops: Ring<Op>,
    wake: Wake,
    /// The transport's handle slot's gate (`crate::slots`).
    gate: &'static Gate,
}

impl SubmitQueue {
    /// A queue of `capacity` slots; `MCFX_E_INTERNAL` when the memory for
    /// them cannot be had (the host is not aborted for a capacity the system
    /// cannot give).
    pub fn new(capacity: usize, gate: &'static Gate) -> crate::error::Result<SubmitQueue> {
        let Some(ops) = Ring::try_new(capacity) else {
            return fail(
                Status::MCFX_E_INTERNAL,
                format!("no memory for a queue of {capacity} slots"),
            );
        };
        Ok(SubmitQueue { ops, wake: Wake::new(), gate })
    }

    /// Admits a submitter, or `None` once the queue is closing.
    pub fn enter(&self) -> Option<Admission<'static>> {
        self.gate.enter()
    }

    /// Pushes `make(0)`, ..., `make(n - 1)` in order; returns how many went
    /// in (fewer than `n` when the queue stayed full for `wait` while an op
    /// waited for room). Hot path:
    /// one CAS reserves as many slots as are free, and they are published
    /// together; on a full queue, yields until `wait` ends (zero: at once).
    pub fn push_batch(
        &self,
        _admitted: &Admission<'_>,
        n: usize,
        wait: Duration,
        mut make: impl FnMut(usize) -> Op,
    ) -> usize {
        let mut done = self.ops.push_with(n, &mut make);
        // The progress thread drains the queue, so it must never wait for
        // room itself (a completion callback that submits runs on it).
        if done == n || wait.is_zero() || self.wake.is_consumer() {
            return done;
        }
        // The progress thread drains the queue; make sure it is awake.
        self.wake.notify();
        // `wait` bounds the wait for each op: it restarts whenever one fits.
        let mut until = Instant::now() + wait;
        loop {
            std::thread::yield_now();
            let base = done;
            done += self.ops.push_with(n - base, |j| make(base + j));
            if done == n {
                return done;
            }
            let now = Instant::now();
            if done > base {
                // Published more: the progress thread may have parked after
                // draining the earlier ones.
                self.wake.notify();
                until = now + wait;
            } else if now >= until {
                return done;
            }
        }
    }

    /// Wakes the progress thread if it sleeps; true when it did.
    pub fn notify(&self) -> bool {
        self.wake.notify()
    }

    /// Progress thread only.
    pub fn pop(&self) -> Option<Op> {
        self.ops.pop()
    }

    /// Progress thread only: nothing published to pop.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Stops admitting submitters and waits for those inside to leave (see
    /// [`Gate::close`]).
    pub fn close(&self) {
        self.gate.close();
    }

    /// Closing began: submits (and registrations, connects) are refused.
    pub fn is_closing(&self) -> bool {
        self.gate.is_closing()
    }

    /// Closing finished: nothing is pushed any more (the progress thread's
    /// signal to drain for the last time and exit).
    pub fn is_closed(&self) -> bool {
        self.gate.is_closed()
    }
}
