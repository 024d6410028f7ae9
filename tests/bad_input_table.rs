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

/// One row: what is called, what it must return, and a word its message
/// must contain (besides the function's name).
struct Row {
    call: &'static str,
    input: &'static str,
    want: mcfx_status,
    run: Box<dyn Fn() -> mcfx_status>,
}

fn row(
    call: &'static str,
    input: &'static str,
    want: mcfx_status,
    run: impl Fn() -> mcfx_status + 'static,
) -> Row {
    Row { call, input, want, run: Box::new(run) }
}

fn check(rows: Vec<Row>) -> usize {
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
    rows.len()
}

#[test]
fn every_export_rejects_every_bad_input_with_its_documented_status() {
    let _g = serial();
    // Leaked on purpose: the rows run inside 'static closures.
    let p: &'static Pair = Box::leak(Box::new(Pair::new(8192)));
    let other: &'static AlignedBuf = Box::leak(Box::new(AlignedBuf::new(4096)));
    let t = p.a.t as usize;
    let (src, dst) = (p.src.addr(), p.dst.addr() as u64);
    let cfg = |f: fn(&mut mcfx_config)| {
        move || {
            let mut c = config(&p.a.done, &p.a.dir);
            f(&mut c);
            let mut out = null_mut();
            // SAFETY: a full-size config struct, whatever its fields claim.
            unsafe { mcfx_create(&c, &mut out) }
        }
    };
    let submit = move |o: mcfx_op| {
        move || {
            let mut n = 7;
            // SAFETY: a live handle and one op.
            let st = unsafe { mcfx_submit(t as *mut _, &o, 1, &mut n) };
            assert_eq!(n, if st == OK { 1 } else { 0 });
            st
        }
    };
    let good = write(src, 64, 1, dst, 1);
    // SAFETY (all rows): pointers are either NULL on purpose, or live buffers
    // and the live handle of `p`.
    let rows = vec![
        row("mcfx_create", "NULL config", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_create(null(), &mut null_mut())
        }),
        row("mcfx_create", "NULL out pointer", MCFX_E_INVALID_ARGUMENT, move || {
            let c = config(&p.a.done, &p.a.dir);
            unsafe { mcfx_create(&c, null_mut()) }
        }),
        row("mcfx_create", "struct_size too small", MCFX_E_BAD_CONFIG, cfg(|c| c.struct_size = 12)),
        row("mcfx_create", "a newer ABI version", MCFX_E_BAD_CONFIG, cfg(|c| c.abi_version = 99)),
        row("mcfx_create", "ABI version 0", MCFX_E_BAD_CONFIG, cfg(|c| c.abi_version = 0)),
        row(
            "mcfx_create",
            "no completion callback",
            MCFX_E_INVALID_ARGUMENT,
            cfg(|c| c.on_complete = None),
        ),
        row("mcfx_create", "no resolver", MCFX_E_INVALID_ARGUMENT, cfg(|c| c.resolve = None)),
        row(
            "mcfx_create",
            "queue_capacity over the limit",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.queue_capacity = 1 << 21),
        ),
        row("mcfx_create", "unknown flag", MCFX_E_BAD_CONFIG, cfg(|c| c.flags = 1 << 7)),
        // Every numeric field has a documented maximum (issue 11, item 1):
        // beyond it, BAD_CONFIG, never an abort of the host.
        row(
            "mcfx_create",
            "max_batch UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.max_batch = u32::MAX),
        ),
        row(
            "mcfx_create",
            "max_batch 300 000 000",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.max_batch = 300_000_000),
        ),
        row(
            "mcfx_create",
            "spin_grace_us UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.spin_grace_us = u32::MAX),
        ),
        row(
            "mcfx_create",
            "submit_wait_us UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.submit_wait_us = u32::MAX),
        ),
        row(
            "mcfx_create",
            "op_timeout_ms UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.op_timeout_ms = u32::MAX),
        ),
        row(
            "mcfx_create",
            "connect_timeout_ms UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.connect_timeout_ms = u32::MAX),
        ),
        row(
            "mcfx_create",
            "shutdown_timeout_ms UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.shutdown_timeout_ms = u32::MAX),
        ),
        row(
            "mcfx_create",
            "connect_threads UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.connect_threads = u32::MAX),
        ),
        row(
            "mcfx_create",
            "queue_capacity UINT32_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.queue_capacity = u32::MAX),
        ),
        row(
            "mcfx_create",
            "max_slice_bytes UINT64_MAX",
            MCFX_E_BAD_CONFIG,
            cfg(|c| c.max_slice_bytes = u64::MAX),
        ),
        row("mcfx_create", "log_level above TRACE", MCFX_E_BAD_CONFIG, cfg(|c| c.log_level = 6)),
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
                let mut c = config(&p.a.done, &p.a.dir);
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
            submit(write(src, 0, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "NULL local address",
            MCFX_E_INVALID_ARGUMENT,
            submit(write(0, 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "unknown opcode",
            MCFX_E_INVALID_ARGUMENT,
            submit(op(5, src, 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "reserved field set",
            MCFX_E_INVALID_ARGUMENT,
            submit(mcfx_op { reserved: 3, ..good }),
        ),
        row(
            "mcfx_submit",
            "unregistered local range",
            MCFX_E_NOT_REGISTERED,
            submit(write(other.addr(), 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "partly registered local range",
            MCFX_E_NOT_REGISTERED,
            submit(write(src + 8000, 400, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "local overflow",
            MCFX_E_OVERFLOW,
            submit(write(usize::MAX - 4, 64, 1, dst, 2)),
        ),
        row(
            "mcfx_submit",
            "remote overflow",
            MCFX_E_OVERFLOW,
            submit(write(src, 64, 1, u64::MAX - 4, 2)),
        ),
        row("mcfx_get_stats", "NULL handle", MCFX_E_INVALID_ARGUMENT, || unsafe {
            mcfx_get_stats(null(), &mut mcfx_stats::default())
        }),
        row("mcfx_get_stats", "NULL out", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_get_stats(t as *const _, null_mut())
        }),
        row("mcfx_get_stats", "struct_size unset", MCFX_E_INVALID_ARGUMENT, move || unsafe {
            mcfx_get_stats(t as *const _, &mut mcfx_stats::default())
        }),
    ];
    let n = check(rows);
    assert_eq!(p.a.stats().submitted, 0, "no bad submit queued anything");
    eprintln!("{n} bad inputs rejected");

    // Problems only the progress thread can see complete the op instead.
    p.a.submit_ok(&[write(src, 64, 404, dst, 10)]);
    assert_eq!(p.a.done.wait_one(10, LIMIT), MCFX_E_RESOLVE, "unknown peer");
    p.a.submit_ok(&[write(src, 64, 1, dst + (1 << 20), 11)]);
    assert_eq!(
        p.a.done.wait_one(11, LIMIT),
        MCFX_E_REMOTE_RANGE,
        "remote range outside the peer's regions"
    );

    // Calls with no failure mode still hold up against bad pointers.
    // SAFETY: NULL and short sizes, which these functions document as no-ops.
    unsafe {
        mcfx_config_init(null_mut(), 64);
        let mut small = [0xffu8; 4];
        mcfx_config_init(small.as_mut_ptr().cast(), 4);
        assert_eq!(small, [0xff; 4], "config_init wrote into a 4-byte struct");
        assert!(mcfx_last_error(null_mut(), 0) > 0);
        assert_eq!(CStr::from_ptr(mcfx_strerror(-7)).to_str().unwrap(), "unknown status code");
        assert!(!mcfx_get_api_v1().is_null());
    }

    // Double destroy (the Pair's own destroy runs on a fresh handle).
    let mut q = Node::new();
    let h = q.t;
    assert_eq!(q.destroy(), OK);
    // SAFETY: destroyed handle: detected, since no transport reused it.
    assert_eq!(unsafe { mcfx_destroy(h) }, MCFX_E_INVALID_ARGUMENT);
    assert!(last_error().starts_with("mcfx_destroy"));
}
