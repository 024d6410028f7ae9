//! What a registration costs with 100 000 regions registered: about what it
//! costs with none (the table copies one path of a tree per call, not the
//! table). Alone in its own test binary, so no other test shares the
//! process-wide FlagCX registry with it. Costs are the calling thread's CPU
//! time, not wall time: on a busy machine the thread waits for a core in
//! bursts (a block of the last ten took five times the first ones' wall
//! time under scripts/stress_tests.sh), which says nothing about the table.

mod common;

use std::ffi::c_void;
use std::time::{Duration, Instant};

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

fn register(n: &Node, addr: usize, len: usize) -> mcfx_status {
    // SAFETY: live handle; the buffer outlives the node.
    unsafe { mcfx_register(n.t, addr as *mut c_void, len) }
}

fn unregister(n: &Node, addr: usize) -> mcfx_status {
    // SAFETY: live handle.
    unsafe { mcfx_unregister(n.t, addr as *mut c_void) }
}

/// The least CPU time (this thread's) a block of 1000 calls took among the
/// first and among the last ten blocks, and the total wall time. The least:
/// what a block costs when nothing else ran on its core in between (another
/// process's time slices leave caches and TLB cold, which costs the bigger
/// table more and comes in bursts on a busy machine); a table whose calls
/// cost more as it grows costs more in every block.
fn timed(n: usize, mut call: impl FnMut(usize)) -> (Duration, Duration, Duration) {
    let start = Instant::now();
    let mut blocks = Vec::with_capacity(n / 1000);
    for b in 0..n / 1000 {
        let t = thread_cpu_time();
        for i in b * 1000..(b + 1) * 1000 {
            call(i);
        }
        blocks.push(thread_cpu_time() - t);
    }
    let total = start.elapsed();
    let least = |b: &[Duration]| b.iter().min().copied().unwrap();
    (least(&blocks[..10]), least(&blocks[blocks.len() - 10..]), total)
}

#[test]
fn a_hundred_thousand_registrations_cost_about_the_same_per_region_first_and_last() {
    const N: usize = 100_000;
    let t = Node::with(|c| {
        c.max_regions = 2 * N as u32;
        c.flags |= MCFX_FLAG_NO_SERVE;
    });
    let mem = AlignedBuf::new(N * 64);
    let at = |i: usize| mem.addr() + i * 64;
    // Adjacent regions, registered in a scattered order (a stride coprime
    // to N), so inserts land all over the table.
    let order = |i: usize| (i * 7919) % N;
    let (first, last, total) = timed(N, |i| {
        assert_eq!(register(&t, at(order(i)), 64), OK, "registration {i}: {}", last_error());
    });
    eprintln!(
        "register {N}: {total:?}; CPU per 1000, least: first 10 000 {first:?}, last 10 000 {last:?}"
    );
    assert!(last < first * 4, "the last registrations cost {last:?} per 1000, the first {first:?}");
    let (ufirst, ulast, utotal) = timed(N, |i| {
        assert_eq!(unregister(&t, at(order(i))), OK, "unregistration {i}: {}", last_error());
    });
    eprintln!("unregister {N}: {utotal:?}; CPU per 1000, least: first {ufirst:?}, last {ulast:?}");
    assert!(
        ufirst < ulast * 4,
        "the first unregistrations cost {ufirst:?} per 1000, the last {ulast:?}"
    );
}
