//! Reliability defects of issue 11, each reproduced through the C ABI:
//! destroy from a transport's own callbacks, destroy while a resolver
//! blocks, stats written in whole fields, one status for one cause,
//! `in_flight` under contention. (Remote-range misses that share a refresh:
//! tests/remote_refresh.rs.)
//!
//! Tests that look at the process's stderr run in a child process: this test
//! binary re-executed with `MCFX_TEST_CHILD=<case>` runs only `child_entry`.

mod common;

use std::ffi::{c_char, c_void};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

use mcfx_status::*;

const CHILD_ENV: &str = "MCFX_TEST_CHILD";

/// Runs `child_entry` in a child process for `case`; returns its exit
/// success and its whole stderr. `on_line` sees each stderr line as it
/// comes and may answer on the child's stdin. Bounded: the child is killed
/// after 60 s.
fn run_child(
    case: &str,
    log: Option<&str>,
    mut on_line: impl FnMut(&str, &mut std::process::ChildStdin),
) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match log {
        Some(filter) => cmd.env("MCFX_LOG", filter),
        None => cmd.env_remove("MCFX_LOG"),
    };
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: our own child, still running after 60 s.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        true
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut err = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        on_line(&line, &mut stdin);
        err.push_str(&line);
        err.push('\n');
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let killed = killer.join().unwrap();
    assert!(!killed, "child {case} hung (killed after 60 s); stderr:\n{err}");
    (status.success(), err)
}

/// The child side of the tests above; does nothing in a normal run.
#[test]
fn child_entry() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("destroy_in_callbacks") => child_destroy_in_callbacks(),
        Ok("blocked_resolver") => child_blocked_resolver(),
        Ok(other) => panic!("unknown child case {other}"),
        Err(_) => {}
    }
}

// ---- item 2: destroy from the transport's own callbacks ---------------------

static OWN: AtomicPtr<mcfx_transport> = AtomicPtr::new(null_mut());
static FROM_RESOLVER: AtomicI32 = AtomicI32::new(-1);
static FROM_COMPLETION: AtomicI32 = AtomicI32::new(-1);
static COMPLETIONS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C-unwind" fn destroying_complete(_: *mut c_void, _: u64, _: mcfx_status) {
    // SAFETY: OWN is this transport's live handle.
    let st = unsafe { mcfx_destroy(OWN.load(SeqCst)) };
    FROM_COMPLETION.store(st as i32, SeqCst);
    let n = COMPLETIONS.fetch_add(1, SeqCst);
    if n == 1 {
        panic!("a Rust completion callback panics (caught by the library)");
    }
}

unsafe extern "C-unwind" fn destroying_resolve(
    _: *mut c_void,
    _: u64,
    _: *mut c_char,
    _: usize,
) -> i32 {
    // SAFETY: OWN is this transport's live handle.
    let st = unsafe { mcfx_destroy(OWN.load(SeqCst)) };
    FROM_RESOLVER.store(st as i32, SeqCst);
    -1
}

fn child_destroy_in_callbacks() {
    let mut c = config(&Default::default(), &Default::default());
    c.on_complete = Some(destroying_complete);
    c.complete_ctx = null_mut();
    c.resolve = Some(destroying_resolve);
    c.resolve_ctx = null_mut();
    let mut t = null_mut();
    // SAFETY: valid config; the callbacks use only statics.
    assert_eq!(unsafe { mcfx_create(&c, &mut t) }, OK);
    OWN.store(t, SeqCst);
    let buf = AlignedBuf::new(4096);
    // SAFETY: live handle; buf outlives it.
    assert_eq!(unsafe { mcfx_register(t, buf.addr() as *mut c_void, 4096) }, OK);
    for i in 0..2u64 {
        let o = write(buf.addr(), 64, 7 + i, 0x1000, i);
        // SAFETY: live handle, one op.
        assert_eq!(unsafe { mcfx_submit(t, &o, 1, null_mut()) }, OK);
        let until = Instant::now() + LIMIT;
        while COMPLETIONS.load(SeqCst) <= i {
            assert!(Instant::now() < until, "op {i} never completed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(FROM_RESOLVER.load(SeqCst), MCFX_E_IN_CALLBACK as i32);
    assert_eq!(FROM_COMPLETION.load(SeqCst), MCFX_E_IN_CALLBACK as i32);
    // The handle is still live and works.
    let mut s =
        mcfx_stats { struct_size: std::mem::size_of::<mcfx_stats>() as u32, ..Default::default() };
    // `callback_panics` is counted once the panic was caught, after the
    // callback (which the loop above saw run) returned: wait for it.
    let until = Instant::now() + LIMIT;
    loop {
        // SAFETY: live handle.
        assert_eq!(unsafe { mcfx_get_stats(t, &mut s) }, OK);
        if s.callback_panics == 1 || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!((s.failed, s.callback_panics), (2, 1));
    // SAFETY: live handle, destroyed once.
    assert_eq!(unsafe { mcfx_destroy(t) }, OK);
}

#[test]
fn destroy_from_its_own_callbacks_is_refused_and_nothing_reaches_stderr() {
    let (ok, err) = run_child("destroy_in_callbacks", None, |_, _| {});
    assert!(ok, "child failed; stderr:\n{err}");
    assert!(err.is_empty(), "stderr must stay empty while MCFX_LOG is unset:\n{err}");
}

// ---- item 3: destroy while a resolver call blocks ---------------------------

static RESOLVER_ENTERED: AtomicBool = AtomicBool::new(false);
static RESOLVER_RETURNED: AtomicBool = AtomicBool::new(false);

unsafe extern "C-unwind" fn blocking_resolve(
    _: *mut c_void,
    _: u64,
    _: *mut c_char,
    _: usize,
) -> i32 {
    RESOLVER_ENTERED.store(true, SeqCst);
    // Blocks until the parent, having seen destroy's warning, answers.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    RESOLVER_RETURNED.store(true, SeqCst);
    -1
}

unsafe extern "C-unwind" fn ignore_complete(_: *mut c_void, _: u64, _: mcfx_status) {}

fn child_blocked_resolver() {
    let mut c = config(&Default::default(), &Default::default());
    c.on_complete = Some(ignore_complete);
    c.resolve = Some(blocking_resolve);
    c.shutdown_timeout_ms = 50;
    c.connect_timeout_ms = 100;
    let mut t = null_mut();
    // SAFETY: valid config; the callbacks use only statics.
    assert_eq!(unsafe { mcfx_create(&c, &mut t) }, OK);
    let buf = AlignedBuf::new(4096);
    // SAFETY: live handle; buf outlives it.
    assert_eq!(unsafe { mcfx_register(t, buf.addr() as *mut c_void, 4096) }, OK);
    let o = write(buf.addr(), 64, 3, 0x1000, 1);
    // SAFETY: live handle, one op.
    assert_eq!(unsafe { mcfx_submit(t, &o, 1, null_mut()) }, OK);
    let until = Instant::now() + LIMIT;
    while !RESOLVER_ENTERED.load(SeqCst) {
        assert!(Instant::now() < until, "resolver never called");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: live handle, destroyed once.
    assert_eq!(unsafe { mcfx_destroy(t) }, OK);
    assert!(RESOLVER_RETURNED.load(SeqCst), "destroy returned while the resolver still ran");
}

#[test]
fn destroy_waits_for_a_blocked_resolver_and_says_so() {
    let mut answered = false;
    let (ok, err) = run_child("blocked_resolver", Some("warn"), |line, stdin| {
        if !answered && line.contains("waiting for a resolver call") {
            answered = true;
            stdin.write_all(b"go\n").unwrap();
            stdin.flush().unwrap();
        }
    });
    assert!(answered, "destroy never warned that it waits; stderr:\n{err}");
    assert!(ok, "child failed; stderr:\n{err}");
}

// ---- item 6: stats in whole fields ------------------------------------------

#[test]
fn stats_with_a_size_ending_inside_a_field_write_whole_fields_only() {
    let n = Node::new();
    for size in [8u32, 12, 15, 17, 23] {
        let mut raw = [0xabu8; std::mem::size_of::<mcfx_stats>()];
        raw[..4].copy_from_slice(&size.to_ne_bytes());
        // SAFETY: a live handle and a buffer as large as the whole struct.
        let st = unsafe { mcfx_get_stats(n.t, raw.as_mut_ptr().cast()) };
        assert_eq!(st, OK);
        let whole = (size as usize / 8) * 8;
        assert_eq!(u32::from_ne_bytes(raw[..4].try_into().unwrap()) as usize, whole);
        assert!(
            raw[whole..].iter().all(|&b| b == 0xab),
            "size {size}: bytes past the last whole field ({whole}) were written"
        );
    }
}

// ---- item 7: one cause, one status ------------------------------------------

#[test]
fn ops_to_a_region_the_peer_unregistered_all_fail_remote_range() {
    let p = Pair::new(4096);
    p.a.submit_ok(&[p.write(64, 1)]);
    assert_eq!(p.a.done.wait_one(1, LIMIT), OK);
    // SAFETY: live handle; dst is registered on b.
    assert_eq!(unsafe { mcfx_unregister(p.b.t, p.dst.addr() as *mut c_void) }, OK);
    let dst = p.dst.addr() as u64;
    let ops = [
        write(p.src.addr(), 64, 1, dst, 2),
        read(p.src.addr(), 64, 1, dst, 3),
        write(p.src.addr(), 64, 1, dst, 4),
        read(p.src.addr(), 64, 1, dst, 5),
    ];
    for o in ops {
        p.a.submit_ok(&[o]);
        let st = p.a.done.wait_one(o.user_data, LIMIT);
        assert_eq!(st, MCFX_E_REMOTE_RANGE, "op {} (opcode {})", o.user_data, o.opcode);
    }
}

// Item 9 (remote-range misses share a refresh) is tests/remote_refresh.rs.

// ---- item 11: in_flight under contention ------------------------------------

#[test]
fn in_flight_never_goes_below_zero_while_submitting_and_polling() {
    let p = Pair::with(64 * 64, |c| c.queue_capacity = 1024);
    let stop = AtomicBool::new(false);
    let p = &p;
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut polls = 0u64;
            while !stop.load(SeqCst) {
                let mut st = mcfx_stats {
                    struct_size: std::mem::size_of::<mcfx_stats>() as u32,
                    ..Default::default()
                };
                // SAFETY: live handle, sized struct.
                let rc = unsafe { mcfx_get_stats(p.a.t, &mut st) };
                assert_eq!(rc, OK, "{}", last_error());
                assert!(
                    st.in_flight <= st.submitted,
                    "in_flight {} > submitted {}",
                    st.in_flight,
                    st.submitted
                );
                polls += 1;
            }
            polls
        });
        let ops: Vec<mcfx_op> = (0..64)
            .map(|i| write(p.src.addr() + i * 64, 64, 1, p.dst.addr() as u64 + i as u64 * 64, 0))
            .collect();
        let until = Instant::now() + Duration::from_secs(5);
        let mut batches = 0u64;
        while batches < 5000 && Instant::now() < until {
            let (st, _) = p.a.submit(&ops);
            assert!(st == OK || st == MCFX_E_QUEUE_FULL, "{st:?}");
            if st == OK {
                batches += 1;
            } else {
                std::thread::yield_now();
            }
        }
        stop.store(true, SeqCst);
        assert!(poller.join().unwrap() > 0);
    });
    let until = Instant::now() + LIMIT;
    while p.a.stats().in_flight > 0 {
        assert!(Instant::now() < until, "ops never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
}
