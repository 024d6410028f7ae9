//! A host whose threads are interrupted by signals all the time (a
//! profiler's SIGPROF, an interval timer's SIGALRM; handlers installed
//! without `SA_RESTART`, so blocking system calls return `EINTR`): creates,
//! connects, transfers, waits for room, callers' waits and destroys all go
//! on as without signals. Every op completes exactly once, with `MCFX_OK`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::*;
use mooncake_flagcx::ffi::mcfx_progress;

/// Signals delivered so far.
static DELIVERED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    DELIVERED.fetch_add(1, Relaxed);
}

/// While alive, the process gets SIGALRM every `period` (to whichever
/// thread the kernel picks) and SIGPROF as its threads use CPU, both
/// handled without `SA_RESTART`. Dropped: the timers stop and the default
/// dispositions are back.
struct Interrupted;

impl Interrupted {
    fn every(period: Duration) -> Interrupted {
        for sig in [libc::SIGALRM, libc::SIGPROF] {
            // SAFETY: a zeroed sigaction with a plain handler and no flags
            // (no SA_RESTART) is valid; the handler only touches an atomic.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
            }
        }
        let interval =
            libc::timeval { tv_sec: 0, tv_usec: period.as_micros() as libc::suseconds_t };
        let timer = libc::itimerval { it_interval: interval, it_value: interval };
        for which in [libc::ITIMER_REAL, libc::ITIMER_PROF] {
            // SAFETY: a valid timer and value.
            assert_eq!(unsafe { libc::setitimer(which, &timer, std::ptr::null_mut()) }, 0);
        }
        Interrupted
    }
}

impl Drop for Interrupted {
    fn drop(&mut self) {
        let off = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
            it_value: libc::timeval { tv_sec: 0, tv_usec: 0 },
        };
        for which in [libc::ITIMER_REAL, libc::ITIMER_PROF] {
            // SAFETY: as above; a zero value stops the timer.
            unsafe { libc::setitimer(which, &off, std::ptr::null_mut()) };
        }
        // Signals still pending are handled (counted), not fatal.
    }
}

#[test]
fn signals_without_sa_restart_change_nothing() {
    let _serial = serial();
    let _signals = Interrupted::every(Duration::from_micros(200));
    const PEERS: u64 = 4;
    const ROUNDS: u64 = 2000;
    const BATCH: u64 = 64;
    // Small queue and in-flight bound: submitters wait for room asleep.
    let pair = Pair::with(1 << 20, |c| {
        c.queue_capacity = 128;
        c.max_in_flight = 128;
        c.submit_wait_us = 10_000_000;
    });
    for p in 2..=PEERS {
        pair.a.knows(p, &pair.b);
    }
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let ops: Vec<_> = (0..BATCH)
            .map(|i| {
                let off = (i * 4096) as usize % (1 << 20);
                let peer = 1 + (round * BATCH + i) % PEERS;
                next += 1;
                write(pair.src.addr() + off, 4096, peer, (pair.dst.addr() + off) as u64, next)
            })
            .collect();
        pair.a.submit_ok(&ops);
        // Half the rounds wait as a polling caller does (passes of its own,
        // and sleeps while it waits).
        if round % 2 == 0 {
            while pair.a.stats().completed + pair.a.stats().failed < next {
                // SAFETY: live handle; the completed count is optional.
                unsafe { mcfx_progress(pair.a.t, std::ptr::null_mut()) };
            }
        }
    }
    pair.a.done.wait_for(next as usize, Duration::from_secs(120));
    for ud in 1..=next {
        assert_eq!(pair.a.done.status(ud), OK, "op {ud}");
    }
    // Transports made, connected and destroyed under the signals.
    for i in 0..20u64 {
        let mut n = Node::new();
        n.knows(1, &pair.b);
        let src = flagcx_sys::testing::AlignedBuf::new(4096);
        n.register(&src);
        n.submit_ok(&[write(src.addr(), 4096, 1, pair.dst.addr() as u64, i)]);
        assert_eq!(n.done.wait_one(i, Duration::from_secs(60)), OK, "{}", last_error());
        assert_eq!(n.destroy(), OK);
    }
    let delivered = DELIVERED.load(Relaxed);
    println!("{next} ops, {delivered} signals");
    assert!(delivered > 0, "no signal was delivered");
}
