//! Measurement drivers for the provider's copy path (ignored by default):
//! loops of 4 KiB writes, each polled until done, to a peer process and to
//! an engine of this process. Run one under callgrind to count the
//! instructions a write costs, e.g.
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='*flagcxP2pEngineWriteVector*' \
//!     target/release/deps/copy_cost-* --ignored --exact xproc_4k_writes
//! ```
//!
//! (divide by `COPY_COST_N`, default 10000). Without callgrind each prints
//! its wall-clock ns per write, which on a shared machine is only a hint.

mod common;

use std::time::Instant;

use common::{serial, wait, Buf, Pair, Peer, LIMIT};
use flagcx_sys::{Conn, Engine, IovList, Poll};

const LEN: usize = 4096;

fn rounds() -> usize {
    std::env::var("COPY_COST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

/// What the transport does per single-op call: one entry pushed into a
/// reused list (its descriptor made in place), one vector write.
fn run(what: &str, conn: &Conn, src: &Buf, remote: u64) {
    let n = rounds();
    let mut list = IovList::new().unwrap();
    let start = Instant::now();
    for _ in 0..n {
        list.push(conn, src.mr, src.addr(), LEN as u32, remote).unwrap();
        let id = conn.write_list(&mut list).unwrap();
        assert_eq!(wait(conn, id, LIMIT), Poll::Done);
    }
    let ns = start.elapsed().as_nanos() / n as u128;
    println!("{what}: {n} writes of {LEN} B, {ns} ns each");
}

#[test]
#[ignore = "measurement driver"]
fn xproc_4k_writes() {
    let _g = serial();
    let peer = Peer::spawn(LEN);
    let engine = Engine::create().unwrap();
    let conn = engine.connect(c"127.0.0.1", 0, peer.port()).unwrap();
    let src = Buf::new(&engine, LEN);
    run("cross-process", &conn, &src, peer.addr);
}

#[test]
#[ignore = "measurement driver"]
fn inproc_4k_writes() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(LEN);
    run("in-process", &link.conn, &link.src, link.remote());
}
