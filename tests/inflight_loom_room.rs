//! Model check of the wait for room (`RoomWait` in `src/wake.rs`) under
//! every interleaving loom can produce: a submitter that waits for room
//! (queue slots or in-flight credits) is never left asleep after the
//! progress thread freed some, nor after shutdown began.
//!
//! loom's timed wait never times out, so a lost wake-up is a deadlock,
//! which loom reports. The room counter is Relaxed on purpose: the
//! protocol's fences and lock alone must make the wake-up reliable.
//!
//! Run: `RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test inflight_loom_room` (scripts/test.sh runs every model).
#![cfg(mcfx_loom)]

// The crate as it builds under the cfg (src/models.rs).
use mooncake_flagcx::models as wake;

use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use loom::sync::Arc;

/// Takes one unit of room if there is one (a submitter's credit CAS).
fn take(room: &AtomicUsize) -> bool {
    let mut n = room.load(Relaxed);
    while n > 0 {
        match room.compare_exchange(n, n - 1, Relaxed, Relaxed) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
    false
}

/// The progress thread: frees `n` units of room, one pass each, announcing
/// each (or, with `announce` false, never: the mutation the model must
/// catch).
fn consumer(
    wait: &Arc<wake::RoomWait>,
    room: &Arc<AtomicUsize>,
    n: usize,
    announce: bool,
) -> loom::thread::JoinHandle<()> {
    let (wait, room) = (Arc::clone(wait), Arc::clone(room));
    loom::thread::spawn(move || {
        for _ in 0..n {
            room.fetch_add(1, Relaxed);
            if announce {
                wait.wake_waiters();
            }
        }
    })
}

#[test]
fn a_waiter_is_woken_when_room_is_freed() {
    loom::model(|| {
        let wait = Arc::new(wake::RoomWait::new());
        let room = Arc::new(AtomicUsize::new(0));
        let c = consumer(&wait, &room, 1, true);
        assert!(wait.wait(|| take(&room), Duration::MAX));
        c.join().unwrap();
    });
}

#[test]
fn two_waiters_are_both_woken() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let wait = Arc::new(wake::RoomWait::new());
        let room = Arc::new(AtomicUsize::new(0));
        let c = consumer(&wait, &room, 2, true);
        let other = {
            let (wait, room) = (Arc::clone(&wait), Arc::clone(&room));
            loom::thread::spawn(move || assert!(wait.wait(|| take(&room), Duration::MAX)))
        };
        assert!(wait.wait(|| take(&room), Duration::MAX));
        other.join().unwrap();
        c.join().unwrap();
    });
}

#[test]
fn a_waiter_gives_up_when_shutdown_begins() {
    loom::model(|| {
        let wait = Arc::new(wake::RoomWait::new());
        let closing = Arc::new(AtomicBool::new(false));
        let closer = {
            let (wait, closing) = (Arc::clone(&wait), Arc::clone(&closing));
            loom::thread::spawn(move || {
                // What `SubmitQueue::close` does before closing the gate.
                closing.store(true, Relaxed);
                wait.wake_all();
            })
        };
        // The waiter's try reports "stop waiting" once closing is seen.
        assert!(wait.wait(|| closing.load(Relaxed), Duration::MAX));
        closer.join().unwrap();
    });
}

/// The model can fail: room freed without the announcement leaves a
/// waiter asleep in some interleaving (loom reports the deadlock).
#[test]
#[should_panic]
fn without_the_announcement_a_waiter_can_sleep_forever() {
    loom::model(|| {
        let wait = Arc::new(wake::RoomWait::new());
        let room = Arc::new(AtomicUsize::new(0));
        let c = consumer(&wait, &room, 1, false);
        assert!(wait.wait(|| take(&room), Duration::MAX));
        c.join().unwrap();
    });
}
