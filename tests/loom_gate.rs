//! Model check of the submission queue's admission protocol (`src/gate.rs`,
//! the transport's one shutdown flag) under every interleaving loom can
//! produce: no op is pushed after `close` returned, and the progress
//! thread's final drain (once it sees the gate closed) finds every op that
//! an admitted submitter pushed.
//!
//! Run: `RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test loom_gate` (scripts/test.sh runs every model).
#![cfg(mcfx_loom)]

// The crate as it builds under the cfg (src/models.rs).
use mooncake_flagcx::models as gate;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use loom::sync::Arc;

/// The state of one model: the gate, the queue reduced to a count of pushed
/// ops (Relaxed on purpose: the gate alone must order the pushes before the
/// closer's and the drainer's reads), and whether `close` returned.
struct World {
    gate: gate::Gate,
    pushed: AtomicUsize,
    closed: AtomicBool,
}

fn world() -> Arc<World> {
    Arc::new(World {
        gate: gate::Gate::new(),
        pushed: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
    })
}

/// A submitter: pushes one op if admitted. An admitted submitter must never
/// see `close` already returned (it would push after the final drain).
fn submitter(w: &Arc<World>) -> loom::thread::JoinHandle<bool> {
    let w = Arc::clone(w);
    loom::thread::spawn(move || {
        let Some(admission) = w.gate.enter() else { return false };
        assert!(!w.closed.load(Relaxed), "admitted after close returned");
        w.pushed.fetch_add(1, Relaxed);
        drop(admission);
        true
    })
}

/// The progress thread: runs until the gate is closed, then drains once for
/// good; returns what that drain saw.
fn drainer(w: &Arc<World>) -> loom::thread::JoinHandle<usize> {
    let w = Arc::clone(w);
    loom::thread::spawn(move || {
        while !w.gate.is_closed() {
            loom::thread::yield_now();
        }
        w.pushed.load(Relaxed)
    })
}

#[test]
fn the_final_drain_finds_every_admitted_op() {
    loom::model(|| {
        let w = world();
        let submitter = submitter(&w);
        let drainer = drainer(&w);
        w.gate.close();
        w.closed.store(true, Relaxed);
        assert!(w.gate.is_closing() && w.gate.is_closed());
        let admitted = submitter.join().unwrap();
        let drained = drainer.join().unwrap();
        assert_eq!(drained, usize::from(admitted), "an admitted op was not drained");
        assert_eq!(w.pushed.load(Relaxed), drained, "an op was pushed after the drain");
    });
}

#[test]
fn two_submitters_and_a_second_close() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let w = world();
        let (a, b) = (submitter(&w), submitter(&w));
        w.gate.close();
        w.closed.store(true, Relaxed);
        // The final drain, by the closer itself once close returned.
        let drained = w.pushed.load(Relaxed);
        // Closing again changes nothing (the state never goes back).
        w.gate.close();
        assert!(w.gate.is_closed());
        let admitted = usize::from(a.join().unwrap()) + usize::from(b.join().unwrap());
        assert_eq!(drained, admitted, "an admitted op was not visible to the final drain");
        assert!(w.gate.enter().is_none(), "admitted after close");
    });
}
