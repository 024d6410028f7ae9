//! A peer process's deregistration revokes the key its connections learned
//! (as on RDMA): a transfer through a revoked key fails before any byte
//! moves, in copy mode and in NIC mode, even though the memory is still
//! mapped in the peer. A region registered again at the same base has a new
//! key, reachable only through a connection made after it.

mod common;

use common::{read as read_entries, serial, wait, write as write_entries, Buf, Peer, LIMIT};
use flagcx_sys::{pattern, sw, Conn, Engine, Poll};

const LEN: usize = 4096;

fn connect(engine: &Engine, peer: &Peer) -> Conn {
    engine.connect(c"127.0.0.1", 0, peer.port()).expect("connect")
}

/// Writes `src` to the start of the peer's first buffer through `conn`.
fn write(conn: &Conn, src: &Buf, raddr: u64) -> Poll {
    let id = write_entries(conn, &[src.entry(0, LEN, raddr)]).expect("the snapshot describes it");
    wait(conn, id, LIMIT)
}

fn read(conn: &Conn, dst: &Buf, raddr: u64) -> Poll {
    let id = read_entries(conn, &[dst.entry(0, LEN, raddr)]).expect("the snapshot describes it");
    wait(conn, id, LIMIT)
}

#[test]
fn write_and_read_through_a_key_the_peer_process_revoked_fail_and_move_nothing() {
    let _g = serial();
    let mut peer = Peer::spawn(1 << 20);
    let engine = Engine::create().unwrap();
    let conn = connect(&engine, &peer);
    let mut src = Buf::new(&engine, LEN);
    let mut dst = Buf::new(&engine, LEN);
    pattern::fill(src.bytes(), 1);
    assert_eq!(write(&conn, &src, peer.addr), Poll::Done, "the key works before");
    assert_eq!(peer.sum(0, LEN as u64), pattern::checksum(src.bytes()));

    assert_eq!(peer.cmd(&format!("fill 2 0 {LEN}")), "ok");
    let before = peer.sum(0, LEN as u64);
    assert_eq!(peer.cmd("dereg"), "ok"); // still mapped in the peer
    pattern::fill(src.bytes(), 3);
    assert_eq!(write(&conn, &src, peer.addr), Poll::Failed, "write through a revoked key");
    assert_eq!(peer.sum(0, LEN as u64), before, "the peer's bytes are unchanged");
    pattern::fill(dst.bytes(), 4);
    let mine = pattern::checksum(dst.bytes());
    assert_eq!(read(&conn, &dst, peer.addr), Poll::Failed, "read through a revoked key");
    assert_eq!(pattern::checksum(dst.bytes()), mine, "the read moved nothing");
    // A connection made now does not describe the region at all.
    let fresh = connect(&engine, &peer);
    assert!(fresh.make_desc(peer.addr, LEN as u32).is_err());
    common::assert_no_violations();
}

#[test]
fn one_revoked_entry_fails_a_vector_transfer_before_any_entry_moves() {
    let _g = serial();
    let mut peer = Peer::spawn(LEN);
    let other = peer.cmd(&format!("reg {LEN}"));
    let other: u64 = other
        .strip_prefix("reg addr=0x")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("peer said {other:?}"));
    let engine = Engine::create().unwrap();
    let conn = connect(&engine, &peer);
    let mut src = Buf::new(&engine, 2 * LEN);
    pattern::fill(src.bytes(), 5);
    assert_eq!(peer.cmd(&format!("fill 6 0 {LEN}")), "ok");
    let before = peer.sum(0, LEN as u64);
    assert_eq!(peer.cmd("dereg 1"), "ok");
    let id = write_entries(&conn, &[src.entry(0, LEN, peer.addr), src.entry(LEN, LEN, other)])
        .expect("the snapshot describes both");
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    assert_eq!(peer.sum(0, LEN as u64), before, "the live entry did not land either");
    common::assert_no_violations();
}

#[test]
fn a_region_registered_again_at_the_same_base_is_reached_only_through_a_new_connection() {
    let _g = serial();
    let mut peer = Peer::spawn(LEN);
    let engine = Engine::create().unwrap();
    let old = connect(&engine, &peer);
    let old_key = old.make_desc(peer.addr, LEN as u32).unwrap();
    let mut src = Buf::new(&engine, LEN);
    assert_eq!(peer.cmd(&format!("fill 7 0 {LEN}")), "ok");
    let before = peer.sum(0, LEN as u64);
    assert_eq!(peer.cmd("dereg"), "ok");
    assert!(peer.cmd("rereg").starts_with("ok mr="));

    // The old connection's snapshot still describes the base, with the old
    // key: revoked, so the transfer fails and nothing lands.
    pattern::fill(src.bytes(), 8);
    assert_eq!(write(&old, &src, peer.addr), Poll::Failed);
    assert_eq!(peer.sum(0, LEN as u64), before);

    // A new connection learns the new key and reaches the region.
    let fresh = connect(&engine, &peer);
    let new_key = fresh.make_desc(peer.addr, LEN as u32).unwrap();
    assert_ne!(new_key, old_key, "a new registration has a new key");
    assert_eq!(write(&fresh, &src, peer.addr), Poll::Done);
    assert_eq!(peer.sum(0, LEN as u64), pattern::checksum(src.bytes()));

    // The old snapshot keeps failing.
    pattern::fill(src.bytes(), 9);
    assert_eq!(write(&old, &src, peer.addr), Poll::Failed);
    assert_ne!(peer.sum(0, LEN as u64), pattern::checksum(src.bytes()));
    common::assert_no_violations();
}

#[test]
fn nic_mode_fails_transfers_through_a_revoked_key_too() {
    let _g = serial();
    let mut peer = Peer::spawn(LEN);
    let engine = Engine::create().unwrap();
    let conn = connect(&engine, &peer);
    let src = Buf::new(&engine, LEN);
    assert!(sw::set_knob(sw::Knob::NicGbps, 200));
    assert_eq!(write(&conn, &src, peer.addr), Poll::Done);
    assert_eq!(peer.cmd("dereg"), "ok");
    assert_eq!(write(&conn, &src, peer.addr), Poll::Failed);
    assert_eq!(read(&conn, &src, peer.addr), Poll::Failed);
    common::assert_no_violations();
}

/// A forked child has a key table of its own: its deregistration of a region
/// it inherited revokes nothing the parent's peers use.
#[test]
fn a_forked_childs_deregistration_leaves_the_parents_keys_alone() {
    let _g = serial();
    let mut peer = Peer::spawn(LEN);
    let engine = Engine::create().unwrap();
    engine.start_rpc_server().unwrap();
    let mut ours = Buf::new(&engine, LEN);
    let (mr, addr) = (ours.mr, ours.addr());
    // SAFETY: fork; the child makes provider calls only (no handshake is in
    // progress: this test holds the provider alone) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        engine.deregister(mr);
        // And a registration of its own works in its own table.
        let mine = flagcx_sys::testing::AlignedBuf::new(LEN);
        // SAFETY: leaked with the child.
        let ok = unsafe { engine.register(mine.addr(), LEN) }.is_ok();
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child: {status:#x}");
    // The peer process connects to us now and writes: our key is live.
    assert_eq!(peer.cmd(&format!("fill 10 0 {LEN}")), "ok");
    let ep = engine.endpoint().unwrap();
    assert_eq!(peer.cmd(&format!("write {ep} {addr} 0 {LEN}")), "ok");
    assert_eq!(pattern::checksum(ours.bytes()), peer.sum(0, LEN as u64));
    common::assert_no_violations();
}
