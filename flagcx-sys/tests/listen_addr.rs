//! FLAGCX_SW_LISTEN_ADDR: the address the provider's handshake listener binds
//! and its metadata publishes (127.0.0.1 when unset or empty); a value it
//! cannot bind or publish makes engine creation fail. Each case runs in a
//! flagcx-sw-peer child, whose engine reads the variable when it is created.
//! (Other network namespaces: scripts/two_hosts.sh.)

mod common;

use std::ffi::CString;
use std::process::{Command, Stdio};

use common::{serial, wait, write, Buf, Peer, LIMIT};
use flagcx_sys::testing::peer_binary;
use flagcx_sys::{pattern, Engine, Poll};

const ENV: &str = "FLAGCX_SW_LISTEN_ADDR";

/// Connects to the peer at the endpoint it published and writes 64 KiB.
fn write_through_published_endpoint(peer: &mut Peer) {
    let len = 64 << 10;
    let engine = Engine::create().unwrap();
    let (host, port) = peer.endpoint.rsplit_once(':').expect("host:port");
    let host = CString::new(host.trim_start_matches('[').trim_end_matches(']')).unwrap();
    let conn = engine.connect(&host, 0, port.parse().unwrap()).unwrap();
    let mut src = Buf::new(&engine, len);
    pattern::fill(src.bytes(), 7);
    let id = write(&conn, &[src.entry(0, len, peer.addr)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert_eq!(peer.sum(0, len as u64), pattern::checksum(src.bytes()));
}

#[test]
fn unset_or_empty_publishes_127_0_0_1() {
    let _g = serial();
    let mut peer = Peer::spawn_with(1 << 20, &[(ENV, "")]);
    assert!(peer.endpoint.starts_with("127.0.0.1:"), "published {}", peer.endpoint);
    write_through_published_endpoint(&mut peer);
}

#[test]
fn an_ipv4_address_is_bound_and_published() {
    let _g = serial();
    // Any 127/8 address is this host's on Linux; 127.0.0.2 is not the default.
    let mut peer = Peer::spawn_with(1 << 20, &[(ENV, "127.0.0.2")]);
    assert!(peer.endpoint.starts_with("127.0.0.2:"), "published {}", peer.endpoint);
    write_through_published_endpoint(&mut peer);
}

#[test]
fn an_ipv6_address_is_published_in_brackets() {
    let _g = serial();
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: nothing to check");
        return;
    }
    // Published in canonical form.
    let mut peer = Peer::spawn_with(1 << 20, &[(ENV, "0:0::0001")]);
    assert!(peer.endpoint.starts_with("[::1]:"), "published {}", peer.endpoint);
    write_through_published_endpoint(&mut peer);
}

#[test]
fn an_address_that_cannot_be_bound_or_published_fails_engine_creation() {
    let _g = serial();
    let mut cases = vec![
        ("0.0.0.0", "cannot be published"),
        ("::", "cannot be published"),
        ("fe80::1", "cannot be published"),
        ("localhost", "not a numeric IPv4 or IPv6 address"),
        ("127.0.0.1:5000", "not a numeric IPv4 or IPv6 address"),
    ];
    // 192.0.2.1 (TEST-NET-1) is nobody's, unless the kernel binds any address.
    let nonlocal = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind");
    if nonlocal.is_ok_and(|v| v.trim() == "0") {
        cases.push(("192.0.2.1", "cannot listen on 192.0.2.1"));
    }
    for (value, why) in cases {
        let out = Command::new(peer_binary())
            .args(["--size", "4096"])
            .env(ENV, value)
            .stdin(Stdio::null())
            .output()
            .expect("run flagcx-sw-peer");
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{ENV}={value}: the peer started: {stdout}");
        assert!(!stdout.contains("ready"), "{ENV}={value}: {stdout}");
        assert!(stderr.contains(why), "{ENV}={value}: stderr says {stderr}");
    }
}
