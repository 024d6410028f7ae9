//! The provider's injected faults do what they say.

mod common;

use std::time::{Duration, Instant};

use common::{serial, wait, Buf, Pair, LIMIT};
use flagcx_sys::{pattern, sw, Error, Poll};

#[test]
fn fail_op_fails_exactly_the_nth_transfer_without_moving_bytes() {
    let _g = serial();
    let pair = Pair::new();
    let mut src = Buf::new(&pair.local, 4096);
    let mut dst = Buf::new(&pair.remote, 4096);
    pattern::fill(src.bytes(), 3);
    let conn = pair.connect();
    let desc = conn.make_desc(dst.addr() as u64, 4096).unwrap();
    assert!(sw::set_knob(sw::Knob::FailOp, 3));
    let results: Vec<Poll> = (0..5)
        .map(|_| {
            dst.bytes().fill(0);
            let id = conn.write_vector(&[src.iov(0, 4096, desc)]).unwrap();
            let r = wait(&conn, id, LIMIT);
            assert_eq!(dst.bytes() == src.bytes(), r == Poll::Done);
            r
        })
        .collect();
    assert_eq!(results, [Poll::Done, Poll::Done, Poll::Failed, Poll::Done, Poll::Done]);
}

#[test]
fn hang_op_never_completes_and_later_transfers_still_do() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 4096);
    let dst = Buf::new(&pair.remote, 4096);
    let conn = pair.connect();
    let desc = conn.make_desc(dst.addr() as u64, 4096).unwrap();
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    let mut hung = conn.write_vector(&[src.iov(0, 4096, desc)]).unwrap();
    let later = conn.write_vector(&[src.iov(0, 4096, desc)]).unwrap();
    assert_eq!(wait(&conn, later, LIMIT), Poll::Done);
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        match conn.poll(hung) {
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
    let src = Buf::new(&pair.local, 64);
    let dst = Buf::new(&pair.remote, 64);
    let conn = pair.connect();
    let desc = conn.make_desc(dst.addr() as u64, 64).unwrap();
    assert!(sw::set_knob(sw::Knob::LatencyNs, 30_000_000));
    let start = Instant::now();
    let id = conn.write_vector(&[src.iov(0, 64, desc)]).unwrap();
    let id = match conn.poll(id) {
        Poll::Pending(id) => id,
        other => panic!("done before the injected latency: {other:?}"),
    };
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn refused_connect_fails_at_once() {
    let _g = serial();
    let pair = Pair::new();
    assert!(sw::set_knob(sw::Knob::RefuseConnect, 1));
    let start = Instant::now();
    assert_eq!(pair.local.get_conn(&pair.session()).err(), Some(Error::Flagcx));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(sw::set_knob(sw::Knob::RefuseConnect, 0));
    assert!(pair.local.get_conn(&pair.session()).is_ok(), "a failed GetConn is retried");
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
    assert_eq!(local.get_conn(c"not-a-session").err(), Some(Error::Flagcx));
}
