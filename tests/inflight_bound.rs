//! `max_in_flight` bounds everything a transport holds (issue 17, item 4):
//! with a peer whose connection never comes, a submit loop gets at most
//! `max_in_flight` ops accepted (queued, waiting for the connection, in
//! FlagCX), the rest are refused with `MCFX_E_QUEUE_FULL`, and every accepted
//! op completes exactly once when the connection fails.

mod common;
mod inflight_common;

use std::time::{Duration, Instant};

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::mcfx_status::*;
use mooncake_flagcx::ffi::*;

use inflight_common::{HeldResolver, OpenOnDrop};

const MAX_IN_FLIGHT: usize = 64;
const BATCH: usize = 8;

/// Ops `first..first + BATCH` (user_data), 64 bytes each, to peer 1.
fn batch(src: &AlignedBuf, first: u64) -> Vec<mcfx_op> {
    (0..BATCH as u64).map(|i| write(src.addr(), 64, 1, 0x10000, first + i)).collect()
}

#[test]
fn a_peer_that_never_connects_holds_at_most_max_in_flight_ops() {
    let resolver = HeldResolver::new();
    let a = Node::with(|c| {
        resolver.install(c);
        c.max_in_flight = MAX_IN_FLIGHT as u32;
        // Smaller than the bound: the progress thread keeps taking ops out
        // of the queue (into the peer's waiting list), as in issue 17.
        c.queue_capacity = 16;
        c.connect_timeout_ms = 600_000;
        c.op_timeout_ms = 3_600_000;
    });
    let _open = OpenOnDrop(&resolver);
    let src = AlignedBuf::new(4096);
    a.register(&src);

    // Until the bound is reached (the queue may be full meanwhile while the
    // progress thread waits for a core): never more than the bound.
    let mut accepted = 0usize;
    let until = Instant::now() + LIMIT;
    while accepted < MAX_IN_FLIGHT {
        assert!(Instant::now() < until, "only {accepted} ops accepted within {LIMIT:?}");
        let (st, n) = a.submit(&batch(&src, accepted as u64));
        assert!(st == OK || st == MCFX_E_QUEUE_FULL, "{st:?}: {}", last_error());
        accepted += n;
        // Nothing can complete (the resolver holds the peer's connect), so
        // the ops accepted are the ops held.
        assert!(accepted <= MAX_IN_FLIGHT, "{accepted} ops accepted, bound {MAX_IN_FLIGHT}");
        let stats = a.stats();
        assert!(stats.in_flight <= MAX_IN_FLIGHT as u64, "in_flight {}", stats.in_flight);
        assert_eq!(stats.submitted, accepted as u64);
        if st != OK {
            std::thread::yield_now();
        }
    }
    // From here on every submit is refused: a bounded count of them.
    for i in 0..2000 {
        let (st, n) = a.submit(&batch(&src, accepted as u64));
        assert_eq!((st, n), (MCFX_E_QUEUE_FULL, 0), "submit {i} past the bound");
        if i == 0 {
            let msg = last_error();
            assert!(msg.contains("max_in_flight"), "{msg}");
        }
    }
    let stats = a.stats();
    assert_eq!(stats.in_flight, MAX_IN_FLIGHT as u64);
    assert_eq!(stats.submitted, MAX_IN_FLIGHT as u64);
    assert!(stats.queue_full >= 2000, "{}", stats.queue_full);
    assert_eq!(a.done.count(), 0, "an op completed while its peer's connect was pending");

    // The connect fails: every accepted op completes once, MCFX_E_CONNECT.
    resolver.open();
    a.done.wait_for(MAX_IN_FLIGHT, LIMIT);
    let by_status = a.done.exactly_once();
    assert_eq!(by_status.get(&MCFX_E_CONNECT), Some(&MAX_IN_FLIGHT), "{by_status:?}");
    wait_until(|| a.stats().in_flight == 0, "in_flight back to 0");

    // The credits came back: the transport accepts ops again.
    let until = Instant::now() + LIMIT;
    loop {
        let (st, n) = a.submit(&batch(&src, 1_000_000));
        if st == OK {
            assert_eq!(n, BATCH);
            break;
        }
        assert_eq!(st, MCFX_E_QUEUE_FULL, "{}", last_error());
        assert!(Instant::now() < until, "no room after every op completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    a.done.wait_for(MAX_IN_FLIGHT + BATCH, LIMIT);
    a.done.exactly_once();
    assert_no_violations();
}

#[test]
fn the_bound_counts_ops_inside_flagcx_and_returns_as_they_complete() {
    // A connected peer: ops go to FlagCX; submitting in a loop while they
    // complete never has more than the bound accepted and not completed.
    let p = Pair::with(4096, |c| {
        c.max_in_flight = MAX_IN_FLIGHT as u32;
        c.queue_capacity = 1024;
    });
    let mut accepted = 0usize;
    let until = Instant::now() + LIMIT;
    let mut full = 0;
    while accepted < 50_000 {
        assert!(Instant::now() < until, "only {accepted} ops accepted within {LIMIT:?}");
        let ops: Vec<mcfx_op> = (0..32).map(|i| p.write(64, (accepted + i) as u64)).collect();
        let (st, n) = p.a.submit(&ops);
        assert!(st == OK || st == MCFX_E_QUEUE_FULL, "{st:?}: {}", last_error());
        accepted += n;
        // Completions counted after `accepted` was: this under-counts the
        // ops held, never over-counts them.
        let held = accepted - p.a.done.count();
        assert!(held <= MAX_IN_FLIGHT, "{held} ops accepted and not completed");
        if st != OK {
            full += 1;
            std::thread::yield_now();
        }
    }
    assert!(full > 0, "the bound was never reached");
    p.a.done.wait_for(accepted, LIMIT);
    let by_status = p.a.done.exactly_once();
    assert_eq!(by_status.get(&OK), Some(&accepted), "{by_status:?}");
    assert_no_violations();
}
