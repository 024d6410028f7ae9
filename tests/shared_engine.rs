//! Several transports in one process are independent: they share one
//! FlagCX engine (FlagCX registration is process-wide), and a registration
//! is counted per base address across them, so destroying or unregistering
//! in one transport never removes memory another still uses.

mod common;

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering::SeqCst};

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

#[test]
fn destroying_one_transport_leaves_the_others_memory_registered() {
    let p = Pair::new(4096);
    p.a.submit_ok(&[p.write(64, 1)]);
    assert_eq!(p.a.done.wait_one(1, LIMIT), OK);
    for round in 0..3u64 {
        let mut c = Node::new();
        let mine = AlignedBuf::new(4096);
        c.register(&mine);
        assert_eq!(c.destroy(), OK);
        // The pair's regions survive: on the connection made before, and on
        // a fresh one (a's first op to a new peer id connects again).
        p.a.knows(10 + round, &p.b);
        for (peer, ud) in [(1, 100 + 2 * round), (10 + round, 101 + 2 * round)] {
            p.a.submit_ok(&[write(p.src.addr(), 64, peer, p.dst.addr() as u64, ud)]);
            assert_eq!(p.a.done.wait_one(ud, LIMIT), OK, "round {round}, peer {peer}");
        }
    }
}

#[test]
fn memory_registered_in_two_transports_stays_until_both_unregister() {
    let p = Pair::new(4096);
    let mut c = Node::new();
    // The same buffers, registered again in a third transport.
    c.register(&p.src);
    c.register(&p.dst);
    // SAFETY: live handle; both bases are registered on c.
    unsafe {
        assert_eq!(mcfx_unregister(c.t, p.src.addr() as *mut c_void), OK);
        assert_eq!(mcfx_unregister(c.t, p.dst.addr() as *mut c_void), OK);
    }
    p.a.submit_ok(&[p.write(64, 1)]);
    assert_eq!(p.a.done.wait_one(1, LIMIT), OK);
    // And the other way round: c keeps them while a and b let go.
    c.register(&p.src);
    c.knows(1, &p.b);
    // SAFETY: live handle; src is registered on a.
    assert_eq!(unsafe { mcfx_unregister(p.a.t, p.src.addr() as *mut c_void) }, OK);
    c.submit_ok(&[write(p.src.addr(), 64, 1, p.dst.addr() as u64, 2)]);
    assert_eq!(c.done.wait_one(2, LIMIT), OK);
    assert_eq!(c.destroy(), OK);
}

static VICTIM: AtomicPtr<mcfx_transport> = AtomicPtr::new(std::ptr::null_mut());
static VICTIM_DESTROYED: AtomicI32 = AtomicI32::new(-1);

/// The fixture's resolver, except that resolving peer 9 destroys the
/// transport in `VICTIM` (another transport than the caller's).
unsafe extern "C-unwind" fn destroying_resolver(
    ctx: *mut c_void,
    peer: u64,
    buf: *mut c_char,
    cap: usize,
) -> i32 {
    if peer == 9 {
        let victim = VICTIM.swap(std::ptr::null_mut(), SeqCst);
        // SAFETY: a live handle of another transport, destroyed once.
        VICTIM_DESTROYED.store(unsafe { mcfx_destroy(victim) } as i32, SeqCst);
        return -1;
    }
    // SAFETY: ctx is the pair's Arc<Directory>, alive while the pair is;
    // buf and cap are the transport's.
    unsafe { resolve(ctx, peer, buf, cap) }
}

#[test]
fn a_transport_destroyed_from_anothers_resolver_leaves_its_ops_intact() {
    let p = Pair::with(64 * 64, |c| c.resolve = Some(destroying_resolver));
    let mut victim = Node::new();
    let mine = AlignedBuf::new(4096);
    victim.register(&mine);
    VICTIM.store(std::mem::replace(&mut victim.t, std::ptr::null_mut()), SeqCst);
    p.a.submit_ok(&[p.write(64, 0)]);
    assert_eq!(p.a.done.wait_one(0, LIMIT), OK);
    // Ops in flight to b while resolving peer 9 destroys the victim.
    let mut ops: Vec<mcfx_op> = (0..64u64)
        .map(|i| write(p.src.addr() + i as usize * 64, 64, 1, p.dst.addr() as u64 + i * 64, 1 + i))
        .collect();
    ops.insert(32, write(p.src.addr(), 64, 9, 0x1000, 100));
    p.a.submit_ok(&ops);
    assert_eq!(p.a.done.wait_one(100, LIMIT), mcfx_status::MCFX_E_RESOLVE);
    assert_eq!(VICTIM_DESTROYED.load(SeqCst), OK as i32);
    for ud in 1..=64 {
        assert_eq!(p.a.done.wait_one(ud, LIMIT), OK, "op {ud}");
    }
    p.a.submit_ok(&[p.write(64, 200)]);
    assert_eq!(p.a.done.wait_one(200, LIMIT), OK, "after the victim is gone");
}

/// FlagCX keeps one registration per base, and what a second registration
/// of a base does differs between FlagCX builds: transports share a base
/// only with one length (see src/process_engine.rs), another length is refused and
/// changes nothing.
#[test]
fn a_base_another_transport_registered_with_another_length_is_refused() {
    let p = Pair::new(4096);
    let c = Node::new();
    for len in [2048, 8192] {
        // SAFETY: live handle; the pair's buffer is only read by this call.
        let st = unsafe { mcfx_register(c.t, p.src.addr() as *mut c_void, len) };
        assert_eq!(st, mcfx_status::MCFX_E_ALREADY_REGISTERED, "length {len}");
        let msg = last_error();
        assert!(msg.contains("length 4096") && msg.contains("same length"), "{msg}");
    }
    // The pair's registration is as it was.
    p.a.submit_ok(&[p.write(4096, 1)]);
    assert_eq!(p.a.done.wait_one(1, LIMIT), OK);
}
