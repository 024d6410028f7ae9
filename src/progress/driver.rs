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
//! Many polling callers on few CPUs must not make it worse: the scheduler
//! preempts them every few milliseconds, and one preempted while it holds
//! the passes stalls the others. So a caller's pass is short
//! (`CALLER_BUDGET`), callers space the passes that would only poll, and a
//! thread whose calls keep finding nothing to do skips a growing number of
//! them without touching shared state (`poll_backoff`). The other way
//! round, the progress thread naps beside a caller's pass that lasts
//! (`LONG_PASS`): its holder may be off its CPU, and spinning keeps it off.
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

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};

use super::idle::{Idle, Next};
use super::{Budget, Progress};
use crate::transport_state::TransportState;
use crate::wake::BRIEF_NAP;

/// Longest nap while a caller holds the passes: the thread then takes
/// over within this if the callers stop.
const CALLER_NAP: Duration = Duration::from_micros(200);
/// Turns of a spin beside a caller's pass between looks at the clock (a
/// few microseconds: a gap far longer between looks means preemption).
const CALLER_SPINS: u32 = 256;
/// Shortest spacing of callers' passes that only poll (nothing new queued):
/// polling a transfer more often than this finds nothing new.
const MIN_POLL_SPACING_NS: u64 = 1_000;
/// Longest such spacing: `LONG_PASS`. A pass that took longer (wall time)
/// copied bytes or lost its CPU midway; spacing the next ones by that long
/// only leaves finished transfers unseen. Uncapped, a caller preempted
/// for 8 ms inside a pass kept every poll-only pass away for the next
/// 8 ms (tebench, 1 MiB batch 64 on the modeled NIC beside busy loops:
/// batches of 12-22 ms against 2.9 ms).
const MAX_POLL_SPACING_NS: u64 = LONG_PASS.as_nanos() as u64;
/// A caller's pass: a few microseconds of work at most (ops taken from the
/// queue, calls polled), so the scheduler rarely preempts a caller while it
/// holds the passes (ten polling threads on two CPUs are preempted every
/// few milliseconds; a preempted holder stalls every other poller for its
/// time slice: passes of 256 ops took 660 us of wall time on average, at
/// 9 us for the progress thread's). Further passes, by it or others, take
/// the rest.
const CALLER_BUDGET: Budget = Budget { drain: 16, poll: 16 };
/// How many of the progress thread's passes use `CALLER_BUDGET` too after it
/// last saw a caller's pass.
const SHORT_PASSES_AFTER_CALLERS: u32 = 1024;
/// How long a caller polls (each call returns at once) for ops it has
/// outstanding before its calls sleep until one of them completes: about
/// what a sleep and its wake-up cost, so a short wait (one op finishes in
/// about a microsecond) never pays for one.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(20);
/// Longest sleep of one call: the host's loop comes back this often even
/// if nothing completes (its own timeouts, and a pass of its own if the
/// progress thread is stuck).
const CALLER_SLEEP: Duration = Duration::from_micros(200);
/// A pass that another thread has held this long (seen by one waiting
/// thread) is doing long work: copies (the software provider's copy mode
/// copies inside the transfer call, 8 MiB per call of 1 MiB ops) or its
/// holder lost its CPU. A caller spinning beside it only takes CPU from
/// it, so the caller sleeps until one of its ops completes. Passes are a
/// few microseconds otherwise (a full one on the modeled NIC: under 20 us).
/// The progress thread, beside a caller's pass held this long, naps instead
/// of spinning for the same reason.
const LONG_PASS: Duration = Duration::from_micros(50);

/// A pass with a caller's budget (never more than the transport's own);
/// returns whether it moved anything.
fn short_pass(p: &mut Progress) -> bool {
    let full = p.budget;
    p.budget = Budget { drain: CALLER_BUDGET.drain.min(full.drain), ..CALLER_BUDGET };
    let moved = p.pass();
    p.budget = full;
    moved
}

std::thread_local! {
    /// This thread's polling backoff: (transport handle, calls still to
    /// skip, current backoff). See `poll_backoff`.
    static BACKOFF: std::cell::Cell<(usize, u32, u32)> = const { std::cell::Cell::new((0, 0, 0)) };
}

/// Longest backoff, in calls skipped.
const MAX_BACKOFF: u32 = 63;

/// Whether this thread's call of `mcfx_progress` on `handle` may return at
/// once without looking (touching nothing shared): after calls that found
/// nothing to do, a thread skips the next 1, 3, 7, ... 63 calls. Ten
/// threads polling in a loop would otherwise bounce the transport's shared
/// cache lines (the gate, the queue's indices, the lock) between CPUs, and
/// slow down the one that is running the pass.
pub(crate) fn poll_backoff(handle: usize) -> bool {
    // `try_with`: this runs outside the export's guard, so it must not
    // panic, not even on a thread whose thread-locals are being destroyed.
    BACKOFF
        .try_with(|b| {
            let (h, skip, backoff) = b.get();
            if h == handle && skip > 0 {
                b.set((h, skip - 1, backoff));
                return true;
            }
            false
        })
        .unwrap_or(false)
}

std::thread_local! {
    /// The transport (its id) whose passes this thread last asked for with
    /// `mcfx_progress`; 0 for none. See `takes_own_submit`.
    static POLLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether a submit call of `ops` ops on transport `id`, from this thread,
/// will be taken by this thread's own next pass: the thread polls that
/// transport (its last `mcfx_progress` was on it), and a caller's pass
/// takes that many. The submit then need not wake a briefly napping
/// progress thread (`Wake::notify_unless_napping_briefly`); if the thread
/// does not poll after all, the nap's end finds the ops (at most
/// `BRIEF_NAP` later).
pub(crate) fn takes_own_submit(id: u64, ops: usize) -> bool {
    ops <= CALLER_BUDGET.drain && POLLS.try_with(|p| p.get()).ok() == Some(id)
}

/// The submit call `takes_own_submit` named left the progress thread in
/// its nap: this thread's next `mcfx_progress` must look (its polling
/// backoff ends). Only then: with the progress thread awake, a poller
/// that looked at once only contended with it for the passes (quiet,
/// `poll_single_4k`: 1.28 us per op against 0.82).
pub(crate) fn poll_next_call() {
    let _ = BACKOFF.try_with(|b| b.set((b.get().0, 0, 0)));
}

/// Records what this thread's `mcfx_progress` on `handle` did (`worked`:
/// it ran a pass), for `poll_backoff`.
pub(crate) fn poll_result(handle: usize, worked: bool) {
    BACKOFF.with(|b| {
        let (h, _, backoff) = b.get();
        let backoff = if worked || h != handle { 0 } else { (backoff * 2 + 1).min(MAX_BACKOFF) };
        b.set((handle, backoff, backoff));
    })
}

/// A host thread's wait for its own ops on one transport (see
/// `Driver::progress`): from its first call with ops outstanding until the
/// ops it had when it first slept have all completed (or it has none).
#[derive(Clone, Copy, Default)]
struct Episode {
    handle: usize,
    since: Option<Instant>,
    /// When it first slept in this wait: its slot's submitted count then.
    /// Later calls sleep at once until that many have completed.
    slept_at: Option<u64>,
}

std::thread_local! {
    /// The pass this thread last found held: (transport handle, pass
    /// number, when it first found it held). See `LONG_PASS`.
    static HELD: std::cell::Cell<(usize, u64, Option<Instant>)> = const {
        std::cell::Cell::new((0, 0, None))
    };
    static EPISODE: std::cell::Cell<Episode> = const {
        std::cell::Cell::new(Episode { handle: 0, since: None, slept_at: None })
    };
}

/// Whether a call that ran no pass sleeps, given this thread's wait so far
/// (updated), its slot's outstanding and completed counts, the time, and
/// whether the waiting threads outnumber the CPUs (`crowded`: asked for
/// only once the thread would sleep). Waiters that each have a CPU take
/// none from the pass, and a sleep costs a wake-up.
fn should_sleep(
    ep: &mut Episode,
    handle: usize,
    pending: u64,
    done: u64,
    now: Instant,
    crowded: impl FnOnce() -> bool,
) -> bool {
    if pending == 0 || pending > u64::MAX / 2 {
        // Nothing of this thread's outstanding (or a slot shared by a
        // thread that submitted elsewhere: never sleep on a guess).
        *ep = Episode::default();
        return false;
    }
    let over = ep.slept_at.is_some_and(|s| done.wrapping_sub(s) < u64::MAX / 2);
    if ep.handle != handle || ep.since.is_none() || over {
        // A new wait: poll first (a short one never sleeps).
        *ep = Episode { handle, since: Some(now), slept_at: None };
        return false;
    }
    if ep.slept_at.is_some() {
        return crowded();
    }
    let since = ep.since.unwrap_or(now);
    if now.saturating_duration_since(since) < POLL_BEFORE_SLEEP || !crowded() {
        return false;
    }
    ep.slept_at = Some(done.wrapping_add(pending));
    true
}

/// Whether the pass `held` (its number; `None`: this call found the passes
/// free) has been held by another thread for `LONG_PASS` of this thread's
/// calls on `handle` (`last`: what the last call saw, updated; the
/// progress thread's own looks use handle 0).
fn long_pass(
    last: &mut (usize, u64, Option<Instant>),
    handle: usize,
    held: Option<u64>,
    now: Instant,
) -> bool {
    let Some(seq) = held else {
        *last = (handle, 0, None);
        return false;
    };
    match *last {
        (h, s, Some(since)) if h == handle && s == seq => {
            now.saturating_duration_since(since) >= LONG_PASS
        }
        _ => {
            *last = (handle, seq, Some(now));
            false
        }
    }
}

/// How long after a caller's pass of `last_len` ns callers wait before a
/// pass that would only poll.
fn poll_spacing(last_len: u64) -> u64 {
    last_len.clamp(MIN_POLL_SPACING_NS, MAX_POLL_SPACING_NS)
}

/// Whether `waiting` threads crowd `cpus` CPUs: only when they alone
/// outnumber them (the progress thread naps while callers run passes, and
/// other processes' threads do not count; see `Driver::progress`).
fn crowded(waiting: u32, cpus: u32) -> bool {
    waiting > cpus
}

pub(crate) struct Driver {
    progress: Mutex<Progress>,
    /// The last pass left something to look after (see the invariants).
    outstanding: AtomicBool,
    /// Passes run by callers; the progress thread watches it (Relaxed: a
    /// hint for the idle policy, not a synchronization).
    caller_passes: AtomicU64,
    /// When the last caller's pass ended, and how long it took, in ns since
    /// `epoch` (Relaxed hints): see `drive`.
    last_end_ns: AtomicU64,
    last_len_ns: AtomicU64,
    /// Passes begun, by anyone (Relaxed: a hint). A thread that finds the
    /// passes taken reads it to tell a long pass from many short ones
    /// (`LONG_PASS`). Its own line: the pass writes it every time, and
    /// callers read the line beside it on every call.
    passes: CachePadded<AtomicU64>,
    epoch: Instant,
    shared: Arc<TransportState>,
}

impl Driver {
    pub(crate) fn new(progress: Progress) -> Driver {
        let shared = Arc::clone(&progress.shared);
        Driver {
            progress: Mutex::new(progress),
            outstanding: AtomicBool::new(false),
            caller_passes: AtomicU64::new(0),
            last_end_ns: AtomicU64::new(0),
            last_len_ns: AtomicU64::new(0),
            passes: CachePadded::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            shared,
        }
    }

    /// A caller's pass (`mcfx_progress`): runs one if no other thread is
    /// running one, and returns how many ops it completed (their callbacks
    /// ran on this thread, inside this call); `None` when it ran none
    /// (nothing to do yet, or another thread holds the passes). The caller
    /// must have been admitted by the transport's gate (so shutdown has not
    /// begun).
    ///
    /// Callers space passes that would only poll: with nothing new queued,
    /// a pass starts only once at least as long as the last caller's pass
    /// took (and `MIN_POLL_SPACING_NS`) has passed since it ended. Ten
    /// threads polling in a loop would otherwise keep the lock taken all
    /// the time, and a holder preempted by the scheduler (likely, then)
    /// stalls every other poller for its time slice. Spaced, the lock is
    /// free at least half the time, and a thread with nothing to look at
    /// returns after a few loads.
    ///
    /// `Err(Some(n))`: another thread holds the passes, and this is the
    /// number of its pass; `Err(None)`: nothing to do yet.
    fn drive(&self, id: u64) -> Result<u64, Option<u64>> {
        let mut now = None;
        if !self.has_new_work() {
            if !self.outstanding.load(Relaxed) {
                return Err(None);
            }
            let t = self.ns_since_epoch();
            let spacing = poll_spacing(self.last_len_ns.load(Relaxed));
            if t < self.last_end_ns.load(Relaxed).saturating_add(spacing) {
                return Err(None);
            }
            now = Some(t);
        }
        let Some(mut p) = self.begin_pass() else {
            return Err(Some(self.passes.load(Relaxed)));
        };
        let start = now.unwrap_or_else(|| self.ns_since_epoch());
        if self.shared.queue.is_closed() {
            // Shutdown completed everything (or is about to, on the
            // progress thread): nothing is left to drive.
            return Err(None);
        }
        let _here = self.shared.queue.wake().drive_here();
        let _owner = crate::wait_graph::owner_for_now(id);
        let before = p.completions;
        short_pass(&mut p);
        let done = p.completions - before;
        let outstanding = p.has_outstanding();
        // Under the lock: one writer at a time.
        self.caller_passes.store(self.caller_passes.load(Relaxed).wrapping_add(1), Relaxed);
        let end = self.ns_since_epoch();
        self.last_len_ns.store(end.saturating_sub(start), Relaxed);
        self.last_end_ns.store(end, Relaxed);
        drop(p);
        self.set_outstanding(outstanding);
        if outstanding {
            self.shared.queue.wake().notify_parked();
        }
        Ok(done)
    }

    /// Takes the passes if no other thread holds them, and numbers the pass.
    #[inline]
    fn begin_pass(&self) -> Option<MutexGuard<'_, Progress>> {
        let p = self.progress.try_lock()?;
        // Under the lock: one writer at a time.
        self.passes.store(self.passes.load(Relaxed).wrapping_add(1), Relaxed);
        Some(p)
    }

    /// A caller's `mcfx_progress` on transport `handle`: a pass if it may
    /// run one (`drive`); else, once this thread has polled
    /// `POLL_BEFORE_SLEEP` for ops of its own, a sleep until one of them
    /// completes (at most `CALLER_SLEEP`); or at once if another thread has
    /// held the passes for `LONG_PASS`. Returns how many ops the pass
    /// completed, `None` if it ran none.
    pub(crate) fn progress(&self, handle: usize) -> Option<u64> {
        let id = self.shared.id();
        let _ = POLLS.try_with(|p| p.set(id));
        let drove = self.drive(id);
        let held = drove.err().flatten();
        let ran = drove.ok();
        // A pass that completed something: the host has news. Never asleep
        // inside a pass (a callback that polls another transport): the
        // pass's other ops would wait for this one. A pass that completed
        // nothing is still a wait (polls of transfers not done yet).
        if ran.is_some_and(|n| n > 0) || crate::wake::in_any_pass() {
            return ran;
        }
        let queue = &self.shared.queue;
        let w = crate::waiters::my_slot();
        let (pending, seen) = queue.waiters().outstanding(w);
        let sleep = EPISODE
            .try_with(|e| {
                let mut ep = e.get();
                let now = Instant::now();
                // Every waiting call counts this thread as waiting (its
                // polling takes a CPU too), from its first. Crowded: the
                // waiters alone outnumber the CPUs. Not the progress thread:
                // it naps while callers run the passes. Not time the
                // progress thread lost to other processes' threads: a lone
                // waiter that slept beside busy loops waited for a wake-up
                // through a busy CPU (tebench, modeled NIC, 4 KiB: p99 26 to
                // 272 us instead of 5).
                let waiting = if pending > 0 { queue.waiters().waiting_threads(w, now) } else { 0 };
                // A long pass held by another thread: its holder is copying
                // bytes or was preempted; spinning only takes its CPU.
                let long = HELD
                    .try_with(|c| {
                        let mut last = c.get();
                        let long = long_pass(&mut last, handle, held, now);
                        c.set(last);
                        long
                    })
                    .unwrap_or(false);
                let crowded = || long || crowded(waiting, crate::waiters::cpus());
                let sleep = should_sleep(&mut ep, handle, pending, seen, now, crowded);
                e.set(ep);
                sleep
            })
            .unwrap_or(false);
        if sleep {
            queue.waiters().wait(w, seen, CALLER_SLEEP, || queue.stopping());
        }
        ran
    }

    fn ns_since_epoch(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
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
        let mut short_passes = 0u32;
        // The caller's pass this thread last found held (see `long_pass`).
        let mut beside = (0, 0, None);
        while !shared.queue.is_closed() {
            // Nothing outstanding and nothing new: spin on a few loads,
            // without the lock (a thread preempted here blocks no caller).
            if !self.outstanding.load(Relaxed) && !self.has_new_work() {
                if let Next::Sleep { pin, .. } = idle.next(false) {
                    self.sleep(None, pin, &mut idle);
                }
                continue;
            }
            let Some(mut p) = self.begin_pass() else {
                // A caller is running a pass: it does the work.
                let now = Instant::now();
                idle.callers_drive(now);
                // The same pass held for `LONG_PASS`: its caller copies or
                // is off its CPU, maybe preempted by this very thread (a
                // woken thread preempts the one that woke it). Spinning
                // then keeps it off for a whole time slice.
                let held = Some(self.passes.load(Relaxed));
                let long = long_pass(&mut beside, 0, held, now);
                if idle.spin_beside_caller(now) && !long {
                    self.spin_while_callers_drive();
                } else {
                    self.nap_while_callers_drive(&mut idle);
                }
                continue;
            };
            // While callers run passes too, this thread's are as short as
            // theirs: preempted holding a long pass (it shares the CPUs
            // with the spinning callers), it would stall them.
            let moved = if short_passes > 0 {
                short_passes -= 1;
                short_pass(&mut p)
            } else {
                p.pass()
            };
            let inflight = p.has_inflight();
            self.set_outstanding(p.has_outstanding());
            let passes = self.caller_passes.load(Relaxed);
            if passes != seen_caller_passes {
                seen_caller_passes = passes;
                short_passes = SHORT_PASSES_AFTER_CALLERS;
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

    /// Spins (a load per turn) while a caller holds the passes, for at most
    /// `CALLER_SPINS` turns: the loop then looks at the clock again.
    fn spin_while_callers_drive(&self) {
        for _ in 0..CALLER_SPINS {
            if !self.progress.is_locked() {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// A nap (`CALLER_NAP`) while a caller holds the passes. Queued work
    /// does not cut it short unless the passes are free by then: the
    /// caller takes the queue a short pass at a time, so work is queued
    /// for most of a long caller's pass (a copy of many megabytes), and a
    /// nap that returned at once for it spun the thread on the clock and
    /// the lock beside the caller (a third of its CPU time, tebench copy
    /// mode, 1 MiB batch 64, one busy loop per CPU). Submitters still wake
    /// it (`Wake::notify`), but not one that polls and will take its few
    /// ops in its own pass (`Wake::nap_briefly`): woken, the thread would
    /// find the passes held and nap again.
    fn nap_while_callers_drive(&self, policy: &mut Idle) {
        let has_work = || {
            self.shared.queue.is_closed()
                || (!self.progress.is_locked()
                    && (self.has_new_work() || self.outstanding.load(Relaxed)))
        };
        self.park(has_work, Sleep::BriefNap(CALLER_NAP), false, policy);
    }

    /// Sleeps until woken, or for `timeout`; `pin`: pinned to this CPU
    /// while asleep.
    fn sleep(&self, timeout: Option<Duration>, pin: bool, policy: &mut Idle) {
        let shared = &self.shared;
        // A thread that sleeps for good must not miss what a caller's pass
        // left behind (`outstanding`); a timed nap looks at it afterwards.
        // A nap must not look at it first: every timed nap is taken with
        // something outstanding (transfers in flight, an op waiting for a
        // connection, a failure summary due), so a nap that returned for
        // it never slept, and the thread spun a core for as long as a dead
        // peer's connect or a summary's interval lasted.
        let for_good = timeout.is_none();
        let has_work = || {
            self.has_new_work()
                || shared.queue.is_closed()
                || (for_good && self.outstanding.load(Relaxed))
        };
        let sleep = match timeout {
            None => Sleep::ForGood,
            // Lost CPU time lately: the CPUs are shared with other threads,
            // and a wake-up for ops a polling submitter posts itself would
            // cost it its CPU (`Wake::nap_briefly`). Not when the CPUs are
            // free: a woken thread then posts them while the submitter
            // returns (tebench, modeled NIC, quiet, 4 KiB writes one at a
            // time: leaving every such nap alone cost about 0.3 us per op).
            Some(t) if t <= BRIEF_NAP && policy.preempted(Instant::now()) => Sleep::BriefNap(t),
            Some(t) => Sleep::Nap(t),
        };
        self.park(has_work, sleep, pin, policy);
    }

    /// Parks unless `has_work()` after announcing it, until woken or as
    /// `sleep` says; a timed nap that ends far too late tells the idle
    /// policy the CPUs are contended.
    fn park(&self, has_work: impl Fn() -> bool, sleep: Sleep, pin: bool, policy: &mut Idle) {
        let wake = self.shared.queue.wake();
        let started = Instant::now();
        let asked = match sleep {
            Sleep::ForGood => return wake.park(has_work, None, pin),
            Sleep::Nap(t) => {
                wake.park(has_work, Some(t), pin);
                t
            }
            Sleep::BriefNap(t) => {
                wake.nap_briefly(has_work, t, pin);
                t.min(BRIEF_NAP)
            }
        };
        let now = Instant::now();
        policy.napped(asked, now.saturating_duration_since(started), now);
    }
}

/// How the progress thread sleeps (`Driver::park`).
enum Sleep {
    /// Until woken.
    ForGood,
    /// Until woken or for this long.
    Nap(Duration),
    /// As `Nap`, at most `BRIEF_NAP`, and a submitter that will take its
    /// ops in its own pass does not wake it (`Wake::nap_briefly`).
    BriefNap(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: usize = 0x1000;

    /// A wait polls for `POLL_BEFORE_SLEEP`, then sleeps on every call
    /// until the ops it had when it first slept have completed; then the
    /// next wait polls first again.
    #[test]
    fn a_wait_polls_first_then_sleeps_until_its_ops_completed() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut ep = Episode::default();
        // 4 ops outstanding, 10 completed before.
        assert!(!should_sleep(&mut ep, H, 4, 10, at(0), || true), "the first call polls");
        assert!(!should_sleep(&mut ep, H, 4, 10, at(5), || true), "still polling");
        assert!(should_sleep(&mut ep, H, 4, 10, at(25), || true), "waited long enough");
        assert_eq!(ep.slept_at, Some(14));
        // Another op submitted meanwhile: it does not extend this wait.
        assert!(should_sleep(&mut ep, H, 4, 11, at(30), || true), "slept once: sleeps at once");
        assert!(should_sleep(&mut ep, H, 2, 13, at(31), || true));
        // Its 4 ops completed (one newer op outstanding): a new wait.
        assert!(!should_sleep(&mut ep, H, 1, 14, at(32), || true), "a new wait polls first");
        assert_eq!(ep.slept_at, None);
        assert!(should_sleep(&mut ep, H, 1, 14, at(60), || true));
    }

    /// A lone waiter beside busy loops, or as many waiters as CPUs, keeps
    /// polling (a sleep would cost it a wake-up through a busy CPU); one
    /// more than the CPUs sleeps.
    #[test]
    fn only_waiters_that_outnumber_the_cpus_crowd_them() {
        assert!(!crowded(1, 2), "a lone waiter on two CPUs");
        assert!(!crowded(2, 2), "one waiter per CPU");
        assert!(crowded(3, 2));
        assert!(!crowded(1, 1));
        assert!(crowded(2, 1));
    }

    /// A pass another thread holds counts as long once this thread has
    /// found that same pass held for `LONG_PASS`; a new pass, free passes
    /// or another transport start the count over.
    #[test]
    fn a_pass_held_for_long_pass_is_long() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut last = (0, 0, None);
        assert!(!long_pass(&mut last, H, Some(7), at(0)), "first seen");
        assert!(!long_pass(&mut last, H, Some(7), at(49)));
        assert!(long_pass(&mut last, H, Some(7), at(50)), "held 50 us");
        assert!(long_pass(&mut last, H, Some(7), at(400)));
        // Many short passes back to back: never long.
        for (i, us) in (8..20).zip((450..).step_by(10)) {
            assert!(!long_pass(&mut last, H, Some(i), at(us)), "pass {i}");
        }
        assert!(!long_pass(&mut last, H, None, at(700)), "free");
        assert!(!long_pass(&mut last, H, Some(19), at(800)), "free in between: starts over");
        assert!(!long_pass(&mut last, H + 64, Some(19), at(900)), "another transport");
        assert!(long_pass(&mut last, H + 64, Some(19), at(950)));
    }

    /// Calls that found nothing make a thread skip the next ones; a submit
    /// that left the progress thread napping (`poll_next_call`) ends the
    /// skipping, so the thread's next call runs the pass for its ops. Only
    /// a thread polling the transport leaves it napping.
    #[test]
    fn a_submit_left_to_its_own_pass_ends_the_polling_backoff() {
        for _ in 0..3 {
            poll_result(H, false);
        }
        assert!(poll_backoff(H), "skips after calls that found nothing");
        poll_next_call();
        assert!(!poll_backoff(H), "the next call looks");
        let _ = POLLS.try_with(|p| p.set(7));
        assert!(takes_own_submit(7, CALLER_BUDGET.drain));
        assert!(!takes_own_submit(7, CALLER_BUDGET.drain + 1), "more than its pass takes");
        assert!(!takes_own_submit(8, 1), "polls another transport");
    }

    /// Callers space poll-only passes by the last caller's pass, but never
    /// by more than `LONG_PASS`: a pass that long was preempted or copied.
    #[test]
    fn poll_spacing_follows_the_last_pass_up_to_long_pass() {
        assert_eq!(poll_spacing(0), MIN_POLL_SPACING_NS);
        assert_eq!(poll_spacing(7_000), 7_000);
        assert_eq!(poll_spacing(8_000_000), LONG_PASS.as_nanos() as u64, "preempted for 8 ms");
    }

    #[test]
    fn nothing_outstanding_or_another_transport_starts_over() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut ep = Episode::default();
        assert!(!should_sleep(&mut ep, H, 3, 0, at(0), || true));
        assert!(should_sleep(&mut ep, H, 3, 0, at(100), || true));
        assert!(!should_sleep(&mut ep, H, 0, 3, at(101), || true), "nothing outstanding");
        assert!(ep.since.is_none());
        assert!(!should_sleep(&mut ep, H, 3, 3, at(102), || true));
        assert!(
            !should_sleep(&mut ep, H + 64, 3, 3, at(200), || true),
            "another transport: new wait"
        );
        assert!(!should_sleep(&mut ep, H, 3, 3, at(201), || true), "and back: new wait");
        // A count that ran backwards (a shared slot's other thread): never.
        assert!(!should_sleep(&mut ep, H, u64::MAX, 3, at(900), || true));
    }
}

#[cfg(test)]
mod grouping_tests {
    use super::*;
    use crate::clock::MonoTime;
    use crate::op::{Op, OpRequest, Opcode};
    use crate::peers::connector::{parse_endpoint, ConnectKind, ConnectResult, Connection};
    use flagcx_sys::testing::AlignedBuf;

    const OPS: usize = 64;
    const PAGE: usize = 4096;

    /// Publishes one batch of 64 x 4 KiB writes at once, op i to peer
    /// `1 + i % peers` (every peer connected), runs one caller's pass and
    /// returns (ops it drained, FlagCX calls it made); then runs passes
    /// until every op completed, and checks none failed.
    fn one_callers_pass(peers: u64) -> (usize, u64) {
        let (drained, calls, failed) = batch_with_failing_allocation(peers, None);
        assert_eq!(failed, 0);
        (drained, calls)
    }

    /// `one_callers_pass`, with the `fail_at`-th fallible allocation of
    /// the passes failing (`crate::fallible::fail_after`); returns the
    /// failed ops too, after checking every op completed exactly once.
    fn batch_with_failing_allocation(peers: u64, fail_at: Option<u64>) -> (usize, u64, u64) {
        // Before the state, so dropped after it.
        let mut buf = AlignedBuf::new(2 * OPS * PAGE);
        let shared = crate::transport_state::test_state(crate::Config::default());
        let base = buf.bytes().as_mut_ptr() as usize;
        // SAFETY: `buf` outlives the registry (declared before it).
        unsafe { shared.registry.register(base, 2 * OPS * PAGE) }.unwrap();
        let (host, port) = parse_endpoint(shared.endpoint_for_test()).unwrap();
        let mut p = Progress::new(Arc::clone(&shared)).unwrap();
        for peer in 1..=peers {
            p.peers.know(peer, &shared.connects);
            let conn = shared.engine.engine.connect(&host, 0, port).unwrap();
            let outcome = Ok(Connection::for_test(conn));
            p.apply_connect(ConnectResult { peer, kind: ConnectKind::First, outcome });
            assert!(p.peers.ready(peer).is_some());
        }
        let admission = shared.queue.enter().unwrap();
        let region = shared.registry.view().find(base, OPS * PAGE).unwrap();
        assert!(shared.registry.hold(region, OPS as u64));
        let deadline = MonoTime::exact().plus_ns(shared.deadline_after_ns);
        let (pushed, _) = shared.queue.push_batch(
            &admission,
            OPS,
            Duration::ZERO,
            shared.config.max_in_flight,
            |_| {},
            |i| {
                let req = OpRequest {
                    opcode: Opcode::Write,
                    local: base + i * PAGE,
                    len: PAGE as u64,
                    peer: 1 + i as u64 % peers,
                    remote: (base + (OPS + i) * PAGE) as u64,
                    user_data: i as u64,
                };
                Op::new(req, region.slot(), deadline, crate::waiters::my_slot())
            },
        );
        drop(admission);
        assert_eq!(pushed, OPS);
        crate::fallible::fail_after(fail_at);
        assert!(short_pass(&mut p));
        let after = shared.stats.snapshot();
        let held = p.slots.iter().filter(|s| s.op.is_some()).count();
        let (drained, calls) = (held + after.completed as usize, after.flagcx_transfers);
        let limit = Instant::now() + Duration::from_secs(60);
        while shared.stats.snapshot().done() < OPS as u64 {
            assert!(Instant::now() < limit, "ops did not complete");
            p.pass();
        }
        // Nothing is left to complete a second time.
        assert!(p.slots.iter().all(|s| s.op.is_none()) && p.inflight.is_empty());
        assert!(!p.pass());
        crate::fallible::fail_after(None);
        // The process's FlagCX engine keeps a registration until it is
        // deregistered (a transport's shutdown does it; this state has no
        // transport) and outlives this state while other tests use it: a
        // later buffer at this address would find the base taken.
        shared.registry.clear();
        let s = shared.stats.snapshot();
        assert_eq!(s.done(), OPS as u64, "an op completed twice or never");
        (drained, calls, s.failed)
    }

    /// An allocation that fails while a pass groups its ops (the groups'
    /// first growth, then each later one) fails the op that needed it,
    /// `MCFX_E_NO_MEMORY`, once; the host process stays up and every other
    /// op completes as usual. Before, the groups grew infallibly: such an
    /// allocation failure aborted the host.
    #[test]
    fn an_op_the_groups_find_no_memory_for_fails_and_the_rest_complete() {
        let mut refused = 0;
        for fail_at in 0..12 {
            let (_, _, failed) = batch_with_failing_allocation(16, Some(fail_at));
            assert!(failed <= 1, "one allocation failed, {failed} ops did");
            refused += failed;
        }
        assert!(refused > 0, "no injected failure reached the groups");
        assert_eq!(batch_with_failing_allocation(16, Some(1 << 20)).2, 0);
    }

    /// A caller's pass drains 16 ops; a batch spread over 16 peers must
    /// still go out as one call per peer (the drain widens while its ops
    /// only fill the calls it has), not as one call per op.
    #[test]
    fn a_callers_pass_groups_a_batch_spread_over_many_peers_into_one_call_per_peer() {
        assert_eq!(one_callers_pass(16), (64, 16));
        // 4 peers: the drain stops once its calls are full (8 ops each).
        assert_eq!(one_callers_pass(4), (32, 4));
    }

    /// The widening never makes a caller's pass take more calls than its
    /// budget, nor more ops where its calls are full already.
    #[test]
    fn a_callers_pass_is_not_widened_where_calls_are_full_or_peers_many() {
        // One peer: 16 ops, two full calls.
        assert_eq!(one_callers_pass(1), (16, 2));
        // 64 peers, one op each: the drain stops at the first op that
        // would open a call past the budget.
        assert_eq!(one_callers_pass(64), (17, 17));
    }
}
