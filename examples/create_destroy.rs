//! Creates and destroys transports in a loop (two per round, one transfer
//! each round), for leak checkers: `valgrind --leak-check=full` over this
//! binary must report nothing definitely or indirectly lost.
//!
//! Usage: `create_destroy [ROUNDS]` (default 1000).

use std::sync::mpsc;
use std::time::Duration;

use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::{Config, OpRequest, Opcode, Status, Transport};

fn main() {
    let rounds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let src = AlignedBuf::new(4096);
    let dst = AlignedBuf::new(4096);
    for round in 0..rounds {
        let target = Transport::create(
            Config::default(),
            Box::new(|_, _| {}),
            Box::new(|_| Err("no peers".into())),
        )
        .expect("create target");
        let endpoint = target.endpoint().expect("serves peers").to_owned();
        let (tx, rx) = mpsc::sync_channel(1);
        let init = Transport::create(
            Config { connect_threads: 1, ..Config::default() },
            Box::new(move |_, st| {
                let _ = tx.try_send(st);
            }),
            Box::new(move |_| Ok(endpoint.clone())),
        )
        .expect("create initiator");
        // SAFETY: both buffers outlive every transport of the loop.
        unsafe {
            target.register(dst.addr(), dst.len()).expect("register");
            init.register(src.addr(), src.len()).expect("register");
        }
        let op = OpRequest {
            opcode: Opcode::Write,
            local: src.addr(),
            len: 4096,
            peer: 1,
            remote: dst.addr() as u64,
            user_data: round,
        };
        let mut n = 0;
        init.submit(&[op], &mut n).expect("submit");
        let st = rx.recv_timeout(Duration::from_secs(30)).expect("completion");
        assert_eq!(st, Status::MCFX_OK, "round {round}");
        drop(init);
        drop(target);
    }
    println!("create_destroy: {rounds} rounds, 2 transports and 1 transfer each");
}
