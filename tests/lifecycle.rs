//! Create/destroy: exactly one completion per accepted op, no callback after
//! destroy returns, submits during destroy refused, nothing left running.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flagcx_sys::sw;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;
use mooncake_flagcx::{Config, OpRequest, Opcode, Transport};

use mcfx_status::*;

/// A transport driven through the Rust API (a C handle must not be touched
/// once mcfx_destroy returned, so only the Rust API can race shutdown), with
/// peer 1 = `b` and a 4 KiB buffer registered on each side. Fields drop in
/// order: transports before the buffers they registered.
struct RustSide {
    t: Transport,
    _b: Node,
    done: Arc<Completions>,
    src: AlignedBuf,
    dst: AlignedBuf,
}

impl RustSide {
    fn new(config: Config) -> RustSide {
        let done = Arc::new(Completions::default());
        let dir = Arc::new(Directory::default());
        let b = Node::new();
        dir.insert(1, &b.endpoint);
        let d = Arc::clone(&done);
        let t = Transport::create(
            config,
            Box::new(move |ud, st| d.record_status(ud, st)),
            Box::new(move |peer| dir.lookup(peer).ok_or_else(|| "unknown".into())),
        )
        .unwrap();
        let src = AlignedBuf::new(4096);
        let dst = AlignedBuf::new(4096);
        // SAFETY: both buffers outlive the transports (field order).
        unsafe { t.register(src.addr(), 4096) }.unwrap();
        b.register(&dst);
        RustSide { t, _b: b, done, src, dst }
    }
}

#[test]
fn destroy_with_ops_in_flight_completes_each_exactly_once() {
    let _g = serial();
    let mut p = Pair::with(1 << 20, |c| {
        c.queue_capacity = 65536;
        c.shutdown_timeout_ms = 200;
    });
    // Slow transfers so that many are queued, waiting and in flight at once:
    // 1 s each, so that none can finish before destroy cancels them (200 ms
    // after it starts) even if this thread stalls after submitting.
    assert!(sw::set_knob(sw::Knob::LatencyNs, 1_000_000_000));
    let ops: Vec<_> = (0..20_000)
        .map(|i| write(p.src.addr() + (i % 256) * 4096, 4096, 1, p.dst.addr() as u64, i as u64))
        .collect();
    let (st, accepted) = p.a.submit(&ops);
    assert_eq!((st, accepted), (OK, ops.len()), "{}", last_error());
    assert_eq!(p.a.destroy(), OK);
    let by_status = p.a.done.exactly_once();
    assert_eq!(p.a.done.count(), ops.len(), "every accepted op completed: {by_status:?}");
    assert!(by_status.get(&MCFX_E_CANCELED).copied().unwrap_or(0) > 0, "{by_status:?}");
    assert_no_violations();
}

#[test]
fn submits_racing_shutdown_are_either_completed_once_or_refused() {
    let _g = serial();
    let RustSide { t, done, src, dst, .. } = &RustSide::new(Config::default());
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for th in 0..4u64 {
            let (t, accepted, refused) = (&t, &accepted, &refused);
            let (sa, da) = (src.addr(), dst.addr() as u64);
            s.spawn(move || {
                // Until refused: shutdown always comes (bounded by LIMIT).
                let until = Instant::now() + LIMIT;
                for i in 0..u64::MAX {
                    assert!(i % 1024 != 0 || Instant::now() < until, "never refused");
                    let req = OpRequest {
                        opcode: Opcode::Write,
                        local: sa,
                        len: 64,
                        peer: 1,
                        remote: da,
                        user_data: th << 32 | i,
                    };
                    let mut n = 0;
                    match t.submit(&[req], &mut n) {
                        Ok(()) => {
                            accepted.fetch_add(n, SeqCst);
                        }
                        Err(e) if e.status == MCFX_E_QUEUE_FULL => std::thread::yield_now(),
                        Err(e) if e.status == MCFX_E_SHUTTING_DOWN => {
                            refused.fetch_add(1, SeqCst);
                            return;
                        }
                        Err(e) => panic!("submit: {e}"),
                    }
                }
            });
        }
        wait_until(|| done.count() >= 1000, "submitters never got 1000 ops through");
        t.shutdown();
        let after = done.count();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(done.count(), after, "a callback ran after shutdown returned");
    });
    assert_eq!(refused.load(SeqCst), 4, "every submitter was refused after shutdown");
    done.exactly_once();
    assert_eq!(done.count(), accepted.load(SeqCst));
    assert!(accepted.load(SeqCst) > 0);
}

#[test]
fn destroy_of_null_is_a_no_op_and_a_second_destroy_is_an_error() {
    let _g = serial();
    // SAFETY: NULL is documented as a no-op.
    assert_eq!(unsafe { mcfx_destroy(std::ptr::null_mut()) }, OK);
    let mut a = Node::new();
    let t = a.t;
    assert_eq!(a.destroy(), OK);
    // SAFETY: a destroyed handle; the library detects it (no reuse here:
    // no transport was created since).
    assert_eq!(unsafe { mcfx_destroy(t) }, MCFX_E_INVALID_ARGUMENT);
    assert!(last_error().contains("destroyed"), "{}", last_error());
}

#[test]
fn destroy_while_four_threads_submit_with_ten_thousand_ops_in_flight() {
    let _g = serial();
    let RustSide { t, done, src, dst, .. } =
        &RustSide::new(Config { queue_capacity: 1 << 16, ..Config::default() });
    // Slow transfers: ops pile up in FlagCX, the peer list and the queue.
    assert!(flagcx_sys::sw::set_knob(flagcx_sys::sw::Knob::LatencyNs, 50_000_000));
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for th in 0..4u64 {
            let (t, accepted, refused) = (&t, &accepted, &refused);
            let (sa, da) = (src.addr(), dst.addr() as u64);
            s.spawn(move || {
                let mut batch = Vec::with_capacity(64);
                // Until refused: shutdown always comes (bounded by LIMIT).
                let until = Instant::now() + LIMIT;
                for i in 0..u64::MAX {
                    assert!(i % 1024 != 0 || Instant::now() < until, "never refused");
                    batch.clear();
                    for k in 0..64 {
                        batch.push(OpRequest {
                            opcode: Opcode::Write,
                            local: sa,
                            len: 64,
                            peer: 1,
                            remote: da,
                            user_data: th << 40 | i << 6 | k,
                        });
                    }
                    let mut n = 0;
                    let r = t.submit(&batch, &mut n);
                    accepted.fetch_add(n, SeqCst);
                    match r {
                        Ok(()) => {}
                        Err(e) if e.status == MCFX_E_QUEUE_FULL => std::thread::yield_now(),
                        Err(e) if e.status == MCFX_E_SHUTTING_DOWN => {
                            refused.fetch_add(1, SeqCst);
                            return;
                        }
                        Err(e) => panic!("submit: {e}"),
                    }
                }
            });
        }
        wait_until(|| t.stats().in_flight() >= 10_000, "never reached 10 000 ops in flight");
        let in_flight = t.stats().in_flight();
        t.shutdown();
        let after = done.count();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(done.count(), after, "a callback ran after shutdown returned");
        assert!(in_flight >= 10_000, "{in_flight}");
    });
    assert_eq!(refused.load(SeqCst), 4, "every submitter was refused after shutdown");
    done.exactly_once();
    assert_eq!(done.count(), accepted.load(SeqCst), "one completion per accepted op");
}
