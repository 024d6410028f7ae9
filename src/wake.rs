//! The sleep/wake protocols: the progress thread's ([`Wake`]) and that of
//! submitters waiting for room ([`RoomWait`]).
//!
//! One consumer (the progress thread) sleeps only after announcing it; many
//! producers wake it only when it announced. Invariant (no lost wake-up):
//!
//! - producer: publish work; `fence(SeqCst)`; load `state`; if `PARKED`,
//!   CAS it to `AWAKE` and unpark the consumer.
//! - consumer: store `PARKED`; `fence(SeqCst)`; re-check for work; sleep
//!   until `state` is no longer `PARKED`.
//!
//! A timed nap announces `NAPPING` instead of `PARKED` (`NAPPING_BRIEFLY`
//! for one the consumer calls brief, `nap_briefly`: at most `BRIEF_NAP`,
//! and taken where its own wake-up would gain nothing): producers of new
//! work wake any of them
//! (`notify`); work that only needs a look before the thread sleeps for
//! good (what a caller's pass left in flight) wakes only `PARKED`
//! (`notify_parked`), so a napping thread is not woken per pass; and a
//! producer that will take its work itself (a submitter that polls with
//! `mcfx_progress`) leaves a brief nap alone
//! (`notify_unless_napping_briefly`). A nap's end is a look like a wake-up's
//! (the consumer's loop checks for work before it sleeps again), so work
//! that woke nobody waits at most the nap's rest.
//!
//! The two fences order each side's write before its read, so either the
//! producer sees `PARKED` (and unparks) or the consumer sees the work (and
//! does not sleep). `Thread::unpark` keeps a token, so an unpark that lands
//! between the consumer's check and its `park` is not lost either. The model
//! in `tests/loom_wake.rs` checks this under every interleaving.
//!
//! The other direction (a submitter waits for the consumer to free room) is
//! the same argument with the roles swapped, plus a lock so the sleeper can
//! block on a condition variable; see [`RoomWait`] and its model in
//! `tests/inflight_loom_room.rs`.

use std::sync::OnceLock;
use std::time::Duration;

use crate::sync::{fence, park_timeout, thread, AtomicU32, Ordering, Sleepers, Thread, MODEL};

// Ordered: `wake_from(upto)` wakes the states from `PARKED` to `upto`.
const AWAKE: u32 = 0;
const PARKED: u32 = 1;
const NAPPING: u32 = 2;
const NAPPING_BRIEFLY: u32 = 3;

/// Longest nap that counts as brief: one that a submitter about to poll
/// leaves asleep (`notify_unless_napping_briefly`). Work left to such a nap
/// is seen this late at worst, if its submitter does not poll after all.
pub const BRIEF_NAP: Duration = Duration::from_micros(200);

std::thread_local! {
    /// The [`Wake`] (its address) of the transport whose pass this thread
    /// is running in its progress thread's place; 0 when none.
    static DRIVING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// This thread is some transport's consumer (progress thread).
    static CONSUMER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on any transport's progress thread, and on a thread running a pass
/// for one: a thread whose sleep would hold up other threads' ops.
pub fn in_any_pass() -> bool {
    CONSUMER.try_with(|c| c.get()).unwrap_or(true)
        || DRIVING.try_with(|d| d.get() != 0).unwrap_or(true)
}

/// While alive, the calling thread runs a pass in a consumer's place; what
/// it marked before comes back on drop (a callback may drive another
/// transport).
pub struct DrivingHere(usize);

impl Drop for DrivingHere {
    fn drop(&mut self) {
        DRIVING.with(|d| d.set(self.0));
    }
}

/// What [`Wake::notify_unless_napping_briefly`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notified {
    /// The consumer was awake (or woke meanwhile): it sees the work.
    Awake,
    /// The consumer slept, and was woken.
    Woken,
    /// The consumer is in a brief nap and was left in it: the producer's
    /// own pass should take the work soon.
    LeftNapping,
}

pub struct Wake {
    state: AtomicU32,
    consumer: OnceLock<Thread>,
}

impl Default for Wake {
    fn default() -> Self {
        Self::new()
    }
}

impl Wake {
    pub fn new() -> Wake {
        Wake { state: AtomicU32::new(AWAKE), consumer: OnceLock::new() }
    }

    /// Names the consumer thread; call once, from it, before it first parks.
    pub fn bind_current(&self) {
        let _ = self.consumer.set(thread::current());
        CONSUMER.with(|c| c.set(true));
        precise_naps();
    }

    /// True on the consumer thread, and on a thread running a pass for it
    /// (`mcfx_progress`): e.g. inside a completion callback, where waiting
    /// for the consumer to free room would wait for the caller itself.
    pub fn is_consumer(&self) -> bool {
        self.is_driven_here()
            || self.consumer.get().is_some_and(|t| t.id() == thread::current().id())
    }

    /// True while the calling thread runs a pass in the consumer's place
    /// (inside [`Wake::drive_here`]'s guard).
    pub fn is_driven_here(&self) -> bool {
        DRIVING.with(|d| d.get() == self as *const Wake as usize)
    }

    /// Marks the calling thread as running a pass in the consumer's place
    /// until the guard drops (a caller's `mcfx_progress`).
    pub fn drive_here(&self) -> DrivingHere {
        DrivingHere(DRIVING.with(|d| d.replace(self as *const Wake as usize)))
    }

    /// The consumer sleeps until woken (not in a timed nap).
    #[cfg(test)]
    pub fn parked_for_test(&self) -> bool {
        self.state.load(Ordering::SeqCst) == PARKED
    }

    /// Producer side, after publishing work. Returns true when it had to
    /// unpark the consumer (a wake-up syscall); false on the fast path.
    ///
    /// Hot path: a fence and a load; no syscall unless the consumer sleeps.
    pub fn notify(&self) -> bool {
        self.wake_from(NAPPING_BRIEFLY)
    }

    /// As [`Wake::notify`], but leaves a thread in a brief nap (at most
    /// [`BRIEF_NAP`]) asleep: for a producer that will take the work itself
    /// (a submitter that polls). Waking the consumer for it costs the
    /// producer a syscall and, beside busy threads, often its CPU: a
    /// consumer woken on the producer's CPU preempts it (tebench on the
    /// modeled NIC beside a busy loop per CPU, 4 KiB single reads: batches
    /// with such a wake-up took 15 us at the median, the others 5 us;
    /// docs/design.md, "A poller's submit leaves a brief nap alone").
    pub fn notify_unless_napping_briefly(&self) -> Notified {
        if self.wake_from(NAPPING) {
            Notified::Woken
        } else if self.state.load(Ordering::Relaxed) == NAPPING_BRIEFLY {
            // A hint: the nap may end any moment.
            Notified::LeftNapping
        } else {
            Notified::Awake
        }
    }

    /// As [`Wake::notify`], but leaves a thread in a timed nap asleep: for
    /// work it only has to look at before it sleeps for good.
    pub fn notify_parked(&self) -> bool {
        self.wake_from(PARKED)
    }

    /// Wakes the consumer if its state is `PARKED` or up to `upto`.
    #[inline]
    fn wake_from(&self, upto: u32) -> bool {
        fence(Ordering::SeqCst);
        // Relaxed: the fence above orders this load after the producer's
        // publication; the CAS below is what synchronizes.
        let state = self.state.load(Ordering::Relaxed);
        if state == AWAKE || state > upto {
            return false;
        }
        if self.state.compare_exchange(state, AWAKE, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            if let Some(t) = self.consumer.get() {
                t.unpark();
            }
            return true;
        }
        false
    }

    /// Consumer side: sleeps unless `has_work()` is true after announcing,
    /// until a producer notifies or `timeout` (if any) passes.
    /// With `pin`, the thread sleeps pinned to its CPU (see
    /// `pin_while_asleep`).
    pub fn park(&self, has_work: impl Fn() -> bool, timeout: Option<Duration>, pin: bool) {
        let announced = if timeout.is_some() { NAPPING } else { PARKED };
        self.sleep(announced, has_work, timeout, pin);
    }

    /// As [`Wake::park`] for a nap of at most [`BRIEF_NAP`] (a longer
    /// `timeout` is cut to it), announced as brief: a submitter that will
    /// take its work itself leaves it asleep
    /// ([`Wake::notify_unless_napping_briefly`]).
    pub fn nap_briefly(&self, has_work: impl Fn() -> bool, timeout: Duration, pin: bool) {
        self.sleep(NAPPING_BRIEFLY, has_work, Some(timeout.min(BRIEF_NAP)), pin);
    }

    fn sleep(
        &self,
        announced: u32,
        has_work: impl Fn() -> bool,
        timeout: Option<Duration>,
        pin: bool,
    ) {
        self.state.store(announced, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_work() {
            self.state.store(AWAKE, Ordering::SeqCst);
            return;
        }
        let pin = if pin { pin_while_asleep() } else { None };
        match timeout {
            None => {
                // Acquire: pairs with the producer's SeqCst CAS.
                while self.state.load(Ordering::Acquire) == PARKED {
                    thread::park();
                }
            }
            Some(t) => {
                park_timeout(t);
            }
        }
        unpin(pin);
        self.state.store(AWAKE, Ordering::SeqCst);
    }
}

/// Submitters waiting for room (queue slots or in-flight credits), and the
/// wake-up the consumer (the progress thread, which frees room by popping
/// ops and completing them) gives them. A waiter sleeps on a condition
/// variable: waiting costs no CPU (it used to spin on `yield_now`, about
/// half a core).
///
/// Invariant (no lost wake-up): the protocol of [`Sleepers`], with the
/// consumer's freed room as the condition (consumer: free room, fence, wake
/// if a waiter counts itself; waiter: count itself, fence, try under the
/// lock before every wait). Checked under loom by
/// `tests/inflight_loom_room.rs`.
pub struct RoomWait {
    /// Submitters inside `wait`.
    sleepers: Sleepers,
}

impl Default for RoomWait {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomWait {
    pub fn new() -> RoomWait {
        RoomWait { sleepers: Sleepers::new() }
    }

    /// Waiter side: calls `try_take` (under the lock: it must not call
    /// `wake_waiters` or `wake_all`, but `wake_all_from_try`) until it returns true,
    /// sleeping between calls until the consumer frees room, or until
    /// `timeout` has passed since the call. Returns what the last
    /// `try_take` returned (false: timed out).
    pub fn wait(&self, mut try_take: impl FnMut() -> bool, timeout: Duration) -> bool {
        self.sleepers.sleep(timeout, || try_take().then_some(())).is_some()
    }

    /// Consumer side, after it freed room: wakes every waiter, if there is
    /// one. Costs a fence and a load when nobody waits.
    #[inline]
    pub fn wake_waiters(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.any() {
            self.sleepers.wake_all();
        }
    }

    /// Wakes every waiter; only from inside a `wait`'s `try_take`, which
    /// runs under the lock (so a waiter either sleeps already and is woken,
    /// or tries after this one and sees what it freed).
    pub fn wake_all_from_try(&self) {
        self.sleepers.wake_all_from_check();
    }

    /// Wakes every waiter unconditionally (a waiter's `try_take` decides
    /// whether to go on waiting; shutdown uses it so waiters give up).
    #[cold]
    pub fn wake_all(&self) {
        self.sleepers.wake_all();
    }
}

/// Makes this thread's timed sleeps end when asked: Linux lets a sleep run
/// up to the thread's timer slack (50 us by default) late, which would turn
/// the progress thread's few-microsecond naps between polls of a running
/// transfer into 50 us overshoots of its completion.
#[cfg(target_os = "linux")]
fn precise_naps() {
    if MODEL {
        return;
    }
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and changes
    // only the calling thread's timer slack; no pointer is involved.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

#[cfg(not(target_os = "linux"))]
fn precise_naps() {}

/// Pins the calling thread to the CPU it runs on, for the time it sleeps;
/// returns the affinity to restore (`None`: nothing was changed).
///
/// Why: on the 2-vCPU KVM guests this was measured on, the scheduler packs a
/// woken thread onto the vCPU of a busy waker rather than the idle one it
/// slept on, so a progress thread woken by a submitter that then spins for
/// its completion waited out the submitter's whole slice (2.8 ms at p90 for
/// ops 2 ms apart, `examples/hotpath --batch 1 --gap-us 2000`). Pinned, it
/// wakes where it slept: p50 58 us (the idle vCPU's wake-up), p90 80 us.
/// Costs three system calls per sleep, which only begins after
/// `spin_grace` (or a nap's worth) of idleness.
#[cfg(target_os = "linux")]
fn pin_while_asleep() -> Option<libc::cpu_set_t> {
    if MODEL {
        return None;
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 || cpu as usize >= 8 * size {
        return None;
    }
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let (mut saved, mut here): (libc::cpu_set_t, libc::cpu_set_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: pid 0 is this thread; `saved` is `size` writable bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut saved) } != 0 {
        return None;
    }
    // SAFETY: `cpu` is below the set's capacity (checked above); then pid 0
    // is this thread and `here` is `size` readable bytes.
    let pinned = unsafe {
        libc::CPU_SET(cpu as usize, &mut here);
        libc::sched_setaffinity(0, size, &here) == 0
    };
    pinned.then_some(saved)
}

/// Gives back the affinity `pin_while_asleep` saved. (If the allowed CPUs
/// changed meanwhile, the kernel intersects; a failure leaves the pin, which
/// the next sleep's save then keeps: harmless, the thread still runs.)
#[cfg(target_os = "linux")]
fn unpin(saved: Option<libc::cpu_set_t>) {
    if let Some(saved) = saved {
        // SAFETY: pid 0 is this thread; `saved` is a whole cpu_set_t.
        let _ =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &saved) };
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_while_asleep() -> Option<()> {
    None
}

#[cfg(not(target_os = "linux"))]
fn unpin(_saved: Option<()>) {}

#[cfg(all(test, not(mcfx_loom)))]
mod tests {
    use super::*;

    /// Whether `notify` wakes a consumer that announced `state`.
    fn wakes(state: u32, notify: fn(&Wake) -> bool) -> bool {
        let w = Wake::new();
        w.state.store(state, Ordering::SeqCst);
        let woke = notify(&w);
        assert_eq!(w.state.load(Ordering::SeqCst) == AWAKE, woke || state == AWAKE);
        woke
    }

    /// New work wakes any sleep; work a pass left in flight only a sleep
    /// for good; a polling submitter's work every sleep but a brief nap.
    #[test]
    fn each_notify_wakes_the_sleeps_it_names() {
        let states = [AWAKE, PARKED, NAPPING, NAPPING_BRIEFLY];
        let woken = |n: fn(&Wake) -> bool| states.map(|s| wakes(s, n));
        assert_eq!(woken(Wake::notify), [false, true, true, true]);
        assert_eq!(woken(Wake::notify_parked), [false, true, false, false]);
        let poller = |w: &Wake| w.notify_unless_napping_briefly() == Notified::Woken;
        assert_eq!(woken(poller), [false, true, true, false]);
        let w = Wake::new();
        w.state.store(NAPPING_BRIEFLY, Ordering::SeqCst);
        assert_eq!(w.notify_unless_napping_briefly(), Notified::LeftNapping);
        w.state.store(AWAKE, Ordering::SeqCst);
        assert_eq!(w.notify_unless_napping_briefly(), Notified::Awake);
    }
}
