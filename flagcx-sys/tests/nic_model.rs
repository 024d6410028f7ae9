//! The modeled NIC (`FLAGCX_SW_NIC_GBPS`): transfers move no bytes, are
//! checked as in copy mode, and finish no earlier than the engine's link
//! would deliver them. Timing is asserted as lower bounds only.
//!
//! Every test takes `serial()`, which also puts the provider back in copy
//! mode, so the process-wide knob never leaks into another test.

mod common;

use std::time::{Duration, Instant};

use common::{read, serial, wait, write, Buf, Pair, Peer, LIMIT};
use flagcx_sys::{pattern, sw, Engine, Error, Poll};

/// How long `bytes` take on a `gbps` link (1 Gb/s = 1 bit per ns).
fn link_time(bytes: usize, gbps: u64) -> Duration {
    Duration::from_nanos(bytes as u64 * 8 / gbps)
}

fn nic_on(gbps: u64) {
    assert!(sw::set_knob(sw::Knob::NicGbps, gbps));
    assert_eq!(sw::knob(sw::Knob::NicGbps), Some(gbps));
}

#[test]
fn writes_and_reads_move_no_bytes_but_complete_done() {
    let _g = serial();
    let pair = Pair::new();
    let mut link = pair.link(64 << 10);
    pattern::fill(link.src.bytes(), 7);
    nic_on(100);

    let id = link.write(64 << 10);
    assert_eq!(link.wait(id), Poll::Done);
    assert!(link.dst.bytes().iter().all(|&b| b == 0), "NIC mode wrote the remote buffer");

    // A read leaves the local buffer alone too.
    pattern::fill(link.dst.bytes(), 8);
    let mut back = Buf::new(&pair.local, 64 << 10);
    let id = read(&link.conn, &[back.entry(0, 64 << 10, link.remote())]).unwrap();
    assert_eq!(link.wait(id), Poll::Done);
    assert!(back.bytes().iter().all(|&b| b == 0), "NIC mode wrote the local buffer");

    // Vectors of many entries too.
    let entries: Vec<_> =
        (0..64).map(|i| link.src.entry(i * 1024, 1024, link.remote() + i as u64 * 1024)).collect();
    let before = pattern::checksum(link.dst.bytes());
    let id = write(&link.conn, &entries).unwrap();
    assert_eq!(link.wait(id), Poll::Done);
    assert_eq!(pattern::checksum(link.dst.bytes()), before);
    common::assert_no_violations();
}

/// (Descriptors the snapshot did not make, a forged key or a length past
/// the region, are tested from C++: cpp_tests/provider/.)
#[test]
fn bad_accesses_still_fail() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 8192);
    let dst = Buf::new(&pair.remote, 8192);
    let gone = Buf::new(&pair.remote, 4096);
    let conn = pair.connect();
    nic_on(100);
    let (remote, gone_remote) = (dst.addr() as u64, gone.addr() as u64);

    // The local side is checked at submit, as in copy mode.
    assert_eq!(write(&conn, &[src.entry(4097, 4096, remote)]), Err(Error::Flagcx));
    // Remote overrun: the peer shrank the region after this connection
    // learned it (the live registration counts).
    // SAFETY: the same live buffer, still owned by `dst`, with a smaller size.
    unsafe { pair.remote.register(dst.addr(), 4096) }.unwrap();
    let id = write(&conn, &[src.entry(0, 8192, remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    // A key the peer destroyed, for a write and a read.
    pair.remote.deregister(gone.mr);
    let id = write(&conn, &[src.entry(0, 16, gone_remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    let id = read(&conn, &[src.entry(0, 16, gone_remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    // One bad entry fails a vector of good ones.
    let id = write(&conn, &[src.entry(0, 16, remote), src.entry(16, 16, gone_remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    // The good range still works...
    let id = write(&conn, &[src.entry(0, 4096, remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    // ...until the peer deregisters it (in-process, the live registry counts).
    pair.remote.deregister(dst.mr);
    let id = write(&conn, &[src.entry(0, 4096, remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    common::assert_no_violations();
}

#[test]
fn transfers_finish_no_earlier_than_the_link_allows() {
    let _g = serial();
    let pair = Pair::new();
    const B: usize = 256 << 10;
    const N: usize = 16;
    const GBPS: u64 = 1; // 2.1 ms per transfer, 33.6 ms for all
    let link = pair.link(B);
    nic_on(GBPS);

    let start = Instant::now();
    let ids: Vec<_> = (0..N).map(|_| link.write(B)).collect();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(link.wait(id), Poll::Done);
        let floor = link_time((i + 1) * B, GBPS);
        let took = start.elapsed();
        assert!(took >= floor, "transfer {i} done after {took:?}, the link needs {floor:?}");
    }
    common::assert_no_violations();
}

#[test]
fn nic_latency_is_added_after_the_link() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(1 << 20);
    nic_on(4); // 1 MiB: 2.1 ms on the link
    assert!(sw::set_knob(sw::Knob::NicLatencyNs, 20_000_000));
    let start = Instant::now();
    let id = link.write(1 << 20);
    assert_eq!(link.wait(id), Poll::Done);
    let floor = link_time(1 << 20, 4) + Duration::from_millis(20);
    assert!(start.elapsed() >= floor, "{:?} < {floor:?}", start.elapsed());
    common::assert_no_violations();
}

#[test]
fn all_connections_of_an_engine_share_one_link_in_fifo_order() {
    let _g = serial();
    let pair = Pair::new();
    let other = Engine::create().unwrap();
    other.start_rpc_server().unwrap();
    const BIG: usize = 2 << 20;
    const GBPS: u64 = 1; // the big write holds the link for 16.8 ms
    let big = pair.link(BIG);
    let src = Buf::new(&pair.local, 64);
    let dst = Buf::new(&other, 64);
    let conn = pair.local.connect(c"127.0.0.1", 0, other.rpc_port().unwrap()).unwrap();
    nic_on(GBPS);

    let start = Instant::now();
    let first = big.write(BIG);
    // Another connection, another peer engine, same local engine: queued
    // behind the big write.
    let small = write(&conn, &[src.entry(0, 64, dst.addr() as u64)]).unwrap();
    assert_eq!(wait(&conn, small, LIMIT), Poll::Done);
    let floor = link_time(BIG + 64, GBPS);
    assert!(start.elapsed() >= floor, "{:?} < {floor:?}", start.elapsed());
    assert_eq!(big.wait(first), Poll::Done);
    common::assert_no_violations();
}

#[test]
fn threads_submitting_on_one_engine_never_overlap_on_the_link() {
    let _g = serial();
    let pair = Pair::new();
    const THREADS: usize = 4;
    const PER_THREAD: usize = 32;
    const B: usize = 64 << 10;
    const GBPS: u64 = 2; // 262 us per transfer, 33.6 ms for all
    let links: Vec<_> = (0..THREADS).map(|_| pair.link(B)).collect();
    nic_on(GBPS);

    let start = Instant::now();
    std::thread::scope(|s| {
        let threads: Vec<_> = links
            .iter()
            .map(|link| {
                s.spawn(move || {
                    let ids: Vec<_> = (0..PER_THREAD).map(|_| link.write(B)).collect();
                    for id in ids {
                        assert_eq!(link.wait(id), Poll::Done);
                    }
                })
            })
            .collect();
        // Joined one by one (pthread_join), not only at the end of the scope:
        // a ThreadSanitizer run then sees the threads finish before the links drop.
        for t in threads {
            t.join().unwrap();
        }
    });
    // Whatever the interleaving, the last booking ends after all of them.
    let floor = link_time(THREADS * PER_THREAD * B, GBPS);
    assert!(start.elapsed() >= floor, "{:?} < {floor:?}", start.elapsed());
    common::assert_no_violations();
}

#[test]
fn fail_op_and_hang_op_still_apply() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    nic_on(100);
    assert!(sw::set_knob(sw::Knob::FailOp, 2));
    let results: Vec<Poll> = (0..3).map(|_| link.wait(link.write(4096))).collect();
    assert_eq!(results, [Poll::Done, Poll::Failed, Poll::Done]);

    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    let mut hung = link.write(4096);
    let later = link.write(4096);
    assert_eq!(link.wait(later), Poll::Done);
    for _ in 0..1000 {
        match link.conn.poll(hung) {
            Poll::Pending(id) => hung = id,
            other => panic!("hung transfer finished: {other:?}"),
        }
    }
    drop(hung); // abandoned: a hung transfer never finishes
}

#[test]
fn knob_back_to_zero_is_copy_mode_again() {
    let _g = serial();
    let pair = Pair::new();
    let mut link = pair.link(4096);
    pattern::fill(link.src.bytes(), 11);
    nic_on(100);
    let id = link.write(4096);
    assert_eq!(link.wait(id), Poll::Done);
    assert!(link.dst.bytes().iter().all(|&b| b == 0));

    nic_on(0);
    let id = link.write(4096);
    assert_eq!(link.wait(id), Poll::Done);
    assert_eq!(link.dst.bytes(), link.src.bytes());
    common::assert_no_violations();
}

#[test]
fn cross_process_moves_nothing_checks_keys_and_notices_a_dead_peer() {
    let _g = serial();
    const LEN: usize = 1 << 20;
    let mut peer = Peer::spawn(LEN);
    let other = peer.cmd("reg 4096");
    let other: u64 = other
        .strip_prefix("reg addr=0x")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("peer said {other:?}"));
    assert_eq!(peer.cmd(&format!("fill 5 0 {LEN}")), "ok");
    let theirs = peer.sum(0, LEN as u64);
    let engine = Engine::create().unwrap();
    let conn = engine.connect(c"127.0.0.1", 0, peer.port()).unwrap();
    let mut ours = Buf::new(&engine, LEN);
    pattern::fill(ours.bytes(), 6);
    let mine = pattern::checksum(ours.bytes());
    nic_on(100);

    let id = write(&conn, &[ours.entry(0, LEN, peer.addr)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert_eq!(peer.sum(0, LEN as u64), theirs, "NIC mode wrote the peer");
    let id = read(&conn, &[ours.entry(0, LEN, peer.addr)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert_eq!(pattern::checksum(ours.bytes()), mine, "NIC mode read from the peer");

    // A key the peer revoked after this connection learned it.
    assert_eq!(peer.cmd("dereg 1"), "ok");
    let id = write(&conn, &[ours.entry(0, 64, other)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);

    // A dead peer is noticed within a liveness period (1 ms); bounded in
    // count and time, not a sleep.
    peer.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut submitted = 0u64;
    loop {
        let id = write(&conn, &[ours.entry(0, 4096, peer.addr)]).unwrap();
        submitted += 1;
        match wait(&conn, id, LIMIT) {
            Poll::Failed => break,
            Poll::Done => {
                assert!(
                    Instant::now() < deadline && submitted < 10_000_000,
                    "dead peer not noticed after {submitted} transfers"
                );
            }
            Poll::Pending(_) => unreachable!(),
        }
    }
    // And it stays dead.
    for _ in 0..3 {
        let id = read(&conn, &[ours.entry(0, 4096, peer.addr)]).unwrap();
        assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    }
    common::assert_no_violations();
}

#[test]
fn the_environment_turns_it_on_in_a_peer_process() {
    let _g = serial();
    const LEN: usize = 64 << 10;
    let mut peer = Peer::spawn_with(LEN, &[("FLAGCX_SW_NIC_GBPS", "100")]);
    let engine = Engine::create().unwrap();
    engine.start_rpc_server().unwrap();
    let mut ours = Buf::new(&engine, LEN);
    let ep = engine.endpoint().unwrap();
    // The peer writes its (zero) buffer after we filled ours: in NIC mode
    // ours stays as it is.
    pattern::fill(ours.bytes(), 9);
    let mine = pattern::checksum(ours.bytes());
    assert_eq!(peer.cmd(&format!("write {ep} {} 0 {LEN}", ours.addr())), "ok");
    assert_eq!(pattern::checksum(ours.bytes()), mine);
    // Bad ranges are still refused.
    let r = peer.cmd(&format!("write {ep} {} 0 {LEN}", ours.addr() + 64));
    assert!(r.starts_with("err"), "peer said {r:?}");
    common::assert_no_violations();
}
