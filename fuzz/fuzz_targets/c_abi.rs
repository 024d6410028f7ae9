//! Fuzzes the register / unregister / submit paths of the C ABI.
//!
//! Each input is a little program over one live transport pair: register or
//! unregister sub-ranges of an arena, and submit ops with arbitrary opcodes,
//! addresses, lengths, peers and remote addresses. The library must never
//! crash, must answer every call with a defined status, must follow the
//! submit's prefix rule (the ops before the first bad one are accepted, the
//! bad one is `ops[*accepted]`, none after it is), and must complete every
//! accepted op exactly once and no other.
//! Only arena memory is ever registered, so the library's own checks are what
//! stands between an arbitrary address and a memory access.
#![no_main]

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use libfuzzer_sys::fuzz_target;
use mooncake_flagcx::ffi::*;
use mooncake_flagcx::Status;

const ARENA: usize = 1 << 20;
const MAX_OPS: usize = 1 << 16;

struct World {
    a: usize, // *mut mcfx_transport
    arena: AlignedBuf,
    peer_arena: AlignedBuf,
    /// Completions per user_data (op ids are unique per process).
    seen: Vec<AtomicU8>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    completed: AtomicU64,
    /// Ids of the ops a submit did not accept (checked once the input's
    /// accepted ops completed).
    refused: std::sync::Mutex<Vec<u64>>,
}

unsafe extern "C-unwind" fn on_complete(ctx: *mut c_void, user_data: u64, status: mcfx_status) {
    // SAFETY: ctx is the 'static World.
    let w = unsafe { &*(ctx as *const World) };
    assert!(Status::from_i32(status as i32).is_some(), "undefined status {status:?}");
    let prev = w.seen[user_data as usize % MAX_OPS].fetch_add(1, SeqCst);
    assert_eq!(prev, 0, "op {user_data} completed twice");
    w.completed.fetch_add(1, SeqCst);
}

unsafe extern "C-unwind" fn resolve(
    ctx: *mut c_void,
    peer: u64,
    buf: *mut std::ffi::c_char,
    cap: usize,
) -> i32 {
    // SAFETY: ctx is the endpoint string of the peer transport, leaked.
    let ep =
        unsafe { std::ffi::CStr::from_ptr(ctx as *const std::ffi::c_char) }.to_bytes_with_nul();
    if peer != 1 || ep.len() > cap {
        return -1;
    }
    // SAFETY: buf has cap >= ep.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(ep.as_ptr(), buf.cast(), ep.len()) };
    0
}

fn create(on: *mut c_void, resolve_ctx: *mut c_void) -> *mut mcfx_transport {
    let mut c = std::mem::MaybeUninit::<mcfx_config>::uninit();
    // SAFETY: config_init fills the struct; then a valid config.
    unsafe {
        mcfx_config_init(c.as_mut_ptr(), std::mem::size_of::<mcfx_config>());
        let mut c = c.assume_init();
        c.on_complete = Some(on_complete);
        c.complete_ctx = on;
        c.resolve = Some(resolve);
        c.resolve_ctx = resolve_ctx;
        c.op_timeout_ms = 2000;
        c.connect_timeout_ms = 2000;
        c.max_slice_bytes = 4096; // long ops get split
        let mut t = std::ptr::null_mut();
        assert_eq!(mcfx_create(&c, &mut t), mcfx_status::MCFX_OK);
        t
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<&'static World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let w: &'static mut World = Box::leak(Box::new(World {
            a: 0,
            arena: AlignedBuf::new(ARENA),
            peer_arena: AlignedBuf::new(ARENA),
            seen: (0..MAX_OPS).map(|_| AtomicU8::new(0)).collect(),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            refused: std::sync::Mutex::new(Vec::new()),
        }));
        let ctx = w as *mut World as *mut c_void;
        let b = create(ctx, std::ptr::null_mut());
        let mut ep = vec![0u8; 128];
        let mut len = 0;
        // SAFETY: live handle, 128-byte buffer.
        unsafe { mcfx_local_endpoint(b, ep.as_mut_ptr().cast(), ep.len(), &mut len) };
        // SAFETY: the peer arena lives forever.
        unsafe { mcfx_register(b, w.peer_arena.addr() as *mut c_void, ARENA) };
        let ep: &'static [u8] = Box::leak(ep.into_boxed_slice());
        w.a = create(ctx, ep.as_ptr() as *mut c_void) as usize;
        w
    })
}

/// Reads little-endian numbers off the input.
struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn u64(&mut self) -> Option<u64> {
        let n = self.0.len().min(8);
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Some(u64::from_le_bytes(b))
    }
}

/// An address that is usually near the arenas (so checks get exercised at
/// their edges) and sometimes anything at all.
fn addr(w: &World, raw: u64) -> u64 {
    let base = if raw & 1 == 0 { w.arena.addr() } else { w.peer_arena.addr() } as u64;
    match raw >> 62 {
        0 => raw >> 2,
        _ => base.wrapping_add((raw >> 2) % (ARENA as u64 + 8192)).wrapping_sub(4096),
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t = w.a as *mut mcfx_transport;
    let mut input = Input(data);
    while let Some(cmd) = input.u64() {
        let (x, y) = (input.u64().unwrap_or(0), input.u64().unwrap_or(0));
        match cmd % 3 {
            0 => {
                // Register a sub-range of the arena (always valid memory).
                let off = (x as usize) % ARENA;
                let len = (y as usize) % (ARENA - off + 1);
                // SAFETY: inside the arena, which lives forever.
                let st = unsafe { mcfx_register(t, (w.arena.addr() + off) as *mut c_void, len) };
                assert!(Status::from_i32(st as i32).is_some());
            }
            1 => {
                // SAFETY: unregister only compares addresses.
                let st = unsafe { mcfx_unregister(t, addr(w, x) as *mut c_void) };
                assert!(Status::from_i32(st as i32).is_some());
                // And a caller's progress pass, between the other calls.
                let mut done = u64::MAX;
                // SAFETY: a live handle; `done` is writable.
                let st = unsafe { mcfx_progress(t, &mut done) };
                assert_eq!(st, mcfx_status::MCFX_OK);
                assert!(done <= w.accepted.load(SeqCst));
            }
            _ => {
                let n = (cmd >> 8) as usize % 8 + 1;
                let mut ops = Vec::with_capacity(n);
                for _ in 0..n {
                    let (r, l) = (input.u64().unwrap_or(0), input.u64().unwrap_or(0));
                    ops.push(mcfx_op {
                        opcode: (x as u32) % 3, // 2 is invalid on purpose
                        reserved: (y as u32) & u32::from(y >> 60 == 0xf),
                        local_addr: addr(w, y ^ l) as *mut c_void,
                        length: if l >> 63 == 1 { l } else { l % (64 << 10) },
                        peer_id: if r & 3 == 0 { r >> 2 } else { 1 },
                        remote_addr: addr(w, r),
                        user_data: {
                            // Ids wrap the table only across inputs, and every
                            // input ends with all its ops completed.
                            let id = w.next_id.fetch_add(1, SeqCst);
                            w.seen[id as usize % MAX_OPS].store(0, SeqCst);
                            id
                        },
                    });
                }
                let mut accepted = usize::MAX;
                // SAFETY: a live handle and n ops.
                let st = unsafe { mcfx_submit(t, ops.as_ptr(), n, &mut accepted) };
                assert!(Status::from_i32(st as i32).is_some());
                assert!(accepted <= n);
                // The prefix rule: none of the accepted ops is bad on its
                // face; on a per-op error ops[accepted] is the bad op (on
                // its face, or its local range is not registered).
                assert!(ops[..accepted].iter().all(|o| bad_on_its_face(o).is_none()));
                match st {
                    mcfx_status::MCFX_OK => assert_eq!(accepted, n),
                    mcfx_status::MCFX_E_QUEUE_FULL => assert!(accepted < n),
                    _ => {
                        assert!(accepted < n, "{st:?} with every op accepted");
                        let face = bad_on_its_face(&ops[accepted]);
                        let want = face.unwrap_or(mcfx_status::MCFX_E_NOT_REGISTERED);
                        assert_eq!(st, want, "ops[{accepted}] is not the bad op");
                    }
                }
                w.accepted.fetch_add(accepted as u64, SeqCst);
                w.refused.lock().unwrap().extend(ops[accepted..].iter().map(|o| o.user_data));
            }
        }
    }
    // Every accepted op completes (bounded: deadlines are 2 s).
    let until = Instant::now() + Duration::from_secs(10);
    while w.completed.load(SeqCst) < w.accepted.load(SeqCst) {
        assert!(Instant::now() < until, "accepted ops never completed");
        std::thread::sleep(Duration::from_micros(100));
    }
    // And no op that was not accepted completed.
    for id in w.refused.lock().unwrap().drain(..) {
        assert_eq!(w.seen[id as usize % MAX_OPS].load(SeqCst), 0, "refused op {id} completed");
    }
});

/// The status of an op that is bad whatever is registered, or None.
fn bad_on_its_face(o: &mcfx_op) -> Option<mcfx_status> {
    let (local, len) = (o.local_addr as u64, o.length);
    let opcode_ok = o.opcode == MCFX_OP_READ || o.opcode == MCFX_OP_WRITE;
    if !opcode_ok || o.reserved != 0 || len == 0 || local == 0 {
        Some(mcfx_status::MCFX_E_INVALID_ARGUMENT)
    } else if usize::try_from(len).ok().and_then(|l| (local as usize).checked_add(l)).is_none()
        || o.remote_addr.checked_add(len).is_none()
    {
        Some(mcfx_status::MCFX_E_OVERFLOW)
    } else {
        None
    }
}
