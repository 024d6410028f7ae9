//! Transfers between this process and a flagcx-sw-peer child
//! (the provider's process_vm_writev/readv path).

mod common;

use std::time::{Duration, Instant};

use common::{read, serial, wait, write, Buf, Peer, LIMIT};
use flagcx_sys::{pattern, Engine, Poll};

#[test]
fn two_processes_transfer_both_ways_intact() {
    let _g = serial();
    let mut peer = Peer::spawn(8 << 20);
    let engine = Engine::create().unwrap();
    engine.start_rpc_server().unwrap();
    let conn = engine.connect(c"127.0.0.1", 0, peer.port()).unwrap();

    for (seed, len) in [(1u64, 1usize), (2, 4096), (3, (1 << 20) + 17), (4, 8 << 20)] {
        // We write to the peer, the peer checksums.
        let mut src = Buf::new(&engine, len);
        pattern::fill(src.bytes(), seed);
        let id = write(&conn, &[src.entry(0, len, peer.addr)]).unwrap();
        assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
        assert_eq!(peer.sum(0, len as u64), pattern::checksum(src.bytes()), "write {len}");

        // We read from the peer after it refilled the range.
        assert_eq!(peer.cmd(&format!("fill {} 0 {len}", seed + 100)), "ok");
        let mut dst = Buf::new(&engine, len);
        let id = read(&conn, &[dst.entry(0, len, peer.addr)]).unwrap();
        assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
        assert_eq!(pattern::checksum(dst.bytes()), peer.sum(0, len as u64), "read {len}");

        // The peer writes into us and reads from us.
        let mut ours = Buf::new(&engine, len);
        assert_eq!(peer.cmd(&format!("fill {} 0 {len}", seed + 200)), "ok");
        let ep = engine.endpoint().unwrap();
        assert_eq!(peer.cmd(&format!("write {ep} {} 0 {len}", ours.addr())), "ok");
        assert_eq!(pattern::checksum(ours.bytes()), peer.sum(0, len as u64), "peer write {len}");
        pattern::fill(ours.bytes(), seed + 300);
        assert_eq!(peer.cmd(&format!("read {ep} {} 0 {len}", ours.addr())), "ok");
        assert_eq!(peer.sum(0, len as u64), pattern::checksum(ours.bytes()), "peer read {len}");
    }
    common::assert_no_violations();
}

#[test]
fn killed_peer_makes_transfers_fail_instead_of_hanging() {
    let _g = serial();
    let mut peer = Peer::spawn(1 << 20);
    let engine = Engine::create().unwrap();
    let conn = engine.connect(c"127.0.0.1", 0, peer.port()).unwrap();
    let src = Buf::new(&engine, 4096);
    let id = write(&conn, &[src.entry(0, 4096, peer.addr)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);

    peer.kill();
    let start = Instant::now();
    let id = write(&conn, &[src.entry(0, 4096, peer.addr)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    let id = read(&conn, &[src.entry(0, 4096, peer.addr)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    assert!(start.elapsed() < Duration::from_secs(5));
    // And a new connection to the dead endpoint fails instead of hanging.
    let again = engine.connect(c"127.0.0.1", 0, peer.port());
    assert!(again.is_err());
}
