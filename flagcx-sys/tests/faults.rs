//! The provider's injected faults do what they say.

mod common;

use std::time::{Duration, Instant};

use common::{serial, Pair};
use flagcx_sys::{pattern, sw, Error, Poll};

#[test]
fn fail_op_fails_exactly_the_nth_transfer_without_moving_bytes() {
    let _g = serial();
    let pair = Pair::new();
    let mut link = pair.link(4096);
    pattern::fill(link.src.bytes(), 3);
    assert!(sw::set_knob(sw::Knob::FailOp, 3));
    let results: Vec<Poll> = (0..5)
        .map(|_| {
            link.dst.bytes().fill(0);
            let id = link.write(4096);
            let r = link.wait(id);
            assert_eq!(link.dst.bytes() == link.src.bytes(), r == Poll::Done);
            r
        })
        .collect();
    assert_eq!(results, [Poll::Done, Poll::Done, Poll::Failed, Poll::Done, Poll::Done]);
}

#[test]
fn hang_op_never_completes_and_later_transfers_still_do() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    let mut hung = link.write(4096);
    let later = link.write(4096);
    assert_eq!(link.wait(later), Poll::Done);
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        match link.conn.poll(hung) {
            Poll::Pending(id) => hung = id,
            other => panic!("hung transfer finished: {other:?}"),
        }
    }
    drop(hung); // abandoned: a hung transfer never finishes
}

#[test]
fn injected_latency_delays_completion() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(64);
    assert!(sw::set_knob(sw::Knob::LatencyNs, 30_000_000));
    // A lower bound only: a first poll right after the write could find the
    // transfer already done if this thread stalled for 30 ms in between.
    let start = Instant::now();
    let id = link.write(64);
    assert_eq!(link.wait(id), Poll::Done);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn refused_connect_fails_at_once() {
    let _g = serial();
    let pair = Pair::new();
    assert!(sw::set_knob(sw::Knob::RefuseConnect, 1));
    // "At once": long before the 20 s handshake timeout (it takes
    // milliseconds; the bound leaves a loaded machine 10 s).
    assert!(sw::set_knob(sw::Knob::ConnectTimeoutMs, 20_000));
    let port = pair.remote.rpc_port().unwrap();
    let start = Instant::now();
    assert_eq!(pair.local.connect(c"127.0.0.1", 0, port).err(), Some(Error::Flagcx));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(sw::set_knob(sw::Knob::RefuseConnect, 0));
    assert!(pair.local.connect(c"127.0.0.1", 0, port).is_ok(), "the refusal is not sticky");
}

#[test]
fn slow_connect_delays_the_handshake() {
    let _g = serial();
    let pair = Pair::new();
    assert!(sw::set_knob(sw::Knob::ConnectDelayMs, 300));
    let start = Instant::now();
    pair.connect();
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn connect_to_an_engine_without_rpc_server_times_out() {
    let _g = serial();
    let local = flagcx_sys::Engine::create().unwrap();
    let silent = flagcx_sys::Engine::create().unwrap(); // no start_rpc_server
    assert!(sw::set_knob(sw::Knob::ConnectTimeoutMs, 300));
    let start = Instant::now();
    let port = silent.rpc_port().unwrap();
    assert_eq!(local.connect(c"127.0.0.1", 0, port).err(), Some(Error::Flagcx));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn connect_to_a_closed_port_fails() {
    let _g = serial();
    let local = flagcx_sys::Engine::create().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_eq!(local.connect(c"127.0.0.1", 0, port).err(), Some(Error::Flagcx));
}
