//! Model check of the region hold / unregister protocol (`src/holds.rs`)
//! under every interleaving loom can produce: an unregister that succeeds
//! never has an op holding the region, and a hold taken concurrently either
//! sees the region closing and backs out or is counted by unregister.
//!
//! Run: `RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test loom_holds` (scripts/test.sh runs every model).
#![cfg(mcfx_loom)]

// The crate as it builds under the cfg (src/models.rs).
use mooncake_flagcx::models as holds;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;

const GEN: u64 = 1;

/// A slot open for registration `GEN`, the number of ops using the region
/// (between a successful hold and its release), and whether unregister
/// succeeded.
struct World {
    holds: holds::Holds,
    using: AtomicUsize,
    unregistered: AtomicBool,
}

fn world() -> Arc<World> {
    let w = World {
        holds: holds::Holds::new(),
        using: AtomicUsize::new(0),
        unregistered: AtomicBool::new(false),
    };
    w.holds.open(GEN, 0);
    Arc::new(w)
}

/// A submitter queuing `n` ops on the region, of which `queued` make it into
/// the queue (the rest are taken back, as a partly full queue does). With
/// `complete`, the queued ops are then used and released on this thread (it
/// plays the progress thread: `release` has one writer); otherwise it
/// returns how many holds the caller must release.
fn submitter(w: &Arc<World>, n: u64, queued: u64, complete: bool) -> loom::thread::JoinHandle<u64> {
    let w = Arc::clone(w);
    loom::thread::spawn(move || {
        if !w.holds.hold(n, GEN) {
            return 0;
        }
        w.holds.unhold(n - queued);
        w.using.fetch_add(1, SeqCst);
        assert!(!w.unregistered.load(SeqCst), "an op holds an unregistered region");
        w.using.fetch_sub(1, SeqCst);
        if !complete {
            return queued;
        }
        for _ in 0..queued {
            w.holds.release();
        }
        0
    })
}

/// Unregister, as the registry does it under its writer lock.
fn unregister(w: &World) -> bool {
    match w.holds.try_close() {
        Ok(()) => {
            assert_eq!(w.using.load(SeqCst), 0, "unregister succeeded while an op used the region");
            w.unregistered.store(true, SeqCst);
            true
        }
        Err(busy) => {
            assert!(busy > 0);
            false
        }
    }
}

#[test]
fn unregister_never_removes_a_held_region() {
    loom::model(|| {
        let w = world();
        let s = submitter(&w, 1, 1, true);
        unregister(&w);
        s.join().unwrap();
    });
}

/// After everything completed (or backed out), an unregister succeeds,
/// unless one already did: no hold is left behind.
fn nothing_left(w: &World) {
    if !w.unregistered.load(SeqCst) {
        assert_eq!(w.holds.try_close(), Ok(()), "holds left behind");
    }
}

#[test]
fn a_batch_partly_taken_back_is_counted_right() {
    loom::model(|| {
        let w = world();
        let s = submitter(&w, 2, 1, true);
        unregister(&w);
        s.join().unwrap();
        nothing_left(&w);
    });
}

#[test]
fn two_submitters_and_an_unregister() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let w = world();
        let (a, b) = (submitter(&w, 1, 1, false), submitter(&w, 2, 2, false));
        unregister(&w);
        // The progress thread completes the queued ops.
        for _ in 0..a.join().unwrap() + b.join().unwrap() {
            w.holds.release();
        }
        nothing_left(&w);
    });
}

#[test]
fn a_hold_from_an_older_registration_backs_out() {
    loom::model(|| {
        let w = world();
        // A submitter whose table is from registration GEN, while the slot
        // is unregistered and given to registration GEN + 1.
        let stale = {
            let w = Arc::clone(&w);
            loom::thread::spawn(move || {
                if w.holds.hold(1, GEN) {
                    // Taken before the slot changed hands: it must have
                    // blocked the unregister.
                    assert!(!w.unregistered.load(SeqCst), "a stale hold succeeded");
                    w.holds.release();
                }
            })
        };
        if unregister(&w) {
            w.holds.open(GEN + 1, 0);
        }
        stale.join().unwrap();
    });
}
