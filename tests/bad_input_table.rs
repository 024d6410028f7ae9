//! Every export against every bad input that applies to it: the documented
//! status, a readable message naming the function, no crash. Ops whose
//! problem only shows later (unknown peer, remote range) complete with the
//! documented status instead.

mod common;

use std::ffi::{c_char, c_void, CStr};
use std::ptr::{null, null_mut};

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

use mcfx_status::*;

/// One row: what is called with which bad input, and what it must return;
/// a failed call's message must name the call and say more.
struct Row<'a> {
    call: &'static str,
    input: &'static str,
    want: mcfx_status,
    run: Box<dyn Fn() -> mcfx_status + 'a>,
}

fn row<'a>(
    call: &'static str,
    input: &'static str,
    want: mcfx_status,
    run: impl Fn() -> mcfx_status + 'a,
) -> Row<'a> {
    Row { call, input, want, run: Box::new(run) }
}

fn check(rows: Vec<Row<'_>>) {
    for r in &rows {
        let got = (r.run)();
        assert_eq!(got, r.want, "{} with {}: {}", r.call, r.input, last_error());
        if got != OK {
            let msg = last_error();
            assert!(
                msg.starts_with(r.call),
                "{} with {}: message {msg:?} should name the call",
                r.call,
                r.input
            );
            assert!(
                msg.len() > r.call.len() + 5,
                "{} with {}: message {msg:?} says nothing",
                r.call,
                r.input
            );
        }
    }
}

/// What the rows run against: `p.a` is the live handle (`src` registered
/// on it, `b` its peer 1), `other` a buffer registered nowhere.
struct Setup {
    p: Pair,
    other: AlignedBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup { p: Pair::new(8192), other: AlignedBuf::new(4096) }
    }

    /// The live handle, as a number the rows' closures copy.
    fn t(&self) -> usize {
        self.p.a.t as usize
    }

    /// `mcfx_create` of a default config (with `p.a`'s callbacks) that `f`
    /// spoiled.
    fn create_with(&self, f: fn(&mut mcfx_config)) -> impl Fn() -> mcfx_status + '_ {
        move || {
            let mut c = config(&self.p.a.done, &self.p.a.dir);
            f(&mut c);
            let mut out = null_mut();
            // SAFETY: a full-size config struct, whatever its fields claim.
            unsafe { mcfx_create(&c, &mut out) }
        }
    }

    /// `mcfx_submit` of the one op `o` on the live handle, which must queue
    /// it whole or not at all.
    fn submit_one(&self, o: mcfx_op) -> impl Fn() -> mcfx_status {
        let t = self.t();
        move || {
            let mut n = 7;
            // SAFETY: a live handle and one op.
            let st = unsafe { mcfx_submit(t as *mut _, &o, 1, &mut n) };
            assert_eq!(n, if st == OK { 1 } else { 0 });
            st
        }
    }
}

// SAFETY (all rows below): pointers are either NULL on purpose, or live
// buffers and the live handle of the test's Setup.

#[test]
fn create_rejects_null_arguments_and_missing_callbacks() {
    let _g = serial();
    let s = &Setup::new();
    check(vec![
        row("mcfx_create", "NULL config", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_create(null(), &mut null_mut())
        }),
        row("mcfx_create", "NULL out pointer", MCFX_E_INVALID_ARGUMENT, move || {
            let c = config(&s.p.a.done, &s.p.a.dir);
            unsafe { mcfx_create(&c, null_mut()) }
        }),
        row(
            "mcfx_create",
            "no completion callback",
            MCFX_E_INVALID_ARGUMENT,
            s.create_with(|c| c.on_complete = None),
        ),
        row(
            "mcfx_create",
            "no resolver",
            MCFX_E_INVALID_ARGUMENT,
            s.create_with(|c| c.resolve = None),
        ),
    ]);
}

#[test]
fn create_rejects_bad_sizes_versions_flags_and_every_value_over_its_maximum() {
    let _g = serial();
    let s = &Setup::new();
    let bad = |input, spoil| row("mcfx_create", input, MCFX_E_BAD_CONFIG, s.create_with(spoil));
    check(vec![
        bad("struct_size too small", |c| c.struct_size = 12),
        bad("a newer ABI version", |c| c.abi_version = 99),
        bad("ABI version 0", |c| c.abi_version = 0),
        bad("queue_capacity over the limit", |c| c.queue_capacity = 1 << 21),
        bad("unknown flag", |c| c.flags = 1 << 7),
        // Every numeric field has a documented maximum (MCFX_MAX_*):
        // beyond it, BAD_CONFIG, never an abort of the host.
        bad("max_batch UINT32_MAX", |c| c.max_batch = u32::MAX),
        bad("max_batch 300 000 000", |c| c.max_batch = 300_000_000),
        bad("spin_grace_us UINT32_MAX", |c| c.spin_grace_us = u32::MAX),
        bad("submit_wait_us UINT32_MAX", |c| c.submit_wait_us = u32::MAX),
        bad("op_timeout_ms UINT32_MAX", |c| c.op_timeout_ms = u32::MAX),
        bad("connect_timeout_ms UINT32_MAX", |c| c.connect_timeout_ms = u32::MAX),
        bad("shutdown_timeout_ms UINT32_MAX", |c| c.shutdown_timeout_ms = u32::MAX),
        bad("connect_threads UINT32_MAX", |c| c.connect_threads = u32::MAX),
        bad("queue_capacity UINT32_MAX", |c| c.queue_capacity = u32::MAX),
        bad("max_slice_bytes UINT64_MAX", |c| c.max_slice_bytes = u64::MAX),
        bad("log_level above TRACE", |c| c.log_level = 6),
    ]);
}

#[test]
fn local_endpoint_rejects_bad_arguments_and_a_transport_that_does_not_serve() {
    let _g = serial();
    let s = &Setup::new();
    let t = s.t();
    check(vec![
        row("mcfx_local_endpoint", "NULL handle", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_local_endpoint(null(), null_mut(), 0, &mut 0)
        }),
        row("mcfx_local_endpoint", "NULL length", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_local_endpoint(t as *const _, [0 as c_char; 8].as_mut_ptr(), 8, null_mut())
        }),
        row(
            "mcfx_local_endpoint",
            "NULL buffer, cap > 0",
            MCFX_E_INVALID_ARGUMENT,
            move || unsafe { mcfx_local_endpoint(t as *const _, null_mut(), 8, &mut 0) },
        ),
        row("mcfx_local_endpoint", "buffer too small", MCFX_E_BUFFER_TOO_SMALL, move || unsafe {
            mcfx_local_endpoint(t as *const _, [0 as c_char; 4].as_mut_ptr(), 4, &mut 0)
        }),
        row(
            "mcfx_local_endpoint",
            "a transport made with MCFX_FLAG_NO_SERVE",
            MCFX_E_NOT_SERVING,
            move || {
                let mut c = config(&s.p.a.done, &s.p.a.dir);
                c.flags = MCFX_FLAG_NO_SERVE;
                let mut q = null_mut();
                let mut buf = [0 as c_char; 64];
                let mut len = 0;
                // SAFETY: valid config; q is live until destroyed below.
                unsafe {
                    assert_eq!(mcfx_create(&c, &mut q), OK);
                    let st = mcfx_local_endpoint(q, buf.as_mut_ptr(), buf.len(), &mut len);
                    assert_eq!(mcfx_destroy(q), OK); // keeps the message
                    st
                }
            },
        ),
    ]);
}

#[test]
fn register_and_unregister_reject_bad_regions() {
    let _g = serial();
    let s = &Setup::new();
    let (t, src, other) = (s.t(), s.p.src.addr(), &s.other);
    check(vec![
        row("mcfx_register", "NULL handle", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_register(null_mut(), other.addr() as _, 64)
        }),
        row("mcfx_register", "NULL address", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_register(t as *mut _, null_mut(), 64)
        }),
        row("mcfx_register", "zero length", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_register(t as *mut _, other.addr() as _, 0)
        }),
        row("mcfx_register", "address + length overflow", MCFX_E_OVERFLOW, move || unsafe {
            mcfx_register(t as *mut _, (usize::MAX - 10) as _, 64)
        }),
        row("mcfx_register", "overlap", MCFX_E_ALREADY_REGISTERED, move || unsafe {
            mcfx_register(t as *mut _, (src + 100) as _, 64)
        }),
        row("mcfx_unregister", "NULL handle", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_unregister(null_mut(), src as _)
        }),
        row("mcfx_unregister", "NULL address", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_unregister(t as *mut _, null_mut())
        }),
        row("mcfx_unregister", "never registered", MCFX_E_NOT_FOUND, move || unsafe {
            mcfx_unregister(t as *mut _, other.addr() as _)
        }),
        row("mcfx_unregister", "inside, not at the start", MCFX_E_NOT_FOUND, move || unsafe {
            mcfx_unregister(t as *mut _, (src + 8) as _)
        }),
        row("mcfx_register_batch", "NULL handle", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_register_batch(null_mut(), null(), 0)
        }),
        row("mcfx_register_batch", "NULL array", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_register_batch(t as *mut _, null(), 2)
        }),
        row(
            "mcfx_register_batch",
            "a zero-length entry",
            MCFX_E_INVALID_ARGUMENT,
            move || unsafe {
                let r = [mcfx_region { addr: other.addr() as _, length: 0 }];
                mcfx_register_batch(t as *mut _, r.as_ptr(), 1)
            },
        ),
        row("mcfx_unregister_batch", "NULL handle", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_unregister_batch(null_mut(), null(), 0)
        }),
        row("mcfx_unregister_batch", "NULL array", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_unregister_batch(t as *mut _, null(), 1)
        }),
        row("mcfx_unregister_batch", "a NULL entry", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            let a = [null_mut::<c_void>()];
            mcfx_unregister_batch(t as *mut _, a.as_ptr(), 1)
        }),
        row("mcfx_unregister_batch", "an unknown entry", MCFX_E_NOT_FOUND, move || unsafe {
            let a = [other.addr() as *mut c_void];
            mcfx_unregister_batch(t as *mut _, a.as_ptr(), 1)
        }),
    ]);
}

#[test]
fn submit_rejects_each_bad_op_and_queues_nothing() {
    let _g = serial();
    let s = &Setup::new();
    let (t, src, dst, other) = (s.t(), s.p.src.addr(), s.p.dst.addr() as u64, &s.other);
    let good = write(src, 64, 1, dst, 1);
    check(vec![
        row("mcfx_submit", "NULL handle", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_submit(null_mut(), &good, 1, null_mut())
        }),
        row("mcfx_submit", "NULL ops", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_submit(t as *mut _, null(), 1, null_mut())
        }),
        row(
            "mcfx_submit",
            "zero length",
            MCFX_E_INVALID_ARGUMENT,
            s.submit_one(write(src, 0, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "NULL local address",
            MCFX_E_INVALID_ARGUMENT,
            s.submit_one(write(0, 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "unknown opcode",
            MCFX_E_INVALID_ARGUMENT,
            s.submit_one(op(5, src, 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "reserved field set",
            MCFX_E_INVALID_ARGUMENT,
            s.submit_one(mcfx_op { reserved: 3, ..good }),
        ),
        row(
            "mcfx_submit",
            "unregistered local range",
            MCFX_E_NOT_REGISTERED,
            s.submit_one(write(other.addr(), 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "partly registered local range",
            MCFX_E_NOT_REGISTERED,
            s.submit_one(write(src + 8000, 400, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "local overflow",
            MCFX_E_OVERFLOW,
            s.submit_one(write(usize::MAX - 4, 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "remote overflow",
            MCFX_E_OVERFLOW,
            s.submit_one(write(src, 64, 1, u64::MAX - 4, 2)),
        ),
    ]);
    assert_eq!(s.p.a.stats().submitted, 0, "no bad submit queued anything");
}

#[test]
fn get_stats_rejects_bad_arguments() {
    let _g = serial();
    let s = &Setup::new();
    let t = s.t();
    check(vec![
        row("mcfx_get_stats", "NULL handle", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_get_stats(null(), &mut mcfx_stats::default())
        }),
        row("mcfx_get_stats", "NULL out", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_get_stats(t as *const _, null_mut())
        }),
        row("mcfx_get_stats", "struct_size unset", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_get_stats(t as *const _, &mut mcfx_stats::default())
        }),
    ]);
}

/// Problems only the progress thread can see complete the op instead.
#[test]
fn ops_to_an_unknown_peer_or_outside_its_regions_complete_with_their_status() {
    let _g = serial();
    let s = &Setup::new();
    let (a, src, dst) = (&s.p.a, s.p.src.addr(), s.p.dst.addr() as u64);
    a.submit_ok(&[write(src, 64, 404, dst, 10)]);
    assert_eq!(a.done.wait_one(10, LIMIT), MCFX_E_RESOLVE, "unknown peer");
    a.submit_ok(&[write(src, 64, 1, dst + (1 << 20), 11)]);
    assert_eq!(
        a.done.wait_one(11, LIMIT),
        MCFX_E_REMOTE_RANGE,
        "remote range outside the peer's regions"
    );
}

/// Calls with no failure mode still hold up against bad pointers.
#[test]
fn calls_without_a_failure_mode_hold_up_against_null_and_short_buffers() {
    // SAFETY: NULL and short sizes, which these functions document as no-ops,
    // and a NULL config, which mcfx_create rejects.
    unsafe {
        mcfx_config_init(null_mut(), 64);
        let mut small = [0xffu8; 4];
        mcfx_config_init(small.as_mut_ptr().cast(), 4);
        assert_eq!(small, [0xff; 4], "config_init wrote into a 4-byte struct");
        // A failed call leaves a message: NULL and 0 ask for its length.
        assert_eq!(mcfx_create(null(), &mut null_mut()), MCFX_E_INVALID_ARGUMENT);
        assert!(mcfx_last_error(null_mut(), 0) > 0);
        assert_eq!(CStr::from_ptr(mcfx_strerror(-7)).to_str().unwrap(), "unknown status code");
        assert!(!mcfx_get_api_v1().is_null());
    }
}

#[test]
fn destroying_a_handle_twice_is_detected() {
    let _g = serial();
    let mut q = Node::new();
    let h = q.t;
    assert_eq!(q.destroy(), OK);
    // SAFETY: destroyed handle: detected, since no transport reused it.
    assert_eq!(unsafe { mcfx_destroy(h) }, MCFX_E_INVALID_ARGUMENT);
    assert!(last_error().starts_with("mcfx_destroy"));
}
