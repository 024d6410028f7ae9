//! Model check of host threads waiting for their own ops
//! (`Waiters` in `src/waiters.rs`) under every interleaving loom can
//! produce: a thread asleep for its ops is woken when one completes, and
//! when shutdown begins.
//!
//! loom's timed wait never times out, so a lost wake-up is a deadlock,
//! which loom reports (and the last test shows the model can fail).
//!
//! Run: `RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test loom_waiters` (scripts/test.sh runs every model).
#![cfg(mcfx_loom)]

// The crate as it builds under the cfg (src/models.rs).
use mooncake_flagcx::models::Waiters;

use std::time::Duration;

use loom::sync::atomic::{AtomicBool, Ordering::Relaxed};
use loom::sync::Arc;

/// The thread running a pass: completes one op of slot `w`, then (if
/// `announce`) wakes the slot's sleepers as a pass ends.
fn completer(waiters: &Arc<Waiters>, w: u8, announce: bool) -> loom::thread::JoinHandle<()> {
    let waiters = Arc::clone(waiters);
    loom::thread::spawn(move || {
        waiters.completed(w, 1);
        if announce {
            waiters.wake(1 << w);
        }
    })
}

#[test]
fn a_sleeper_is_woken_when_its_op_completes() {
    loom::model(|| {
        let waiters = Arc::new(Waiters::with_slots(2));
        waiters.submitted(1, 1);
        let c = completer(&waiters, 1, true);
        assert!(waiters.wait(1, 0, Duration::MAX, || false));
        c.join().unwrap();
    });
}

#[test]
fn two_sleepers_on_one_slot_are_both_woken() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let waiters = Arc::new(Waiters::with_slots(2));
        waiters.submitted(0, 2);
        let c = completer(&waiters, 0, true);
        let other = {
            let waiters = Arc::clone(&waiters);
            loom::thread::spawn(move || assert!(waiters.wait(0, 0, Duration::MAX, || false)))
        };
        assert!(waiters.wait(0, 0, Duration::MAX, || false));
        other.join().unwrap();
        c.join().unwrap();
    });
}

#[test]
fn a_sleeper_gives_up_when_shutdown_begins() {
    loom::model(|| {
        let waiters = Arc::new(Waiters::with_slots(2));
        waiters.submitted(1, 1);
        let closing = Arc::new(AtomicBool::new(false));
        let closer = {
            let (waiters, closing) = (Arc::clone(&waiters), Arc::clone(&closing));
            loom::thread::spawn(move || {
                // What `SubmitQueue::close` does before closing the gate.
                closing.store(true, Relaxed);
                waiters.wake_all();
            })
        };
        assert!(!waiters.wait(1, 0, Duration::MAX, || closing.load(Relaxed)));
        closer.join().unwrap();
    });
}

/// The model can fail: an op completed without the wake leaves its
/// sleeper asleep in some interleaving (loom reports the deadlock).
#[test]
#[should_panic]
fn without_the_wake_a_sleeper_can_sleep_forever() {
    loom::model(|| {
        let waiters = Arc::new(Waiters::with_slots(2));
        waiters.submitted(1, 1);
        let c = completer(&waiters, 1, false);
        assert!(waiters.wait(1, 0, Duration::MAX, || false));
        c.join().unwrap();
    });
}
