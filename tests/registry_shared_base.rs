//! A base registered by two transports of one process, on a FlagCX that
//! hands out a new id when a registered base is registered again (the
//! software provider's `FLAGCX_SW_NEW_ID_ON_REREGISTER`, as a FlagCX built on
//! `ibv_reg_mr` behaves): no transport is left with a stale id, and no
//! registration outlives the transports that vouch for its memory. Its own
//! test binary: the knob is process-wide.

mod common;

use std::ffi::c_void;

use common::*;
use flagcx_sys::sw::{self, Knob};
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

/// Turns the knob on until dropped.
struct NewIdOnReregister;

impl NewIdOnReregister {
    fn on() -> NewIdOnReregister {
        assert!(sw::set_knob(Knob::NewIdOnReregister, 1), "the software provider");
        NewIdOnReregister
    }
}

impl Drop for NewIdOnReregister {
    fn drop(&mut self) {
        sw::set_knob(Knob::NewIdOnReregister, 0);
    }
}

fn register(n: &Node, addr: usize, len: usize) -> mcfx_status {
    // SAFETY: live handle; the buffer outlives the node's registrations.
    unsafe { mcfx_register(n.t, addr as *mut c_void, len) }
}

fn unregister(n: &Node, addr: usize) -> mcfx_status {
    // SAFETY: live handle.
    unsafe { mcfx_unregister(n.t, addr as *mut c_void) }
}

/// The pair's initiator writes 64 bytes to `remote` over a fresh
/// connection (a new peer id), so the peer's regions are read now.
fn remote_write(p: &Pair, peer: u64, remote: usize) -> mcfx_status {
    p.a.knows(peer, &p.b);
    p.a.submit_ok(&[write(p.src.addr(), 64, peer, remote as u64, peer)]);
    p.a.done.wait_one(peer, LIMIT)
}

/// `n` writes 64 bytes from `local` to the pair's `dst`.
fn local_write(p: &Pair, n: &Node, local: usize, user_data: u64) -> mcfx_status {
    n.submit_ok(&[write(local, 64, 1, p.dst.addr() as u64, user_data)]);
    n.done.wait_one(user_data, LIMIT)
}

#[test]
fn a_base_shared_with_two_lengths_leaves_no_stale_or_leaked_registration() {
    let _serial = serial();
    let _knob = NewIdOnReregister::on();
    let p = Pair::new(4096);
    let mem = AlignedBuf::new(8192);
    let (m, tail) = (mem.addr(), mem.addr() + 4096);
    let mut peer = 100;
    let mut next_peer = || {
        peer += 1;
        peer
    };
    for (first_len, second_len) in [(4096, 8192), (8192, 4096)] {
        let what = format!("{first_len} then {second_len}");
        let (t1, t2) = (Node::new(), Node::new());
        t1.knows(1, &p.b);
        t2.knows(1, &p.b);
        assert_eq!(register(&t1, m, first_len), OK, "{what}: {}", last_error());
        let second = register(&t2, m, second_len);
        let refused = last_error();
        // Each transport's own ops work with the id it got.
        assert_eq!(local_write(&p, &t1, m, 1), OK, "{what}: t1 after t2 registered");
        if second == OK {
            assert_eq!(local_write(&p, &t2, m + second_len - 64, 2), OK, "{what}: t2");
        }
        // The longer registration's owner leaves first: its tail must close.
        let owners = [(&t1, first_len, true), (&t2, second_len, second == OK)];
        let [longer, shorter] =
            if first_len > second_len { owners } else { [owners[1], owners[0]] };
        if longer.2 {
            assert_eq!(unregister(longer.0, m), OK, "{what}");
        }
        assert_eq!(
            remote_write(&p, next_peer(), tail),
            mcfx_status::MCFX_E_REMOTE_RANGE,
            "{what}: the tail stayed registered after its only owner left"
        );
        if shorter.2 {
            assert_eq!(local_write(&p, shorter.0, m, 3), OK, "{what}: the shorter owner's id");
            assert_eq!(remote_write(&p, next_peer(), m), OK, "{what}: the shorter owner's region");
            assert_eq!(unregister(shorter.0, m), OK, "{what}");
        }
        assert_eq!(
            remote_write(&p, next_peer(), m),
            mcfx_status::MCFX_E_REMOTE_RANGE,
            "{what}: a registration outlived both owners"
        );
        // The documented rule that makes this hold for any FlagCX.
        assert_eq!(second, mcfx_status::MCFX_E_ALREADY_REGISTERED, "{what}");
        assert!(refused.contains("same length"), "{what}: {refused}");
    }
    assert_no_violations();
}

#[test]
fn a_base_shared_with_one_length_stays_registered_until_its_last_owner_leaves() {
    let _serial = serial();
    let _knob = NewIdOnReregister::on();
    let p = Pair::new(4096);
    let mem = AlignedBuf::new(4096);
    let (t1, t2) = (Node::new(), Node::new());
    t1.knows(1, &p.b);
    t2.knows(1, &p.b);
    assert_eq!(register(&t1, mem.addr(), 4096), OK);
    assert_eq!(register(&t2, mem.addr(), 4096), OK, "{}", last_error());
    assert_eq!(unregister(&t1, mem.addr()), OK);
    assert_eq!(local_write(&p, &t2, mem.addr(), 1), OK, "t2 keeps the registration");
    assert_eq!(remote_write(&p, 200, mem.addr()), OK);
    assert_eq!(unregister(&t2, mem.addr()), OK);
    assert_eq!(remote_write(&p, 201, mem.addr()), mcfx_status::MCFX_E_REMOTE_RANGE);
    assert_no_violations();
}
