//! The progress thread's idle policy: after a pass that moved nothing,
//! spin on, or sleep (a timed nap while something is outstanding, else a
//! park until a submitter wakes it).
//!
//! Spinning is what makes a quiet machine fast: a thread that never leaves
//! its CPU sees the next op within nanoseconds and is not queued behind a
//! busy thread when it would have been woken. Beside other runnable threads
//! it is the opposite: a spinning thread uses up its share of the CPU, so
//! the scheduler puts it behind them for whole time slices (milliseconds)
//! just when an op arrives, while a thread that sleeps and is woken runs at
//! once (the scheduler favours the woken). So the thread spins only while
//! it keeps its CPU:
//!
//! - it looks at the clock as it spins; a gap of `PREEMPTED_GAP` between
//!   two looks means it was taken off its CPU (another thread wanted it, or
//!   the container's CPU quota ran out), and so does a timed nap that ends
//!   that much late. Once such lost time adds up to `LOST_SHARE` of a
//!   `WINDOW` (an odd preemption on a quiet machine does not), it is
//!   *contended* for `CONTENDED_HOLD`: it spins only `CONTENDED_SPIN` after its last work,
//!   then sleeps, and it does not pin itself while asleep (a pinned sleeper
//!   on a busy CPU waits for that CPU);
//! - a caller running passes itself (`mcfx_progress`) counts as the same
//!   evidence: callers that spin for their completions share the CPUs with
//!   this thread, and they do the work while it sleeps;
//! - only gaps while spinning make it *preempted* (for `PREEMPTED_HOLD`):
//!   then, and not merely contended, it naps beside a caller's pass and
//!   while transfers are in flight (`spin_beside_caller`, `look`).
//!
//! Otherwise (quiet) it spins up to `spin_grace` after its last work
//! (longer while transfers are in flight: `INFLIGHT_SPIN`), then sleeps
//! pinned if the config asks (`pin_asleep`). Spinning only while it pays:
//! a stretch that spun the whole grace with nothing arriving halves the
//! next one's grace (down to `CONTENDED_SPIN`), work that arrives while it
//! spins doubles it back, and work that arrives after it fell asleep but
//! within `spin_grace` sets it to twice that wait at once. So ops a few
//! milliseconds apart no longer cost a millisecond of spinning each (a
//! core's worth at 1 000 ops/s), and ops 200 us apart still find it
//! spinning. Measurements: docs/design.md, "Idle
//! policy".
//!
//! Owns [`Idle`], the thread's idle stretch and contention state. Reads no
//! shared state: the driver tells it what happened.

use std::time::{Duration, Instant};

/// How long the thread keeps polling in-flight transfers without sleeping
/// (as a NIC's progress engine does), when quiet: a transfer's end is noticed
/// at once. Longer transfers are polled between naps.
pub(super) const INFLIGHT_SPIN: Duration = Duration::from_millis(1);
/// A gap this long between two looks at the clock while spinning: the
/// thread was off its CPU. Far above what a pass takes (microseconds) and
/// what a quiet machine's kernel work steals (tens of microseconds), and
/// below a scheduler time slice (milliseconds).
const PREEMPTED_GAP: Duration = Duration::from_micros(500);
/// The window lost time is counted in.
const WINDOW: Duration = Duration::from_millis(100);
/// Lost time that makes the thread contended: a twentieth of `WINDOW`.
const LOST_SHARE: u32 = 20;
/// How long one sign of contention keeps the thread in contended mode. Each
/// return to spinning risks one time slice behind a busy thread; a second
/// apart that costs about one late op per second under contention.
const CONTENDED_HOLD: Duration = Duration::from_secs(1);
/// How long lost CPU time makes the thread nap beside callers' passes
/// (`spin_beside_caller`): one `WINDOW`. Short, because the cost of a
/// wrong guess is large either way (a crowded start-up of the host's own
/// threads must not leave a quiet run napping for a second: 490 against
/// 745 ns per op over 65 536 regions), and lasting contention shows again
/// within a window.
const PREEMPTED_HOLD: Duration = WINDOW;
/// How long the thread spins after its last work when contended: enough to
/// catch an op its own callback (or a pipelined submitter) sends at once,
/// short against a time slice.
const CONTENDED_SPIN: Duration = Duration::from_micros(5);
/// Idle spins between looks at the clock when nothing is in flight (a pass
/// is then a few loads; the clock costs more than that).
const SPINS_PER_LOOK: u32 = 64;

/// What the thread does after a pass that moved nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Run another pass.
    Spin,
    /// Sleep: `idle` is how long nothing has moved; `pin` whether to pin
    /// while asleep (quiet and configured).
    Sleep { idle: Duration, pin: bool },
}

/// The idle stretch and the contention state of the progress thread.
pub(super) struct Idle {
    spin_grace: Duration,
    pin_asleep: bool,
    /// Start of the current idle stretch (first look after work).
    since: Option<Instant>,
    /// Idle passes since the last work.
    spins: u32,
    /// The last look at the clock in this idle stretch.
    last_look: Option<Instant>,
    /// Contended until then (see the module comment).
    contended_until: Option<Instant>,
    /// Until then the thread has lost CPU time lately (callers running
    /// passes do not count here): see `spin_beside_caller`.
    preempted_until: Option<Instant>,
    /// Start of the current `WINDOW` and the time lost in it.
    window_start: Option<Instant>,
    lost: Duration,
    /// The grace as it stands: halved by each idle stretch that spun it out
    /// with nothing arriving, doubled back (up to `spin_grace`) by each
    /// one that work ended while spinning.
    grace: Duration,
    /// This idle stretch already went to sleep.
    slept: bool,
}

impl Idle {
    pub(super) fn new(spin_grace: Duration, pin_asleep: bool) -> Idle {
        Idle {
            spin_grace,
            pin_asleep,
            since: None,
            spins: 0,
            last_look: None,
            contended_until: None,
            preempted_until: None,
            window_start: None,
            lost: Duration::ZERO,
            grace: spin_grace,
            slept: false,
        }
    }

    /// A pass moved something: the idle stretch ends. Work that came while
    /// the thread still spun means spinning paid: the grace grows back.
    #[inline]
    pub(super) fn worked(&mut self) {
        if let Some(since) = self.since.take() {
            if !self.slept {
                self.grace = (self.grace * 2).min(self.spin_grace);
            } else {
                self.woke_for_work(Instant::now().saturating_duration_since(since));
            }
        }
        self.slept = false;
        self.spins = 0;
        self.last_look = None;
    }

    /// Work ended a stretch `after` its start, once the thread was asleep:
    /// had it come within `spin_grace`, a longer spin would have caught it,
    /// so the grace grows to twice that at once (ops 200 us apart keep the
    /// thread spinning after one wake-up, whatever halved the grace before).
    #[cold]
    fn woke_for_work(&mut self, after: Duration) {
        if after < self.spin_grace {
            self.grace = self.grace.max(after * 2).min(self.spin_grace);
        }
    }

    /// A caller is running passes (`mcfx_progress`): callers share the
    /// CPUs, and they do the work.
    pub(super) fn callers_drive(&mut self, now: Instant) {
        self.contend(now);
    }

    /// After a timed nap of `asked` that took `took`: a nap that ends far
    /// later than asked waited for a CPU.
    pub(super) fn napped(&mut self, asked: Duration, took: Duration, now: Instant) {
        if took > asked + PREEMPTED_GAP {
            self.lost(took - asked, now);
        }
    }

    /// The thread was off its CPU for `how_long`, up to `now`. Returns
    /// whether that made it contended.
    fn lost(&mut self, how_long: Duration, now: Instant) -> bool {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) > WINDOW {
            (self.window_start, self.lost) = (Some(now), Duration::ZERO);
        }
        self.lost += how_long;
        let contended = self.lost * LOST_SHARE >= WINDOW;
        if contended {
            self.contend(now);
        }
        contended
    }

    /// A look at the clock while spinning (`now`): a gap since the last
    /// look means the thread was off its CPU. That counts as lost time,
    /// and, once it makes the thread contended, as preempted. A nap that
    /// ends late does not say as much: an idle vCPU can be slow to wake.
    fn spin_look(&mut self, now: Instant) {
        let Some(last) = self.last_look.replace(now) else { return };
        let gap = now.saturating_duration_since(last);
        if gap > PREEMPTED_GAP && self.lost(gap, now) {
            self.preempted_until = now.checked_add(PREEMPTED_HOLD);
        }
    }

    /// A caller holds the passes (at `now`): whether the thread waits for
    /// them spinning (true) or in a nap. Spinning takes over the moment
    /// the caller's pass ends, so submitting and progress run on two
    /// threads while each has a CPU (one thread sending 64-op batches over
    /// 65 536 regions: 490 ns per op spinning, 745 napping). Once the
    /// thread loses CPU time (other processes' busy threads, a quota) it
    /// naps: spinning would take CPU from the caller doing the work.
    /// Spinning here looks at the clock each turn, as idle spinning does.
    pub(super) fn spin_beside_caller(&mut self, now: Instant) -> bool {
        self.spin_look(now);
        !self.preempted(now)
    }

    /// Whether the thread lost CPU time while spinning lately (`now`).
    pub(super) fn preempted(&self, now: Instant) -> bool {
        self.preempted_until.is_some_and(|until| now < until)
    }

    fn contend(&mut self, now: Instant) {
        self.contended_until = now.checked_add(CONTENDED_HOLD);
    }

    /// Whether the thread is contended at `now`.
    pub(super) fn contended(&self, now: Instant) -> bool {
        self.contended_until.is_some_and(|until| now < until)
    }

    /// After a pass that moved nothing; `inflight`: transfers are in
    /// flight (each pass then polls them, so the clock is looked at every
    /// pass instead of every `SPINS_PER_LOOK`).
    #[inline]
    pub(super) fn next(&mut self, inflight: bool) -> Next {
        self.spins = self.spins.wrapping_add(1);
        if !inflight && self.spins % SPINS_PER_LOOK != 0 {
            // The first spins skip the pause hint (tens of cycles each): in
            // a request/response rhythm the next op usually arrives within
            // a microsecond.
            if self.spins > 1024 {
                std::hint::spin_loop();
            }
            return Next::Spin;
        }
        self.look(Instant::now(), inflight)
    }

    /// The decision at a look at the clock (`now`).
    fn look(&mut self, now: Instant, inflight: bool) -> Next {
        self.spin_look(now);
        let since = *self.since.get_or_insert(now);
        let idle = now.saturating_duration_since(since);
        let contended = self.contended(now);
        let grace = if contended { CONTENDED_SPIN } else { self.grace };
        // Transfers in flight: spun for unless the thread lost CPU time
        // lately. Callers running passes alone do not cut it short: a
        // polling caller skips calls that find nothing to do (its backoff),
        // so with the thread napping, tebench's 1 MiB writes on the modeled
        // NIC were noticed 10 us late (55.5 against 45.5 us per op).
        let inflight_spin = if self.preempted(now) { CONTENDED_SPIN } else { INFLIGHT_SPIN };
        if idle < grace || (inflight && idle < inflight_spin) {
            return Next::Spin;
        }
        if !self.slept && !inflight {
            // Spun the whole grace for nothing: spin less next time (the
            // op that ends this sleep needs a wake-up either way).
            self.grace = (self.grace / 2).max(CONTENDED_SPIN.min(self.spin_grace));
            self.slept = true;
        }
        // A sleep ends this look's stretch of spinning: the time asleep is
        // no gap.
        self.last_look = None;
        Next::Sleep { idle, pin: self.pin_asleep && !contended }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, us: u64) -> Instant {
        base + Duration::from_micros(us)
    }

    /// Beside a caller's pass it spins, until a gap between two looks
    /// shows it lost its CPU: then it naps for a `PREEMPTED_HOLD`, and
    /// spins again after it.
    #[test]
    fn beside_a_caller_it_spins_until_it_loses_its_cpu_then_naps_a_while() {
        let mut idle = Idle::new(Duration::from_millis(1), true);
        let t = Instant::now();
        assert!(idle.spin_beside_caller(at(t, 0)));
        assert!(idle.spin_beside_caller(at(t, 20)));
        assert!(!idle.spin_beside_caller(at(t, 6020)), "off its CPU for 6 ms");
        assert!(!idle.spin_beside_caller(at(t, 6030)));
        idle.worked();
        assert!(!idle.spin_beside_caller(at(t, 100_000)), "within the hold");
        idle.worked();
        assert!(idle.spin_beside_caller(at(t, 106_100)), "the hold is over");
    }

    /// Transfers in flight keep the thread spinning `INFLIGHT_SPIN` while
    /// callers run passes beside it (their polling backs off), and only
    /// `CONTENDED_SPIN` once it lost CPU time while spinning.
    #[test]
    fn in_flight_it_spins_beside_callers_and_naps_once_preempted() {
        let mut idle = Idle::new(Duration::from_millis(1), true);
        let t = Instant::now();
        idle.callers_drive(at(t, 0));
        assert!(idle.contended(at(t, 0)));
        assert_eq!(idle.look(at(t, 0), true), Next::Spin);
        assert_eq!(idle.look(at(t, 400), true), Next::Spin, "callers drive: still spins");
        idle.worked();
        assert!(idle.spin_beside_caller(at(t, 500)));
        assert!(!idle.spin_beside_caller(at(t, 6500)), "off its CPU for 6 ms");
        idle.worked();
        assert_eq!(idle.look(at(t, 6600), true), Next::Spin);
        assert_eq!(
            idle.look(at(t, 6610), true),
            Next::Sleep { idle: Duration::from_micros(10), pin: false },
            "preempted: naps after CONTENDED_SPIN"
        );
    }

    /// A nap that ends late makes the thread contended, but not one that
    /// naps beside callers: an idle vCPU can be slow to wake.
    #[test]
    fn a_late_nap_alone_does_not_stop_it_spinning_beside_a_caller() {
        let mut idle = Idle::new(Duration::from_millis(1), true);
        let t = Instant::now();
        idle.napped(Duration::from_micros(2), Duration::from_millis(6), at(t, 6000));
        assert!(idle.contended(at(t, 6000)));
        assert!(idle.spin_beside_caller(at(t, 6001)));
        // A gap while spinning that is not enough on its own (2 ms) adds to
        // it: 8 ms lost in the window.
        assert!(!idle.spin_beside_caller(at(t, 8100)));
    }

    #[test]
    fn quiet_spins_for_the_grace_then_sleeps_pinned() {
        let mut idle = Idle::new(Duration::from_millis(1), true);
        let t = Instant::now();
        assert_eq!(idle.look(at(t, 0), false), Next::Spin);
        assert_eq!(idle.look(at(t, 400), false), Next::Spin);
        assert_eq!(idle.look(at(t, 800), false), Next::Spin);
        assert_eq!(
            idle.look(at(t, 1100), false),
            Next::Sleep { idle: Duration::from_micros(1100), pin: true }
        );
    }

    #[test]
    fn a_long_gap_while_spinning_makes_it_contended_short_spins_and_no_pin() {
        let mut idle = Idle::new(Duration::from_millis(10), true);
        let t = Instant::now();
        assert_eq!(idle.look(at(t, 0), false), Next::Spin);
        // Off the CPU for 6 ms between two looks.
        assert_eq!(
            idle.look(at(t, 6000), false),
            Next::Sleep { idle: Duration::from_micros(6000), pin: false }
        );
        idle.worked();
        assert_eq!(idle.look(at(t, 6100), false), Next::Spin);
        assert_eq!(
            idle.look(at(t, 6110), false),
            Next::Sleep { idle: Duration::from_micros(10), pin: false }
        );
        assert!(idle.contended(at(t, 6000 + 999_000)));
        // The hold ends: quiet again.
        assert!(!idle.contended(at(t, 6000 + 1_000_001)));
    }

    #[test]
    fn odd_short_gaps_do_not_make_it_contended_but_many_do() {
        let mut idle = Idle::new(Duration::from_millis(10), true);
        let t = Instant::now();
        // One 600 us gap in a window: a quiet machine's kernel work.
        assert_eq!(idle.look(at(t, 0), false), Next::Spin);
        assert_eq!(idle.look(at(t, 600), false), Next::Spin);
        assert!(!idle.contended(at(t, 601)));
        // Nine more within the same 100 ms: 6 ms lost, contended.
        for i in 1..10 {
            idle.look(at(t, 600 + i * 1200), false);
            idle.look(at(t, 600 + i * 1200 + 600), false);
        }
        assert!(idle.contended(at(t, 20_000)));
    }

    #[test]
    fn callers_driving_and_late_naps_count_as_contention() {
        let t = Instant::now();
        let mut idle = Idle::new(Duration::from_millis(1), true);
        idle.callers_drive(t);
        assert!(idle.contended(at(t, 1)));
        let mut idle = Idle::new(Duration::from_millis(1), true);
        idle.napped(Duration::from_micros(100), Duration::from_micros(300), t);
        assert!(!idle.contended(at(t, 1)), "a little late is not contention");
        idle.napped(Duration::from_micros(100), Duration::from_micros(8000), t);
        assert!(idle.contended(at(t, 1)));
    }

    #[test]
    fn a_grace_spun_out_for_nothing_halves_and_work_while_spinning_restores_it() {
        let mut idle = Idle::new(Duration::from_micros(800), true);
        let t = Instant::now();
        let mut at_us = 0;
        // Three stretches that spin the grace out: 800 -> 400 -> 200 -> 100.
        for grace in [800, 400, 200] {
            assert_eq!(idle.look(at(t, at_us), false), Next::Spin);
            assert_eq!(idle.look(at(t, at_us + grace / 2), false), Next::Spin);
            assert!(matches!(idle.look(at(t, at_us + grace + 1), false), Next::Sleep { .. }));
            // Still asleep-worthy on the next look: counted once.
            assert!(matches!(idle.look(at(t, at_us + grace + 2), false), Next::Sleep { .. }));
            idle.worked();
            at_us += 10_000;
        }
        assert_eq!(idle.grace, Duration::from_micros(100));
        // Work arrives while spinning, twice: 100 -> 200 -> 400.
        for _ in 0..2 {
            assert_eq!(idle.look(at(t, at_us), false), Next::Spin);
            assert_eq!(idle.look(at(t, at_us + 50), false), Next::Spin);
            idle.worked();
            at_us += 10_000;
        }
        assert_eq!(idle.grace, Duration::from_micros(400));
        // It never goes above the configured grace, nor below the floor.
        for _ in 0..10 {
            idle.look(at(t, at_us), false);
            idle.worked();
            at_us += 10_000;
        }
        assert_eq!(idle.grace, Duration::from_micros(800));
    }

    #[test]
    fn work_that_a_longer_spin_would_have_caught_restores_the_grace_at_once() {
        let mut idle = Idle::new(Duration::from_micros(1000), true);
        idle.grace = Duration::from_micros(5);
        idle.since = Some(Instant::now());
        idle.slept = true;
        idle.woke_for_work(Duration::from_micros(200));
        assert_eq!(idle.grace, Duration::from_micros(400));
        // Work 2 ms apart: no longer spin would have caught it.
        idle.grace = Duration::from_micros(5);
        idle.woke_for_work(Duration::from_micros(2000));
        assert_eq!(idle.grace, Duration::from_micros(5));
    }

    #[test]
    fn in_flight_transfers_keep_it_spinning_longer_when_quiet() {
        let mut idle = Idle::new(Duration::from_micros(10), true);
        let t = Instant::now();
        assert_eq!(idle.look(at(t, 0), true), Next::Spin);
        assert_eq!(idle.look(at(t, 300), true), Next::Spin);
        assert!(matches!(idle.look(at(t, 1001), true), Next::Sleep { .. }));
    }
}
