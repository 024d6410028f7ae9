//! Every counter of `mcfx_stats` only grows (issue 17, item 9): a reader
//! polling the counters while submitters keep hitting a full queue never
//! sees one go down (`submitted` used to be counted before the push and
//! taken back for the ops a full queue refused).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Instant;

use common::*;
use mooncake_flagcx::ffi::mcfx_status::*;
use mooncake_flagcx::ffi::*;

/// The counters of a snapshot, in `mcfx_stats` order (`in_flight`, a
/// difference, is not one).
fn counters(s: &mcfx_stats) -> [(&'static str, u64); 13] {
    [
        ("submitted", s.submitted),
        ("completed", s.completed),
        ("failed", s.failed),
        ("timed_out", s.timed_out),
        ("canceled", s.canceled),
        ("bytes", s.bytes),
        ("queue_full", s.queue_full),
        ("wakeups", s.wakeups),
        ("connects", s.connects),
        ("connect_failures", s.connect_failures),
        ("reconnects", s.reconnects),
        ("flagcx_transfers", s.flagcx_transfers),
        ("callback_panics", s.callback_panics),
    ]
}

#[test]
fn no_counter_ever_goes_down_while_submits_hit_a_full_queue() {
    // A queue of 8 and batches of 16: nearly every submit is refused in
    // part, with ops completing all the while.
    let p = Pair::with(64 * 16, |c| c.queue_capacity = 8);
    let stop = AtomicBool::new(false);
    let accepted = AtomicUsize::new(0);
    let p = &p;
    let (reads, decreases) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut reads, mut decreases) = (0u64, Vec::new());
            let mut last = p.a.stats();
            while !stop.load(SeqCst) {
                let now = p.a.stats();
                for ((name, before), (_, after)) in counters(&last).into_iter().zip(counters(&now))
                {
                    if after < before && decreases.len() < 10 {
                        decreases.push(format!("{name}: {before} -> {after}"));
                    }
                }
                assert!(now.in_flight <= now.submitted, "{now:?}");
                last = now;
                reads += 1;
            }
            (reads, decreases)
        });
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let (stop, accepted) = (&stop, &accepted);
                s.spawn(move || {
                    let until = Instant::now() + LIMIT;
                    let mut refused = 0u32;
                    for b in 0..u64::MAX {
                        if refused >= 3000 || Instant::now() >= until || stop.load(SeqCst) {
                            break;
                        }
                        let ops: Vec<mcfx_op> = (0..16u64)
                            .map(|i| {
                                let ud = w << 48 | b << 8 | i;
                                write(
                                    p.src.addr() + i as usize * 64,
                                    64,
                                    1,
                                    p.dst.addr() as u64,
                                    ud,
                                )
                            })
                            .collect();
                        let (st, n) = p.a.submit(&ops);
                        accepted.fetch_add(n, SeqCst);
                        match st {
                            OK => {}
                            MCFX_E_QUEUE_FULL => {
                                refused += 1;
                                std::thread::yield_now();
                            }
                            other => panic!("{other:?}: {}", last_error()),
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, SeqCst);
        assert!(refused > 0, "no submit was refused: the test did not test anything");
        reader.join().unwrap()
    });
    assert!(decreases.is_empty(), "in {reads} reads: {decreases:?}");
    let accepted = accepted.load(SeqCst);
    p.a.done.wait_for(accepted, LIMIT);
    p.a.done.exactly_once();
    let s = p.a.stats();
    assert_eq!(s.submitted, accepted as u64, "submitted counts the accepted ops");
    assert_eq!(s.completed, accepted as u64);
    assert!(s.queue_full > 0);
}
