//! Ops to a region a peer process unregistered (still mapped there) never
//! complete `MCFX_OK` and never change its bytes: the provider fails the
//! transfer (the peer's deregistration revoked the key this side learned
//! at connect time, see flagcx-sys/provider/src/keys.cpp) and the transport
//! judges the failure against a connection made after the op was submitted
//! (`judge_failed` in src/progress/inflight.rs): the range is gone there, so
//! `MCFX_E_REMOTE_RANGE`, which later ops get from their own lookup on
//! their refresh. A region the peer registered again (a new key) is reached
//! by the first op after: its failed transfer is resubmitted once on that
//! fresh connection.

mod common;

use common::*;
use flagcx_sys::testing::AlignedBuf;

use mooncake_flagcx::ffi::mcfx_status::*;

const LEN: u64 = 4096;

/// Fills `buf` with the pattern of `seed`.
fn fill(buf: &AlignedBuf, seed: u64) {
    // SAFETY: no transfer touches the buffer while the test looks at it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.addr() as *mut u8, buf.len()) };
    pattern::fill(bytes, seed);
}

fn sum(buf: &AlignedBuf) -> u64 {
    // SAFETY: as in fill.
    pattern::checksum(unsafe { std::slice::from_raw_parts(buf.addr() as *const u8, buf.len()) })
}

#[test]
fn ops_to_a_region_a_peer_process_unregistered_fail_and_leave_its_bytes_alone() {
    let _g = serial();
    let mut peer = PeerProcess::spawn(1 << 20);
    let a = Node::new();
    a.dir.insert(1, &peer.endpoint);
    let src = AlignedBuf::new(LEN as usize);
    let dst = AlignedBuf::new(LEN as usize);
    a.register(&src);
    a.register(&dst);

    // Connected, and the region works.
    fill(&src, 1);
    a.submit_ok(&[write(src.addr(), LEN, 1, peer.addr, 0)]);
    assert_eq!(a.done.wait_one(0, LIMIT), OK);
    assert_eq!(peer.sum(0, LEN), sum(&src));

    assert_eq!(peer.cmd(&format!("fill 2 0 {LEN}")), "ok");
    let before = peer.sum(0, LEN);
    assert_eq!(peer.cmd("dereg"), "ok"); // the memory stays mapped in the peer
    fill(&src, 3);
    fill(&dst, 4);
    let mine = sum(&dst);
    for ud in 1..=6 {
        let op = if ud % 2 == 1 {
            write(src.addr(), LEN, 1, peer.addr, ud)
        } else {
            read(dst.addr(), LEN, 1, peer.addr, ud)
        };
        a.submit_ok(&[op]);
        let st = a.done.wait_one(ud, LIMIT);
        assert_eq!(st, MCFX_E_REMOTE_RANGE, "op {ud} (opcode {})", op.opcode);
        assert_eq!(peer.sum(0, LEN), before, "op {ud}: the peer's bytes changed");
        assert_eq!(sum(&dst), mine, "op {ud}: a read moved bytes");
    }
    a.done.exactly_once();
    assert_no_violations();
}

#[test]
fn a_region_the_peer_registers_again_is_reached_through_a_fresh_connection() {
    let _g = serial();
    let mut peer = PeerProcess::spawn(LEN as usize);
    let a = Node::new();
    a.dir.insert(1, &peer.endpoint);
    let src = AlignedBuf::new(LEN as usize);
    a.register(&src);
    fill(&src, 5);
    a.submit_ok(&[write(src.addr(), LEN, 1, peer.addr, 0)]);
    assert_eq!(a.done.wait_one(0, LIMIT), OK);

    // Unregistered and registered again at the same base: a new key. The
    // transport's connection still holds the old one.
    assert_eq!(peer.cmd("dereg"), "ok");
    assert!(peer.cmd("rereg").starts_with("ok mr="));
    fill(&src, 7);
    // The transfer through the revoked key fails; a connection made after
    // the op was submitted describes the range (under its new key), and the
    // op is resubmitted on it once.
    a.submit_ok(&[write(src.addr(), LEN, 1, peer.addr, 1)]);
    assert_eq!(a.done.wait_one(1, LIMIT), OK, "the first op after the re-registration");
    assert_eq!(peer.sum(0, LEN), sum(&src));
    fill(&src, 8);
    a.submit_ok(&[write(src.addr(), LEN, 1, peer.addr, 2)]);
    assert_eq!(a.done.wait_one(2, LIMIT), OK, "the next op");
    assert_eq!(peer.sum(0, LEN), sum(&src));
    a.done.exactly_once();
    assert_no_violations();
}
