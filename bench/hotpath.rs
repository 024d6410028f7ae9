//! Drives the transport's hot path alone: one in-process peer, batches of
//! small writes, one batch in flight. For profiling (callgrind, perf) the
//! transport's own cost per op without the A/B bench around it.
//!
//! Usage: `cargo run --release --example hotpath -- [--batch B] [--size S]
//! [--batches N] [--grace-us G] [--ffi] [--gap-us P]` (defaults 64, 4096,
//! 20000, the config's spin grace; `--grace-us 0` keeps idle spinning out of
//! a callgrind count; `--ffi` submits through the C ABI's `mcfx_submit` with
//! `mcfx_op`s instead of `Transport::submit` with `OpRequest`s; `--gap-us P`
//! sleeps P us before each batch, the bursty case where an op may find the
//! progress thread parked, and adds a line with the batches' latencies).
//! Prints one line: ops/s, FlagCX vector calls per batch and wake-ups.
//! `FLAGCX_SW_LATENCY_NS` works as usual.

use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::{self, mcfx_op, mcfx_status, mcfx_transport};
use mooncake_flagcx::{Config, OpRequest, Opcode, Transport};

/// The initiator: a Rust `Transport`, or a C ABI handle (`--ffi`).
enum Init {
    Rust(Transport),
    C(*mut mcfx_transport),
}

unsafe extern "C-unwind" fn c_complete(ctx: *mut std::ffi::c_void, _: u64, _: mcfx_status) {
    // SAFETY: ctx is the AtomicU64 that main keeps alive past destroy.
    let done = unsafe { &*(ctx as *const AtomicU64) };
    // Release: the submitter's Acquire load sees the op finished.
    done.fetch_add(1, Release);
}

unsafe extern "C-unwind" fn c_resolve(
    ctx: *mut std::ffi::c_void,
    _: u64,
    buf: *mut std::ffi::c_char,
    cap: usize,
) -> i32 {
    // SAFETY: ctx is the endpoint String that main keeps alive past destroy.
    let ep = unsafe { &*(ctx as *const String) };
    if ep.len() >= cap {
        return -1;
    }
    // SAFETY: buf has cap > ep.len() writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(ep.as_ptr(), buf.cast::<u8>(), ep.len());
        *buf.add(ep.len()) = 0;
    }
    0
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let batch = arg("--batch", 64) as usize;
    let size = arg("--size", 4096) as usize;
    let batches = arg("--batches", 20_000);
    let mut config = Config { op_timeout: Duration::from_secs(60), ..Config::default() };
    if let Some(us) = std::env::args().position(|a| a == "--grace-us").map(|_| arg("--grace-us", 0))
    {
        config.spin_grace = Duration::from_micros(us);
    }
    let target =
        Transport::create(config.clone(), Box::new(|_, _| {}), Box::new(|_| Err("none".into())))
            .expect("target");
    let endpoint = target.endpoint().expect("the target serves").to_owned();
    let done = Arc::new(AtomicU64::new(0));
    let done2 = Arc::clone(&done);
    let use_ffi = std::env::args().any(|a| a == "--ffi");
    let init = if use_ffi {
        let mut c = std::mem::MaybeUninit::<ffi::mcfx_config>::uninit();
        let mut t = std::ptr::null_mut();
        // SAFETY: config_init writes the whole struct; the callbacks'
        // contexts (`done`, `endpoint`) outlive the handle (destroyed below).
        unsafe {
            ffi::mcfx_config_init(c.as_mut_ptr(), std::mem::size_of::<ffi::mcfx_config>());
            let mut c = c.assume_init();
            c.on_complete = Some(c_complete);
            c.complete_ctx = Arc::as_ptr(&done) as *mut _;
            c.resolve = Some(c_resolve);
            c.resolve_ctx = &endpoint as *const String as *mut _;
            c.op_timeout_ms = 60_000;
            c.spin_grace_us = config.spin_grace.as_micros() as u32;
            assert_eq!(ffi::mcfx_create(&c, &mut t), mcfx_status::MCFX_OK, "mcfx_create");
        }
        Init::C(t)
    } else {
        let endpoint = endpoint.clone();
        Init::Rust(
            Transport::create(
                config,
                Box::new(move |_, _| {
                    // Release: the submitter's Acquire load sees the op finished.
                    done2.fetch_add(1, Release);
                }),
                Box::new(move |_| Ok(endpoint.clone())),
            )
            .expect("initiator"),
        )
    };
    let src = AlignedBuf::new(size * batch);
    let dst = AlignedBuf::new(size * batch);
    // SAFETY: both buffers outlive the transports (dropped after them below).
    unsafe {
        target.register(dst.addr(), dst.len()).expect("register dst");
        match &init {
            Init::Rust(t) => t.register(src.addr(), src.len()).expect("register src"),
            Init::C(t) => assert_eq!(
                ffi::mcfx_register(*t, src.addr() as *mut _, src.len()),
                mcfx_status::MCFX_OK
            ),
        }
    }
    let ops: Vec<OpRequest> = (0..batch)
        .map(|i| OpRequest {
            opcode: Opcode::Write,
            local: src.addr() + i * size,
            len: size as u64,
            peer: 1,
            remote: (dst.addr() + i * size) as u64,
            user_data: i as u64,
        })
        .collect();
    let c_ops: Vec<mcfx_op> = ops
        .iter()
        .map(|o| mcfx_op {
            opcode: ffi::MCFX_OP_WRITE,
            reserved: 0,
            local_addr: o.local as *mut _,
            length: o.len,
            peer_id: o.peer,
            remote_addr: o.remote,
            user_data: o.user_data,
        })
        .collect();
    let stats = || match &init {
        Init::Rust(t) => {
            let s = t.stats();
            (s.flagcx_transfers, s.wakeups)
        }
        Init::C(t) => {
            let mut s = ffi::mcfx_stats {
                struct_size: std::mem::size_of::<ffi::mcfx_stats>() as u32,
                ..Default::default()
            };
            // SAFETY: a live handle and a sized struct.
            unsafe { ffi::mcfx_get_stats(*t, &mut s) };
            (s.flagcx_transfers, s.wakeups)
        }
    };
    // --gap-us G: sleep G us between batches (past the spin grace, the
    // progress thread parks, so every batch wakes it) and report the
    // latency of each batch, submit to last completion, waited for by pure
    // spinning as a caller polling its transfer status would.
    let gap = Duration::from_micros(arg("--gap-us", 0));
    let mut lat: Vec<u64> = Vec::new();
    let mut run = |n: u64| {
        let t0 = Instant::now();
        let mut sent = done.load(Acquire);
        for _ in 0..n {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let t_submit = Instant::now();
            let mut accepted = 0;
            match &init {
                Init::Rust(t) => t.submit(&ops, &mut accepted).expect("submit"),
                Init::C(t) => {
                    // SAFETY: a live handle and `batch` ops.
                    let st =
                        unsafe { ffi::mcfx_submit(*t, c_ops.as_ptr(), c_ops.len(), &mut accepted) };
                    assert_eq!(st, mcfx_status::MCFX_OK, "mcfx_submit");
                }
            }
            sent += batch as u64;
            let mut spins = 0u64;
            while done.load(Acquire) < sent {
                spins += 1;
                if spins > 100_000
                    && (gap.is_zero() || t_submit.elapsed() > Duration::from_millis(50))
                {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            if !gap.is_zero() {
                lat.push(t_submit.elapsed().as_nanos() as u64);
            }
        }
        t0.elapsed()
    };
    run(batches / 10 + 1); // warm-up, connect
    let before = stats();
    let elapsed = run(batches);
    let after = stats();
    let ops_total = batches * batch as u64;
    println!(
        "hotpath: batch={batch} size={size} ops={ops_total} ops_per_s={:.0} \
         calls_per_batch={:.2} wakeups_per_batch={:.3}",
        ops_total as f64 / elapsed.as_secs_f64(),
        (after.0 - before.0) as f64 / batches as f64,
        (after.1 - before.1) as f64 / batches as f64,
    );
    if !lat.is_empty() {
        lat.sort_unstable();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e3;
        println!(
            "hotpath: gap={}us batch latency p50={:.1}us p90={:.1}us p99={:.1}us max={:.1}us",
            gap.as_micros(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }
    match init {
        Init::Rust(t) => drop(t),
        // SAFETY: the live handle, destroyed once.
        Init::C(t) => unsafe {
            ffi::mcfx_destroy(t);
        },
    }
    drop(target);
}
