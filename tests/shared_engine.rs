//! Several transports in one process are independent: they share one
//! FlagCX engine (FlagCX registration is process-wide), and a registration
//! is counted per base address across them, so destroying or unregistering
//! in one transport never removes memory another still uses.

mod common;

use std::ffi::c_void;

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
