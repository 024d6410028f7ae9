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
use flagcx_sys::{Conn, Engine, Poll, RemoteDesc};

const LEN: usize = 4096;

fn rounds() -> usize {
    std::env::var("COPY_COST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

fn run(what: &str, conn: &Conn, src: &Buf, desc: RemoteDesc) {
    let n = rounds();
    let start = Instant::now();
    for _ in 0..n {
        let id = conn.write_vector(&[src.iov(0, LEN, desc)]).unwrap();
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
    let desc = conn.make_desc(peer.addr, LEN as u32).unwrap();
    run("cross-process", &conn, &src, desc);
}

#[test]
#[ignore = "measurement driver"]
fn inproc_4k_writes() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(LEN);
    run("in-process", &link.conn, &link.src, link.desc);
}
