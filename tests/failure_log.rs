//! A storm of failed ops does not flood the host's log: failures are
//! grouped per (peer, status), the first of each group is a WARN line with
//! its message, the rest a summary with the count (20 000 failed ops used to
//! make 20 021 WARN lines, each formatted on the progress thread).

mod common;

use std::sync::Arc;

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;

use mcfx_status::*;

/// 20 000 ops to two unknown peers (the resolver fails each connect) and a
/// handful of lines at WARN, one of them naming the count of the rest.
#[test]
fn twenty_thousand_failed_ops_make_a_handful_of_warn_lines() {
    let _g = serial();
    let lines = Arc::new(LogLines::default());
    let mut a = Node::with(with_log(&lines, mcfx_log_level::MCFX_LOG_WARN));
    let src = AlignedBuf::new(4096);
    a.register(&src);
    const N: u64 = 20_000;
    let ops: Vec<_> = (0..N).map(|i| write(src.addr(), 64, 100 + i % 2, 0x1000, i)).collect();
    for (k, chunk) in ops.chunks(256).enumerate() {
        a.submit_ok(chunk);
        // Well inside the queue: wait for this chunk before the next.
        a.done.wait_for(((k + 1) * 256).min(N as usize), LIMIT);
    }
    a.done.wait_for(N as usize, LIMIT);
    let by_status = a.done.exactly_once();
    assert_eq!(by_status.get(&MCFX_E_RESOLVE), Some(&(N as usize)), "{by_status:?}");
    // Destroy flushes the summaries still counted.
    assert_eq!(a.destroy(), OK);
    let lines = lines.lines.lock().unwrap();
    let warn: Vec<_> = lines
        .iter()
        .filter(|(l, _)| (*l as u32) <= mcfx_log_level::MCFX_LOG_WARN as u32)
        .map(|(_, t)| t)
        .collect();
    let failed: Vec<_> = warn.iter().filter(|t| t.contains("failed")).collect();
    assert!(
        failed.len() <= 8,
        "{} WARN lines about failed ops for {N} failures: {failed:#?}",
        failed.len()
    );
    // Each of the two peers: its first failure with the resolver's message,
    // and a count of the rest.
    for peer in [100, 101] {
        assert!(
            failed.iter().any(|t| t.contains("resolver") && t.contains(&format!("peer {peer}"))),
            "no first-failure line for peer {peer}: {failed:#?}"
        );
        assert!(
            failed.iter().any(|t| t.contains(&format!("to peer {peer} failed with"))),
            "no summary for peer {peer}: {failed:#?}"
        );
    }
    let counted: u64 = failed
        .iter()
        .filter_map(|t| t.split(" more ops").next()?.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let firsts = failed.iter().filter(|t| t.contains("further failures")).count() as u64;
    assert_eq!(counted + firsts, N, "every failure is either a first line or counted: {failed:#?}");
}
