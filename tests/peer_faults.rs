//! A peer process dies mid-stream: its ops fail within the timeout, ops to
//! other peers keep completing, nothing is lost or completed twice.

mod common;

use common::*;
use flagcx_sys::testing::AlignedBuf;

use mooncake_flagcx::ffi::mcfx_status::*;

#[test]
fn a_peer_killed_mid_stream_fails_its_ops_and_other_peers_keep_completing() {
    let _g = serial();
    let mut dying = PeerProcess::spawn(1 << 20);
    let healthy = Node::new();
    let a = Node::with(|c| {
        c.op_timeout_ms = 2000;
        c.connect_timeout_ms = 1000;
    });
    a.dir.insert(1, &dying.endpoint);
    a.knows(2, &healthy);
    let src = AlignedBuf::new(4096);
    let dst = AlignedBuf::new(4096);
    a.register(&src);
    healthy.register(&dst);

    // Steady traffic to both peers; the process dies half way.
    let mut ud = 0u64;
    while ud < 4000 {
        if ud == 2000 {
            dying.kill();
        }
        let ops = [
            write(src.addr(), 4096, 1, dying.addr, ud),
            write(src.addr(), 4096, 2, dst.addr() as u64, ud + 1),
        ];
        a.submit_ok(&ops);
        a.done.wait_for(ud as usize + 2, LIMIT);
        ud += 2;
    }
    let by_status = a.done.exactly_once();
    assert_eq!(a.done.count(), 4000, "every op completed: {by_status:?}");
    for ud in (0..4000).step_by(2) {
        let (to_dead, to_healthy) = (a.done.status(ud), a.done.status(ud + 1));
        assert_eq!(to_healthy, OK, "op {} to the healthy peer", ud + 1);
        if ud < 2000 {
            assert_eq!(to_dead, OK, "op {ud} before the kill");
        } else {
            assert!(
                matches!(to_dead, MCFX_E_TRANSFER_FAILED | MCFX_E_CONNECT | MCFX_E_TIMEOUT),
                "op {ud} to the dead peer: {to_dead:?}"
            );
        }
    }
    // Failing was fast: no op waited for its 2 s deadline. Counted, not
    // timed: at most the one op in flight at the kill may time out.
    let timed_out = by_status.get(&MCFX_E_TIMEOUT).copied().unwrap_or(0);
    assert!(timed_out <= 1, "{timed_out} ops to the dead peer waited for their deadline");
    assert_no_violations();
}
