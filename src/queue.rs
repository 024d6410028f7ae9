//! The bounded MPSC submission queue between callers and the progress
//! thread, and the bound on everything the transport holds.
//!
//! Invariants:
//! - capacity is fixed at creation; a push never allocates (`ring::Ring`, a
//!   preallocated ring of slots with per-slot stamps);
//! - a push reserves all the slots it needs with one CAS and publishes them
//!   together, so the progress thread sees a push whole or not at all (a
//!   submit call pushes its ops in chunks, see `Transport::submit`);
//! - only the thread running a progress pass pops (the progress thread, or
//!   a caller in `mcfx_progress`; one at a time, see `progress::driver`);
//! - admission ([`Gate`], the transport's one shutdown flag): a submitter
//!   is admitted only while the gate is open; once `close` returns no op can
//!   be pushed any more and every op that was pushed is visible to the
//!   progress thread (model: `tests/loom_gate.rs`);
//! - in-flight credits ([`Credits`]): an op holds one credit from before it
//!   is pushed until the progress thread completed it, and at most
//!   `max_in_flight` credits are held, so the ops a transport holds (queued,
//!   waiting for a connection, in FlagCX) never exceed `max_in_flight`;
//! - a submitter waits for room (slots or credits) asleep ([`RoomWait`]);
//!   the progress thread never waits for room itself, and wakes the
//!   waiters after every pass that freed some (`release_room`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::error::{fail, message, Status};
use crate::gate::{Admission, Gate};
use crate::op::Op;
use crate::ring::Ring;
use crate::waiters::Waiters;
use crate::wake::{RoomWait, Wake};

/// Which limit stopped a push short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The queue's slots were all taken.
    Queue,
    /// `max_in_flight` ops were held.
    InFlight,
}

/// The bound on the ops a transport holds: one credit per op, taken by the
/// submitter before it pushes the op and given back by the progress thread
/// after the op's completion (in batches: once per pass).
struct Credits {
    /// Credits taken and not given back. Never above `max_in_flight`: only
    /// `reserve`'s CAS raises it, to at most its `max`.
    held: CachePadded<AtomicUsize>,
    /// Completions not yet given back; written by the progress thread only
    /// (plain load and store, no locked instruction per completion).
    unreturned: CachePadded<AtomicUsize>,
}

impl Credits {
    /// Takes up to `n` credits with one CAS; returns how many (0: `max`
    /// are held). `max` is the transport's `max_in_flight`, the same on
    /// every call.
    #[inline]
    fn reserve(&self, n: usize, max: usize) -> usize {
        // Relaxed: a first guess, the CAS below decides; a waiter reads it
        // after `RoomWait`'s fence, which orders it after the progress
        // thread's last give back and fence.
        let mut held = self.held.load(Relaxed);
        loop {
            let take = n.min(max.saturating_sub(held));
            if take == 0 {
                return 0;
            }
            // Relaxed on failure: the value read is only the next guess.
            match self.held.compare_exchange_weak(held, held + take, SeqCst, Relaxed) {
                Ok(_) => return take,
                Err(now) => held = now,
            }
        }
    }

    /// Gives back `n` credits (ops completed, or reserved and not pushed).
    #[inline]
    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, SeqCst);
    }

    /// Progress thread only: `n` more ops completed.
    #[inline]
    fn completed(&self, n: usize) {
        // Relaxed: only the thread running a pass reads or writes it (the
        // pass lock orders successive runners: `progress::driver`).
        let now = self.unreturned.load(Relaxed);
        // Relaxed: as above.
        self.unreturned.store(now + n, Relaxed);
    }

    /// Progress thread only: gives back the credits of the ops completed
    /// since the last call; false when there were none.
    #[inline]
    fn return_completed(&self) -> bool {
        // Relaxed: only the thread running a pass reads or writes it.
        let n = self.unreturned.load(Relaxed);
        if n == 0 {
            return false;
        }
        // Relaxed: as above.
        self.unreturned.store(0, Relaxed);
        self.give_back(n);
        true
    }
}

pub(crate) struct SubmitQueue {
    ops: Ring<Op>,
    credits: Credits,
    wake: Wake,
    /// Submitters waiting for room (`submit_wait`).
    room: RoomWait,
    /// Host threads waiting for their own ops in `mcfx_progress`.
    waiters: Waiters,
    /// Set once `close` began: waiting submitters (and waiters) give up.
    closing: AtomicBool,
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
                message(format_args!("no memory for a queue of {capacity} slots")),
            );
        };
        Ok(SubmitQueue {
            ops,
            credits: Credits {
                held: CachePadded::new(AtomicUsize::new(0)),
                unreturned: CachePadded::new(AtomicUsize::new(0)),
            },
            wake: Wake::new(),
            room: RoomWait::new(),
            waiters: Waiters::new(),
            closing: AtomicBool::new(false),
            gate,
        })
    }

    /// Admits a submitter, or `None` once the queue is closing.
    pub fn enter(&self) -> Option<Admission<'static>> {
        self.gate.enter()
    }

    /// Pushes `make(0)`, ..., `make(n - 1)` in order; returns how many went
    /// in and, when fewer than `n`, which limit stopped it (the queue's
    /// slots, or `max_in_flight` ops held: this queue's and those the
    /// progress thread took from it and has not completed), after waiting
    /// up to `wait` for room while an op waited (`wait` restarts whenever
    /// one fits). `max_in_flight` is the transport's, the same every call.
    /// `reserved(k)` is called for every `k` ops about to be published,
    /// before the progress thread can see them (see `Ring::push_counted`):
    /// the count of accepted ops.
    ///
    /// Hot path: one CAS takes credits, one CAS reserves slots, and they
    /// are published together; no lock, no syscall. Waiting (cold) sleeps
    /// on a condition variable until the progress thread frees room.
    #[inline]
    pub fn push_batch(
        &self,
        _admitted: &Admission<'_>,
        n: usize,
        wait: Duration,
        max_in_flight: usize,
        mut reserved: impl FnMut(usize),
        mut make: impl FnMut(usize) -> Op,
    ) -> (usize, Limit) {
        let (done, limit) = self.try_push(n, max_in_flight, false, &mut reserved, &mut make);
        if done == n {
            return (done, limit);
        }
        self.push_rest(done, limit, n, wait, max_in_flight, &mut reserved, &mut make)
    }

    /// One attempt: takes credits for up to `n` ops, then slots for as many.
    /// `waiting`: called from `RoomWait::wait`'s try, under its lock.
    #[inline]
    fn try_push(
        &self,
        n: usize,
        max_in_flight: usize,
        waiting: bool,
        reserved: &mut impl FnMut(usize),
        make: &mut impl FnMut(usize) -> Op,
    ) -> (usize, Limit) {
        let credits = self.credits.reserve(n, max_in_flight);
        if credits == 0 {
            return (0, Limit::InFlight);
        }
        let pushed = self.ops.push_counted(credits, reserved, make);
        if pushed < credits {
            self.give_back_unused(credits - pushed, waiting);
            return (pushed, Limit::Queue);
        }
        (pushed, Limit::InFlight)
    }

    /// Credits taken for ops the full queue did not take. Another submitter
    /// may have been refused for these and be waiting: it is woken (from a
    /// waiter's try, which holds the room lock, without taking it again).
    /// Cold.
    #[cold]
    #[inline(never)]
    fn give_back_unused(&self, n: usize, waiting: bool) {
        self.credits.give_back(n);
        if waiting {
            self.room.wake_all_from_try();
        } else {
            self.room.wake_waiters();
        }
    }

    /// `push_batch` after its first attempt fell short: on the progress
    /// thread (a completion callback that submits), gives back its own
    /// completed ops' credits and tries once more, never waiting (it would
    /// wait for itself); elsewhere waits for room up to `wait` per op.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn push_rest(
        &self,
        mut done: usize,
        mut limit: Limit,
        n: usize,
        wait: Duration,
        max_in_flight: usize,
        reserved: &mut impl FnMut(usize),
        make: &mut impl FnMut(usize) -> Op,
    ) -> (usize, Limit) {
        let mut take = |done: usize, waiting: bool| {
            let base = done;
            self.try_push(n - base, max_in_flight, waiting, reserved, &mut |j| make(base + j))
        };
        if self.wake.is_consumer() {
            if limit == Limit::InFlight && self.credits.return_completed() {
                self.room.wake_waiters();
                let (more, l) = take(done, false);
                (done, limit) = (done + more, l);
            }
            return (done, limit);
        }
        if wait.is_zero() {
            return (done, limit);
        }
        // The progress thread frees room; make sure it is awake (the
        // submit call may have published earlier chunks without a wake).
        self.wake.notify();
        // `wait` bounds the wait for each op: it restarts whenever one fits.
        while done < n {
            let mut more = 0;
            let woke = self.room.wait(
                || {
                    // SeqCst: see `Gate`; read under the room lock (the
                    // `RoomWait` protocol), after `close` set it.
                    if self.closing.load(SeqCst) {
                        return true;
                    }
                    let (m, l) = take(done, true);
                    (more, limit) = (m, l);
                    m > 0
                },
                wait,
            );
            if more == 0 || !woke {
                break;
            }
            done += more;
            // Published more: the progress thread may have parked after
            // draining the earlier ones.
            self.wake.notify();
        }
        (done, limit)
    }

    /// Progress thread, at the end of a pass: gives back the credits of the
    /// ops completed in it and, if that or `popped` (queue slots freed)
    /// made room, wakes the submitters waiting for it. One load when
    /// nothing was freed; a locked add (if ops completed), a fence and a
    /// load otherwise.
    #[inline]
    pub fn release_room(&self, popped: bool) {
        if self.credits.return_completed() || popped {
            self.room.wake_waiters();
        }
    }

    /// Progress thread only: `n` ops completed (their credits go back at
    /// the end of the pass, `release_room`).
    #[inline]
    pub fn completed(&self, n: usize) {
        self.credits.completed(n);
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

    /// Host threads waiting for their own ops (`crate::waiters`).
    pub fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// `close` began (a waiter stops waiting; read after `Waiters::wait`'s
    /// fence, it pairs with `close`'s store and `wake_all`).
    pub fn stopping(&self) -> bool {
        self.closing.load(SeqCst)
    }

    /// Stops admitting submitters and waits for those inside to leave (see
    /// [`Gate::close`]); submitters waiting for room give up first (their
    /// call returns `MCFX_E_QUEUE_FULL` with the ops it queued), so close
    /// does not wait out their `submit_wait`.
    pub fn close(&self) {
        self.closing.store(true, SeqCst);
        // Under the room lock (`wake_all` takes it): a waiter either sees
        // `closing` in its next try, or is already asleep and is woken.
        self.room.wake_all();
        self.waiters.wake_all();
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
