//! Drives the transport's hot path alone: one in-process peer, batches of
//! small writes, one batch in flight. For profiling (callgrind, perf) the
//! transport's own cost per op without the A/B bench around it.
//!
//! Usage: `cargo run --release --example hotpath -- [--batch B] [--size S]
//! [--batches N] [--grace-us G]` (defaults 64, 4096, 20000, the config's
//! spin grace; `--grace-us 0` keeps idle spinning out of a callgrind count). Prints one line: ops/s, FlagCX
//! vector calls per batch (1.0: the progress thread took each batch whole)
//! and wake-ups. `FLAGCX_SW_LATENCY_NS` works as usual.

use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::{Config, OpRequest, Opcode, Transport};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let batch = arg("--batch", 64) as usize;
    let size = arg("--size", 4096) as usize;
    let batches = arg("--batches", 20_000);
    let mut config = Config { op_timeout: Duration::from_secs(60), ..Config::default() };
    if let Some(us) = std::env::args().position(|a| a == "--grace-us").map(|_| arg("--grace-us", 0))
    {
        config.spin_grace = Duration::from_micros(us);
    }
    let target =
        Transport::create(config.clone(), Box::new(|_, _| {}), Box::new(|_| Err("none".into())))
            .expect("target");
    let endpoint = target.endpoint().expect("the target serves").to_owned();
    let done = Arc::new(AtomicU64::new(0));
    let done2 = Arc::clone(&done);
    let init = Transport::create(
        config,
        Box::new(move |_, _| {
            // Release: the submitter's Acquire load sees the op finished.
            done2.fetch_add(1, Release);
        }),
        Box::new(move |_| Ok(endpoint.clone())),
    )
    .expect("initiator");
    let src = AlignedBuf::new(size * batch);
    let dst = AlignedBuf::new(size * batch);
    // SAFETY: both buffers outlive the transports (dropped after them below).
    unsafe {
        target.register(dst.addr(), dst.len()).expect("register dst");
        init.register(src.addr(), src.len()).expect("register src");
    }
    let ops: Vec<OpRequest> = (0..batch)
        .map(|i| OpRequest {
            opcode: Opcode::Write,
            local: src.addr() + i * size,
            len: size as u64,
            peer: 1,
            remote: (dst.addr() + i * size) as u64,
            user_data: i as u64,
        })
        .collect();
    let run = |n: u64| {
        let t0 = Instant::now();
        let mut sent = done.load(Acquire);
        for _ in 0..n {
            let mut accepted = 0;
            init.submit(&ops, &mut accepted).expect("submit");
            sent += batch as u64;
            let mut spins = 0u64;
            while done.load(Acquire) < sent {
                spins += 1;
                if spins > 100_000 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        t0.elapsed()
    };
    run(batches / 10 + 1); // warm-up, connect
    let before = init.stats();
    let elapsed = run(batches);
    let after = init.stats();
    let ops_total = batches * batch as u64;
    println!(
        "hotpath: batch={batch} size={size} ops={ops_total} ops_per_s={:.0} \
         calls_per_batch={:.2} wakeups_per_batch={:.3}",
        ops_total as f64 / elapsed.as_secs_f64(),
        (after.flagcx_transfers - before.flagcx_transfers) as f64 / batches as f64,
        (after.wakeups - before.wakeups) as f64 / batches as f64,
    );
    drop(init);
    drop(target);
}
