//! Soak: many random transfers (1 B to 4 MiB, reads and writes, in-process and
//! cross-process peers) with data checksums; counts corrupt, lost and
//! duplicated completions.
//!
//! Each in-flight op owns a "lane": one slot of one peer's region plus a
//! local slot. A write fills the local slot from a fresh seed and remembers
//! (seed, length) for the remote slot; a read of that slot later must bring
//! back exactly that pattern. Every slot is read back at the end, so every
//! write is checked.
//!
//! Usage: `cargo run --release --example soak -- [--ops N] [--seed S]
//! [--window W] [--inproc P] [--xproc X]`. Ends with exactly one line
//! `soak: ops=N corrupt=C lost=L duplicated=D` and exits non-zero unless all
//! three (and failed ops) are 0.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flagcx_sys::pattern;
use flagcx_sys::testing::{AlignedBuf, PeerProcess};
use mooncake_flagcx::{Config, OpRequest, Opcode, Status, Transport};

const MAX: usize = 4 << 20;
const SLOTS_PER_PEER: usize = 8;

struct Args {
    ops: u64,
    seed: u64,
    window: usize,
    inproc: usize,
    xproc: usize,
}

fn args() -> Args {
    let mut a = Args {
        ops: std::env::var("SOAK_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000),
        seed: 1,
        window: 16,
        inproc: 2,
        xproc: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("soak: {k} needs a number");
            std::process::exit(2)
        });
        match k.as_str() {
            "--ops" => a.ops = v,
            "--seed" => a.seed = v,
            "--window" => a.window = v as usize,
            "--inproc" => a.inproc = v as usize,
            "--xproc" => a.xproc = v as usize,
            _ => {
                eprintln!("soak: unknown argument {k}");
                std::process::exit(2)
            }
        }
    }
    a
}

/// Completions as they arrive: (user_data, status).
#[derive(Default)]
struct Inbox {
    queue: Mutex<VecDeque<(u64, Status)>>,
    ready: Condvar,
}

/// xorshift64*, for sizes and choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Log-uniform in 1..=MAX: small and large transfers both get exercised.
    fn size(&mut self) -> usize {
        let bits = self.next() % 23; // 2^0 .. 2^22 = 4 MiB
        let lo = 1usize << bits;
        (lo + (self.next() as usize % lo)).min(MAX)
    }
}

/// What a remote slot holds: the seed and length of its last write.
#[derive(Clone, Copy, Default)]
struct Content {
    seed: u64,
    len: usize,
}

struct Lane {
    peer: u64,
    remote: u64,
    local: usize, // offset of the lane's local slot
    content: Option<Content>,
    busy: Option<(u64, Opcode, Content)>, // op id in flight
}

fn main() {
    let a = args();
    let inbox = Arc::new(Inbox::default());
    let endpoints = Arc::new(Mutex::new(Vec::<String>::new()));
    let config = Config { op_timeout: Duration::from_secs(60), ..Config::default() };
    let targets: Vec<Transport> = (0..a.inproc)
        .map(|_| {
            Transport::create(config.clone(), Box::new(|_, _| {}), Box::new(|_| Err("none".into())))
                .expect("target")
        })
        .collect();
    let procs: Vec<PeerProcess> =
        (0..a.xproc).map(|_| PeerProcess::spawn(MAX * SLOTS_PER_PEER)).collect();
    let inbox2 = Arc::clone(&inbox);
    let eps = Arc::clone(&endpoints);
    let init = Transport::create(
        config,
        Box::new(move |ud, st| {
            inbox2.queue.lock().unwrap().push_back((ud, st));
            inbox2.ready.notify_one();
        }),
        Box::new(move |peer| {
            eps.lock().unwrap().get(peer as usize).cloned().ok_or("unknown peer".into())
        }),
    )
    .expect("initiator");

    // Remote regions: in-process targets' buffers, and the peer processes'.
    let mut remote_bufs = Vec::new();
    let mut lanes = Vec::new();
    for t in &targets {
        let buf = AlignedBuf::new(MAX * SLOTS_PER_PEER);
        // SAFETY: the buffer outlives every transport (dropped last).
        unsafe { t.register(buf.addr(), buf.len()) }.expect("register target");
        endpoints.lock().unwrap().push(t.endpoint().expect("serves peers").to_owned());
        let peer = endpoints.lock().unwrap().len() as u64 - 1;
        for s in 0..SLOTS_PER_PEER {
            lanes.push((peer, (buf.addr() + s * MAX) as u64));
        }
        remote_bufs.push(buf);
    }
    for p in &procs {
        endpoints.lock().unwrap().push(p.endpoint.clone());
        let peer = endpoints.lock().unwrap().len() as u64 - 1;
        for s in 0..SLOTS_PER_PEER {
            lanes.push((peer, p.addr + (s * MAX) as u64));
        }
    }
    let mut local = AlignedBuf::new(MAX * lanes.len());
    // SAFETY: as above.
    unsafe { init.register(local.addr(), local.len()) }.expect("register local");
    let mut lanes: Vec<Lane> = lanes
        .into_iter()
        .enumerate()
        .map(|(i, (peer, remote))| Lane { peer, remote, local: i * MAX, content: None, busy: None })
        .collect();

    let window = a.window.min(lanes.len());
    let mut rng = Rng(a.seed | 1);
    let counts: Vec<AtomicU8> = (0..a.ops + lanes.len() as u64).map(|_| AtomicU8::new(0)).collect();
    let (mut corrupt, mut failed, mut duplicated) = (0u64, 0u64, 0u64);
    let (mut next_id, mut in_flight, mut finals_sent) = (0u64, 0usize, false);
    let start = Instant::now();
    let mut last_progress = Instant::now();

    loop {
        // Submit while lanes are free (random lane, random direction).
        while in_flight < window && next_id < a.ops {
            let free: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].busy.is_none()).collect();
            let li = free[rng.next() as usize % free.len()];
            let lane = &mut lanes[li];
            let read = lane.content.is_some() && rng.next() % 2 == 0;
            let (opcode, content) = if read {
                let c = lane.content.unwrap();
                // Poison the destination: a read that moves nothing must not
                // pass because the slot still holds the written pattern.
                local.bytes()[lane.local..lane.local + c.len].fill(0xa5);
                (Opcode::Read, c)
            } else {
                let c = Content { seed: rng.next(), len: rng.size() };
                pattern::fill(&mut local.bytes()[lane.local..lane.local + c.len], c.seed);
                (Opcode::Write, c)
            };
            submit(&init, lane, next_id, opcode, content, local.addr());
            lane.busy = Some((next_id, opcode, content));
            next_id += 1;
            in_flight += 1;
        }
        // At the end, read every written slot back once.
        if next_id >= a.ops && in_flight == 0 && !finals_sent {
            finals_sent = true;
            for lane in lanes.iter_mut().filter(|l| l.content.is_some()) {
                let c = lane.content.unwrap();
                local.bytes()[lane.local..lane.local + c.len].fill(0xa5);
                submit(&init, lane, next_id, Opcode::Read, c, local.addr());
                lane.busy = Some((next_id, Opcode::Read, c));
                next_id += 1;
                in_flight += 1;
            }
        }
        if finals_sent && in_flight == 0 {
            break;
        }
        // Take completions.
        let mut q = inbox.queue.lock().unwrap();
        if q.is_empty() {
            q = inbox.ready.wait_timeout(q, Duration::from_millis(100)).unwrap().0;
        }
        let batch: Vec<(u64, Status)> = q.drain(..).collect();
        drop(q);
        if batch.is_empty() && last_progress.elapsed() > Duration::from_secs(90) {
            break; // the rest are lost
        }
        for (ud, st) in batch {
            last_progress = Instant::now();
            if counts[ud as usize].fetch_add(1, SeqCst) > 0 {
                duplicated += 1;
                continue;
            }
            let Some(lane) = lanes.iter_mut().find(|l| l.busy.is_some_and(|b| b.0 == ud)) else {
                continue;
            };
            let (_, opcode, content) = lane.busy.take().unwrap();
            in_flight -= 1;
            if st != Status::MCFX_OK {
                failed += 1;
                eprintln!("soak: op {ud} ({opcode:?} {} B) failed: {st}", content.len);
                lane.content = None; // unknown remote content now
                continue;
            }
            match opcode {
                Opcode::Write => lane.content = Some(content),
                Opcode::Read => {
                    let got = &local.bytes()[lane.local..lane.local + content.len];
                    let mut want = vec![0u8; content.len];
                    pattern::fill(&mut want, content.seed);
                    if pattern::checksum(got) != pattern::checksum(&want) {
                        corrupt += 1;
                        eprintln!(
                            "soak: op {ud}: read of {} B brought back wrong data",
                            content.len
                        );
                    }
                }
            }
        }
    }
    let lost = lanes.iter().filter(|l| l.busy.is_some()).count() as u64;
    let stats = init.stats();
    eprintln!(
        "soak: {} ops + {} final reads in {:.1}s, {:.2} GB moved, failed={failed}, peers: {} in-process, {} cross-process",
        a.ops,
        next_id - a.ops,
        start.elapsed().as_secs_f64(),
        stats.bytes as f64 / 1e9,
        a.inproc,
        a.xproc
    );
    drop(init);
    drop(targets);
    println!("soak: ops={} corrupt={corrupt} lost={lost} duplicated={duplicated}", a.ops);
    if corrupt + lost + duplicated + failed > 0 {
        std::process::exit(1);
    }
}

fn submit(t: &Transport, lane: &Lane, id: u64, opcode: Opcode, c: Content, local_base: usize) {
    let req = OpRequest {
        opcode,
        local: local_base + lane.local,
        len: c.len as u64,
        peer: lane.peer,
        remote: lane.remote,
        user_data: id,
    };
    let mut accepted = 0;
    loop {
        match t.submit(&[req], &mut accepted) {
            Ok(()) => return,
            Err(e) if e.status == Status::MCFX_E_QUEUE_FULL => std::thread::yield_now(),
            Err(e) => panic!("soak: submit failed: {e}"),
        }
    }
}
