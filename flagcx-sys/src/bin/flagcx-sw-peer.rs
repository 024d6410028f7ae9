//! flagcx-sw-peer: a FlagCX peer in its own process, driven over stdin.
//!
//! Test support (built only with the `test-support` feature:
//! `cargo build -p flagcx-sys --features test-support --bin flagcx-sw-peer`).
//! Used by the cross-process tests, the soak and the benchmark. It creates an
//! engine, starts its RPC server, registers one buffer and prints
//!
//! ```text
//! ready endpoint=HOST:PORT addr=ADDR len=LEN pid=PID  (HOST: FLAGCX_SW_LISTEN_ADDR, default 127.0.0.1)
//! ```
//!
//! then answers one line per command (numbers in decimal or 0x-hex):
//!
//! | command                          | answer                              |
//! |----------------------------------|-------------------------------------|
//! | `fill SEED OFF LEN`              | `ok` (pattern::fill of the range)   |
//! | `sum OFF LEN`                    | `sum HEX` (pattern::checksum)       |
//! | `reg LEN`                        | `reg addr=ADDR len=LEN`             |
//! | `write ENDPOINT RADDR OFF LEN`   | `ok` / `err WHY` (our range -> peer)|
//! | `read ENDPOINT RADDR OFF LEN`    | `ok` / `err WHY` (peer -> our range)|
//! | `dereg [I]`                      | `ok` (deregisters buffer I, default 0; it stays mapped) |
//! | `rereg [I]`                      | `ok mr=ID` (registers buffer I again: a new id and key) |
//! | `exit` (or end of input)         | exits 0                             |
//!
//! `write` and `read` open a fresh connection each time (so the other side's
//! latest registrations are visible) and wait up to 30 s for completion.
//!
//! Arguments: `--size BYTES` (default 64 MiB) for the first buffer.

use std::ffi::CString;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use flagcx_sys::testing::{self, AlignedBuf};
use flagcx_sys::{pattern, Engine, IovList, MrId, Poll};

struct Region {
    addr: usize,
    len: usize,
    mr: MrId,
}

/// The next word as a number (decimal or 0x-hex).
fn parse_num(s: Option<&str>) -> Result<u64, String> {
    testing::parse_num(s.ok_or("missing number")?)
}

fn alloc_region(engine: &Engine, len: usize) -> Result<Region, String> {
    // Leaked on purpose: it lives as long as the process and peers may
    // write it at any time.
    let mem = std::mem::ManuallyDrop::new(AlignedBuf::new(len));
    // SAFETY: the buffer is never freed, and we only form slices over it while
    // handling a command, after the transfers that touch it completed.
    let mr = unsafe { engine.register(mem.addr(), len) }.map_err(|e| e.to_string())?;
    Ok(Region { addr: mem.addr(), len, mr })
}

fn range(r: &Region, off: u64, len: u64) -> Result<&'static mut [u8], String> {
    let end = off.checked_add(len).ok_or("range overflows")?;
    if end > r.len as u64 {
        return Err(format!("range {off}+{len} is outside the {}-byte buffer", r.len));
    }
    // SAFETY: inside the leaked allocation; commands run one at a time.
    Ok(unsafe { std::slice::from_raw_parts_mut((r.addr + off as usize) as *mut u8, len as usize) })
}

fn transfer(
    engine: &Engine,
    r: &Region,
    write: bool,
    args: &mut std::str::SplitWhitespace,
) -> Result<(), String> {
    let endpoint = args.next().ok_or("missing endpoint")?;
    let raddr = parse_num(args.next())?;
    let off = parse_num(args.next())?;
    let len = parse_num(args.next())?;
    range(r, off, len)?;
    // A fresh connection per command: its snapshot of the other side's
    // regions then includes everything registered so far.
    let (host, port) = endpoint.rsplit_once(':').ok_or("endpoint is not host:port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = CString::new(host).map_err(|e| e.to_string())?;
    let port: u16 = port.parse().map_err(|_| "bad port")?;
    let conn = engine.connect(&host, 0, port).map_err(|e| format!("connect: {e}"))?;
    let len32 = u32::try_from(len).map_err(|_| "length over 4 GiB")?;
    let mut list = IovList::new().map_err(|e| format!("entry list: {e}"))?;
    list.push(&conn, r.mr, r.addr + off as usize, len32, raddr)
        .map_err(|e| format!("make_desc: {e}"))?;
    let mut id = if write { conn.write_list(&mut list) } else { conn.read_list(&mut list) }
        .map_err(|e| format!("submit: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match conn.poll(id) {
            Poll::Done => return Ok(()),
            Poll::Failed => return Err("transfer failed".into()),
            Poll::Pending(again) if Instant::now() < deadline => {
                id = again;
                std::thread::yield_now();
            }
            Poll::Pending(_) => return Err("transfer timed out".into()),
        }
    }
}

fn main() {
    let mut size: usize = 64 << 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--size" => size = args.next().and_then(|s| s.parse().ok()).expect("--size BYTES"),
            other => {
                eprintln!("flagcx-sw-peer: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let engine = Engine::create().expect("FlagCX engine");
    engine.start_rpc_server().expect("RPC server");
    let mut regions = vec![alloc_region(&engine, size).expect("first buffer")];
    let endpoint = engine.endpoint().expect("endpoint");

    let stdout = io::stdout();
    let mut out = stdout.lock();
    let first = &regions[0];
    writeln!(
        out,
        "ready endpoint={endpoint} addr={:#x} len={} pid={}",
        first.addr,
        first.len,
        std::process::id()
    )
    .unwrap();
    out.flush().unwrap();

    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("exit") => break,
            None => continue,
            Some("fill") => (|| {
                let seed = parse_num(words.next())?;
                let buf = range(&regions[0], parse_num(words.next())?, parse_num(words.next())?)?;
                pattern::fill(buf, seed);
                Ok("ok".to_string())
            })(),
            Some("sum") => (|| {
                let buf = range(&regions[0], parse_num(words.next())?, parse_num(words.next())?)?;
                Ok(format!("sum {:x}", pattern::checksum(buf)))
            })(),
            Some("reg") => (|| {
                let len = parse_num(words.next())? as usize;
                let r = alloc_region(&engine, len)?;
                let reply = format!("reg addr={:#x} len={}", r.addr, r.len);
                regions.push(r);
                Ok(reply)
            })(),
            Some(cmd @ ("dereg" | "rereg")) => (|| {
                let i = words.next().map_or(Ok(0), |w| parse_num(Some(w)))? as usize;
                let r = regions.get_mut(i).ok_or("no such buffer")?;
                if cmd == "dereg" {
                    engine.deregister(r.mr);
                    return Ok("ok".to_string());
                }
                // SAFETY: the buffer is leaked (see alloc_region).
                r.mr = unsafe { engine.register(r.addr, r.len) }.map_err(|e| e.to_string())?;
                Ok(format!("ok mr={}", r.mr.0))
            })(),
            Some(cmd @ ("write" | "read")) => {
                transfer(&engine, &regions[0], cmd == "write", &mut words).map(|_| "ok".to_string())
            }
            Some(other) => Err(format!("unknown command {other:?}")),
        };
        match reply {
            Ok(r) => writeln!(out, "{r}"),
            Err(e) => writeln!(out, "err {e}"),
        }
        .unwrap();
        out.flush().unwrap();
    }
}
