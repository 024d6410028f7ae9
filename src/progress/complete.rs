//! Completion: each op's one completion (its region hold, counters, credit
//! and callback), the expiry of ops that wait for a connection, and
//! shutdown, which completes whatever is left.
//!
//! Owns the end of an op's life: `complete` empties its slot and puts the
//! index back on the free list; `deliver` is the one place a completion
//! callback is called.
//!
//! Invariants:
//! - an op completes exactly once: `complete` takes the op out of its slot
//!   (a second call on the slot panics, "op completed twice"), and an op
//!   with no slot completes through `complete_op`, by value;
//! - its region hold is released and it is counted before its callback
//!   runs (the callback may unregister, and whoever has seen the completion
//!   sees it counted); its credit goes back with the pass's others;
//! - a panicking callback is caught and counted; the thread goes on;
//! - after `shut_down` no op is left in a slot, a waiting list, the queue
//!   or a call (in-flight calls get `shutdown_timeout`, then are canceled).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::clock::MonoTime;
use crate::error::Status;
use crate::op::Op;
use crate::registry::RegionSlot;
use crate::stats::Stats;

use super::Progress;

impl Progress {
    /// Delivers the op's one completion and frees its slot.
    pub(super) fn complete(&mut self, idx: u32, status: Status, msg: Option<&str>) {
        // The fields it needs, then the slot is emptied (no move of the op).
        let slot = &mut self.slots[idx as usize];
        let op = slot.op.as_ref().expect("op completed twice");
        let (region, user_data, len, peer) = (op.region, op.user_data, op.len, op.peer);
        let waiter = op.waiter;
        slot.op = None;
        // Never allocates: the free list has room for every slot.
        self.free.push(idx);
        self.deliver(region, user_data, len, peer, waiter, status, msg);
    }

    /// Delivers the one completion of an op that has no slot (it never got
    /// one, or shutdown took it from the queue).
    #[cold]
    #[inline(never)]
    pub(super) fn complete_op(&mut self, op: Op, status: Status, msg: Option<&str>) {
        self.deliver(op.region, op.user_data, op.len, op.peer, op.waiter, status, msg);
    }

    /// An op's completion: its region hold, its counters, its credit, its
    /// callback, and its submitter's waiter slot (woken at the end of the
    /// pass, after the callback ran).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        region: RegionSlot,
        user_data: u64,
        len: u64,
        peer: u64,
        waiter: u8,
        status: Status,
        msg: Option<&str>,
    ) {
        // Released before the callback, so the callback may unregister.
        self.shared.registry.release(region);
        if let Some(msg) = msg {
            let now = self.coarse_now().ns();
            self.failures.failed(now, peer, status, user_data, msg);
        }
        // Counted before the callback, so whoever has seen the completion sees
        // it counted: these stores are sequenced before the callback, the
        // callback hands the completion to a waiting thread through some
        // synchronization of its own (a Release store it Acquires, a mutex, a
        // condvar), and by coherence the reader's load then returns this store
        // or a later one (happens-before carries over to the counter line).
        // Only `callback_panics` depends on the callback's outcome.
        let stats = &self.shared.stats;
        match status {
            Status::MCFX_OK => {
                Stats::bump(&stats.progress.completed, 1);
                Stats::bump(&stats.progress.bytes, len);
            }
            Status::MCFX_E_TIMEOUT => Stats::bump(&stats.progress.timed_out, 1),
            Status::MCFX_E_CANCELED => Stats::bump(&stats.progress.canceled, 1),
            _ => Stats::bump(&stats.progress.failed, 1),
        }
        self.completions += 1;
        // Its credit goes back at the end of the pass (or at once, to a
        // callback below that submits and finds none).
        self.shared.queue.completed(1);
        let on_complete = &self.shared.on_complete;
        let panicked = catch_unwind(AssertUnwindSafe(|| on_complete(user_data, status))).is_err();
        if panicked {
            Stats::bump(&stats.progress.callback_panics, 1);
            tracing::error!(user_data, "completion callback panicked; continuing");
        }
        // After the callback: a waiter woken by the count sees what the
        // callback published.
        self.shared.queue.waiters().completed(waiter, 1);
        self.woken |= 1u64 << (waiter as u32 % 64);
    }

    /// Completes the waiting ops past their deadline or connect timeout.
    /// They are collected in the scratch vector, room for every waiting op
    /// if that can be had, else in rounds of what it holds (at least
    /// `max_batch`, reserved at creation).
    pub(super) fn expire_waiting(&mut self) {
        let connect_timeout = self.shared.config.connect_timeout;
        let (now, coarse) = (self.now(), self.coarse_now());
        let mut expired = std::mem::take(&mut self.scratch);
        let _ = expired.try_reserve(self.peers.waiting());
        loop {
            let slots = &self.slots;
            let full = self.peers.take_late(&mut expired, |idx| {
                let s = &slots[idx as usize];
                let deadline = s.op.as_ref().expect("live slot").deadline;
                coarse >= deadline || now >= s.waiting_since + connect_timeout
            });
            for &idx in &expired {
                let (peer, deadline) = (self.op(idx).peer, self.op(idx).deadline);
                if coarse >= deadline {
                    let msg = "op deadline passed while connecting";
                    self.complete(idx, Status::MCFX_E_TIMEOUT, Some(msg));
                } else {
                    let msg = crate::logging::message(format_args!(
                        "peer {peer}: no connection within the connect timeout ({} ms)",
                        connect_timeout.as_millis()
                    ));
                    self.complete(idx, Status::MCFX_E_CONNECT, Some(&msg));
                }
            }
            expired.clear();
            if !full {
                break;
            }
        }
        self.scratch = expired;
    }

    /// Completes everything: queued and waiting ops never ran (CANCELED);
    /// in-flight ones get until `shutdown_timeout` to finish.
    pub(super) fn shut_down(&mut self) {
        (self.clock, self.coarse) = (None, None);
        // The queue is closed: this drains it for good.
        while let Some(op) = self.shared.queue.pop() {
            self.complete_op(op, Status::MCFX_E_CANCELED, None);
        }
        let mut results = std::mem::take(&mut self.results);
        self.shared.connects.take_results(&mut results);
        drop(results);
        self.cancel_waiting();
        let until = self.now() + self.shared.config.shutdown_timeout;
        while !self.inflight.is_empty() && Instant::now() < until {
            (self.clock, self.coarse) = (None, None);
            if !self.poll_inflight() {
                std::thread::yield_now();
            }
        }
        // The ids are abandoned: FlagCX has no cancel.
        while let Some(members) = self.inflight.abandon_one() {
            for idx in members {
                self.complete(idx, Status::MCFX_E_CANCELED, None);
            }
        }
        // Nothing parks an op for a reconnect once the queue is closed (see
        // `failed_transfer`); this sweep keeps "every op completes" true even
        // if a path is added that does.
        self.cancel_waiting();
        self.inflight.drop_zombies();
        self.failures.finish(MonoTime::coarse().ns());
        self.wake_waiters();
        debug_assert!(self.slots.iter().all(|s| s.op.is_none()), "an op never completed");
    }

    /// Shutdown: completes every op waiting for a connection, CANCELED (or
    /// TRANSFER_FAILED for one whose transfer failed before it waited).
    fn cancel_waiting(&mut self) {
        for idx in self.peers.take_all_waiting() {
            if self.slots[idx as usize].mark.failed_transfer() {
                let msg = "FlagCX reported the transfer failed; shut down before a reconnect";
                self.complete(idx, Status::MCFX_E_TRANSFER_FAILED, Some(msg));
            } else {
                self.complete(idx, Status::MCFX_E_CANCELED, None);
            }
        }
    }
}
