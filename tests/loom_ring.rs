//! Model check of the submission ring (`src/ring.rs`) under every
//! interleaving loom can produce: two producers push batches, one consumer
//! pops; every value arrives exactly once, each producer's in order, and a
//! batch taken with one reservation is seen whole.
//!
//! Run: `RUSTFLAGS="--cfg mcfx_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test loom_ring` (scripts/test.sh runs every model).
#![cfg(mcfx_loom)]

// The crate as it builds under the cfg (src/models.rs).
use mooncake_flagcx::models as ring;

use loom::sync::Arc;

/// Marks an empty pop right after the first value of a batch.
const GAP: u32 = u32::MAX;

/// Pops until `expected` values arrived (yielding while none is published);
/// returns them in pop order, with a `GAP` where a pop right after a batch's
/// first value (seq 0) found nothing.
fn consume(ring: &ring::Ring<u32>, expected: usize) -> Vec<u32> {
    let (mut got, mut values) = (Vec::new(), 0);
    while values < expected {
        match ring.pop() {
            Some(v) => {
                got.push(v);
                values += 1;
            }
            None => {
                if got.last().is_some_and(|&v| v != GAP && v % 100 == 0) {
                    got.push(GAP);
                }
                loom::thread::yield_now();
            }
        }
    }
    got
}

/// Value `seq` of producer `p`.
fn value(p: u32, seq: u32) -> u32 {
    p * 100 + seq
}

#[test]
fn two_producers_batches_arrive_once_in_order_and_whole() {
    loom::model(|| {
        // Room for both batches: each is one reservation.
        let ring = Arc::new(ring::Ring::try_new(4).unwrap());
        let producers: Vec<_> = (1..=2u32)
            .map(|p| {
                let ring = Arc::clone(&ring);
                loom::thread::spawn(move || {
                    assert_eq!(ring.push_with(2, |j| value(p, j as u32)), 2);
                })
            })
            .collect();
        let got = consume(&ring, 4);
        for t in producers {
            t.join().unwrap();
        }
        for p in 1..=2u32 {
            let at = got.iter().position(|&v| v == value(p, 0)).expect("first value lost");
            // Published first-slot-last: the second value follows at once.
            assert_eq!(got.get(at + 1), Some(&value(p, 1)), "batch of {p} split: {got:?}");
        }
        assert!(ring.pop().is_none());
    });
}

#[test]
fn a_full_ring_refuses_and_takes_again_after_pops() {
    loom::model(|| {
        let ring = Arc::new(ring::Ring::try_new(2).unwrap());
        let producer = {
            let ring = Arc::clone(&ring);
            loom::thread::spawn(move || {
                let mut sent = 0u32;
                // Three values through two slots: the last must wait for a
                // pop. Bounded: loom explores every schedule of the retries.
                while sent < 3 {
                    let base = sent;
                    sent += ring.push_with((3 - sent) as usize, |j| base + j as u32) as u32;
                    if sent < 3 {
                        loom::thread::yield_now();
                    }
                }
            })
        };
        let got: Vec<u32> = consume(&ring, 3).into_iter().filter(|&v| v != GAP).collect();
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}
