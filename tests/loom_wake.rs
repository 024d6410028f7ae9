//! Model check of the progress thread's sleep/wake protocol (`src/wake.rs`)
//! under every interleaving loom can produce: a producer's work is never
//! left behind a sleeping consumer.
//!
//! Run: `RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test loom_wake` (scripts/test.sh runs every model).
#![cfg(mcfx_loom)]

// The crate as it builds under the cfg (src/models.rs).
use mooncake_flagcx::models as wake;

use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use loom::sync::Arc;

/// The consumer loop of the progress thread, reduced to its protocol: take
/// work if there is some, otherwise park announcing it. `work` is Relaxed on
/// purpose: the protocol's fences alone must make the wake-up reliable.
fn consume(wake: &wake::Wake, work: &AtomicUsize, expected: usize) {
    let mut taken = 0;
    while taken < expected {
        let available = work.load(Relaxed);
        if available > taken {
            taken = available;
            continue;
        }
        wake.park(|| work.load(Relaxed) > taken, None, false);
    }
}

/// A wake bound to this (the consumer's) thread, and its work counter.
fn bound_wake() -> (Arc<wake::Wake>, Arc<AtomicUsize>) {
    let wake = Arc::new(wake::Wake::new());
    let work = Arc::new(AtomicUsize::new(0));
    wake.bind_current();
    (wake, work)
}

/// A thread that adds one unit of work, then notifies.
fn producer(wake: &Arc<wake::Wake>, work: &Arc<AtomicUsize>) -> loom::thread::JoinHandle<()> {
    let (w, k) = (Arc::clone(wake), Arc::clone(work));
    loom::thread::spawn(move || {
        k.fetch_add(1, Relaxed);
        w.notify();
    })
}

#[test]
fn one_producer_never_loses_a_wake_up() {
    loom::model(|| {
        let (wake, work) = bound_wake();
        let producer = producer(&wake, &work);
        consume(&wake, &work, 1);
        producer.join().unwrap();
    });
}

#[test]
fn two_producers_never_lose_a_wake_up() {
    // Bounded preemptions keep the state space tractable (loom's documented
    // practice); 3 covers every ordering of the two notify paths.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let (wake, work) = bound_wake();
        let producers: Vec<_> = (0..2).map(|_| producer(&wake, &work)).collect();
        consume(&wake, &work, 2);
        for p in producers {
            p.join().unwrap();
        }
    });
}

#[test]
fn a_consumer_that_rechecks_after_a_timed_nap_also_sees_the_work() {
    loom::model(|| {
        let (wake, work) = bound_wake();
        let producer = producer(&wake, &work);
        while work.load(Relaxed) == 0 {
            wake.park(|| work.load(Relaxed) > 0, Some(std::time::Duration::from_micros(1)), false);
            loom::thread::yield_now();
        }
        producer.join().unwrap();
    });
}

/// A producer that adds one unit of work and notifies with `notify`,
/// beside a consumer that takes one nap first (`nap`, which that notify
/// may leave alone) and then sleeps for good until it sees the work.
fn nap_then_park(notify: fn(&wake::Wake), nap: fn(&wake::Wake, &dyn Fn() -> bool)) {
    loom::model(move || {
        let (wake, work) = bound_wake();
        let (w, k) = (Arc::clone(&wake), Arc::clone(&work));
        let producer = loom::thread::spawn(move || {
            k.fetch_add(1, Relaxed);
            notify(&w);
        });
        if work.load(Relaxed) == 0 {
            nap(&wake, &|| work.load(Relaxed) > 0);
        }
        consume(&wake, &work, 1);
        producer.join().unwrap();
    });
}

/// A caller's pass leaves work outstanding and wakes the consumer only if
/// it sleeps for good (`notify_parked`); a consumer that naps first and
/// then parks for good still sees the work (the driver's "no lost work").
#[test]
fn work_left_by_a_callers_pass_is_never_missed_by_a_napping_then_parking_consumer() {
    nap_then_park(
        |w| {
            w.notify_parked();
        },
        |w, has_work| w.park(has_work, Some(std::time::Duration::from_micros(1)), false),
    );
}

/// A submitter that will take its work in its own pass leaves a brief nap
/// alone (`notify_unless_napping_briefly`), never a sleep for good: a
/// consumer that naps briefly, then parks, still sees the work.
#[test]
fn a_pollers_work_is_never_missed_by_a_briefly_napping_then_parking_consumer() {
    nap_then_park(
        |w| {
            w.notify_unless_napping_briefly();
        },
        |w, has_work| w.nap_briefly(has_work, wake::BRIEF_NAP, false),
    );
}
