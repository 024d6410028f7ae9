//! Zero heap allocations per op in steady state, counted by a global
//! allocator over every Rust thread of the process (callers, the progress
//! thread, connector threads).
//!
//! Not counted: C++ allocations inside FlagCX (the provider, and the vector
//! copies FlagCX's by-value `ReadVector` signature forces on every caller).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static COMPLETED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C-unwind" fn count(_ctx: *mut c_void, _ud: u64, st: mcfx_status) {
    if st == mcfx_status::MCFX_OK {
        COMPLETED.fetch_add(1, SeqCst);
    } else {
        FAILED.fetch_add(1, SeqCst);
    }
}

unsafe extern "C-unwind" fn resolve(
    ctx: *mut c_void,
    _peer: u64,
    buf: *mut c_char,
    cap: usize,
) -> i32 {
    // SAFETY: ctx is the endpoint CString below.
    let ep = unsafe { std::ffi::CStr::from_ptr(ctx as *const c_char) }.to_bytes_with_nul();
    if ep.len() > cap {
        return -1;
    }
    // SAFETY: buf is writable for cap >= ep.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(ep.as_ptr(), buf.cast::<u8>(), ep.len()) };
    0
}

fn create(ctx: *mut c_void) -> *mut mcfx_transport {
    let mut c = std::mem::MaybeUninit::<mcfx_config>::uninit();
    // SAFETY: init writes the whole struct; then a valid config goes to create.
    unsafe {
        mcfx_config_init(c.as_mut_ptr(), std::mem::size_of::<mcfx_config>());
        let mut c = c.assume_init();
        c.on_complete = Some(count);
        c.resolve = Some(resolve);
        c.resolve_ctx = ctx;
        let mut t = std::ptr::null_mut();
        assert_eq!(mcfx_create(&c, &mut t), mcfx_status::MCFX_OK);
        t
    }
}

/// Submits `n` ops in calls of `per` (1 to 16; alternating write/read),
/// waiting for each call's ops; allocates nothing itself.
fn run(t: *mut mcfx_transport, ops: &mut [mcfx_op; 16], n: u64, per: usize) {
    let mut sent = 0;
    while sent < n {
        let target = COMPLETED.load(SeqCst) + per as u64;
        for (i, o) in ops[..per].iter_mut().enumerate() {
            o.opcode = if (sent / 16 + i as u64) % 2 == 0 { MCFX_OP_WRITE } else { MCFX_OP_READ };
            o.user_data = sent + i as u64;
        }
        let mut accepted = 0;
        // SAFETY: live handle, `per` ops.
        let st = unsafe { mcfx_submit(t, ops.as_ptr(), per, &mut accepted) };
        assert_eq!((st, accepted), (mcfx_status::MCFX_OK, per));
        let until = Instant::now() + Duration::from_secs(30);
        while COMPLETED.load(SeqCst) < target {
            assert!(Instant::now() < until && FAILED.load(SeqCst) == 0);
            std::hint::spin_loop();
        }
        sent += per as u64;
    }
}

#[test]
fn steady_state_ops_do_not_allocate() {
    let b = create(std::ptr::null_mut());
    let mut ep = [0u8; 64];
    let mut len = 0;
    // SAFETY: live handle, 64-byte buffer.
    unsafe { mcfx_local_endpoint(b, ep.as_mut_ptr().cast(), 64, &mut len) };
    let a = create(ep.as_mut_ptr().cast());
    let src = AlignedBuf::new(16 * 4096);
    let dst = AlignedBuf::new(16 * 4096);
    // SAFETY: live handles; the buffers outlive the transports.
    unsafe {
        assert_eq!(mcfx_register(a, src.addr() as _, src.len()), mcfx_status::MCFX_OK);
        assert_eq!(mcfx_register(b, dst.addr() as _, dst.len()), mcfx_status::MCFX_OK);
    }
    let mut ops = [mcfx_op {
        opcode: MCFX_OP_WRITE,
        reserved: 0,
        local_addr: std::ptr::null_mut(),
        length: 4096,
        peer_id: 1,
        remote_addr: 0,
        user_data: 0,
    }; 16];
    for (i, o) in ops.iter_mut().enumerate() {
        o.local_addr = (src.addr() + i * 4096) as *mut c_void;
        o.remote_addr = (dst.addr() + i * 4096) as u64;
    }
    run(a, &mut ops, 20_000, 16); // warm-up: connect, grow every reusable buffer
    run(a, &mut ops, 2_000, 1); // and the path of an op submitted alone
    let before = ALLOCS.load(SeqCst);
    run(a, &mut ops, 100_000, 16);
    run(a, &mut ops, 20_000, 1);
    let allocs = ALLOCS.load(SeqCst) - before;
    // SAFETY: live handles, destroyed once.
    unsafe {
        mcfx_destroy(a);
        mcfx_destroy(b);
    }
    assert_eq!(allocs, 0, "{allocs} heap allocations over 120 000 steady-state ops");
    assert_eq!(FAILED.load(SeqCst), 0);
}
