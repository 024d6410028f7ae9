//! Fixtures shared by the flagcx-sys integration tests.
#![allow(dead_code)]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flagcx_sys::{sw, Conn, Engine, Iov, MrId, Poll, TransferId};

/// Provider knobs, op counters and violation counters are process-wide, so
/// the tests of one binary run one at a time. Each test starts from default
/// knobs and zero violations.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(sw::available(), "these tests need the in-tree software provider");
    for (k, v) in [
        (sw::Knob::LatencyNs, 0),
        (sw::Knob::FailOp, 0),
        (sw::Knob::HangOp, 0),
        (sw::Knob::ConnectDelayMs, 0),
        (sw::Knob::RefuseConnect, 0),
        (sw::Knob::ConnectTimeoutMs, 10_000),
    ] {
        assert!(sw::set_knob(k, v));
    }
    sw::reset_violations();
    guard
}

pub fn assert_no_violations() {
    let v = sw::violations().unwrap();
    assert_eq!(v.total(), 0, "provider saw misuse: {v:?}");
}

/// A page-aligned heap buffer registered with an engine for its lifetime.
pub struct Buf {
    ptr: *mut u8,
    len: usize,
    pub mr: MrId,
    engine: Engine,
}

impl Buf {
    pub fn new(engine: &Engine, len: usize) -> Buf {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: len > 0 in every test.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        // SAFETY: the buffer outlives the registration (Drop deregisters
        // first), and tests only look at it between transfers.
        let mr = unsafe { engine.register(ptr as usize, len) }.expect("register");
        Buf { ptr, len, mr, engine: engine.clone() }
    }

    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: owned allocation of len bytes; no transfer runs while a test
        // holds this slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    pub fn iov(&self, off: usize, len: usize, remote: flagcx_sys::RemoteDesc) -> Iov {
        Iov::new(self.mr, self.addr() + off, len, remote)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.engine.deregister(self.mr);
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).unwrap();
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// Two engines in this process: `local` initiates, `remote` serves.
pub struct Pair {
    pub local: Engine,
    pub remote: Engine,
}

impl Pair {
    pub fn new() -> Pair {
        let local = Engine::create().expect("local engine");
        let remote = Engine::create().expect("remote engine");
        remote.start_rpc_server().expect("rpc server");
        Pair { local, remote }
    }

    pub fn session(&self) -> CString {
        CString::new(self.remote.endpoint().unwrap()).unwrap()
    }

    /// A fresh connection (its region snapshot is taken now).
    pub fn connect(&self) -> Conn {
        let port = self.remote.rpc_port().unwrap();
        self.local.connect(c"127.0.0.1", 0, port).expect("connect")
    }
}

/// Polls `id` until it finishes; panics after `limit`.
pub fn wait(conn: &Conn, mut id: TransferId, limit: Duration) -> Poll {
    let deadline = Instant::now() + limit;
    loop {
        match conn.poll(id) {
            Poll::Pending(again) => {
                assert!(Instant::now() < deadline, "transfer still pending after {limit:?}");
                id = again;
                std::thread::yield_now();
            }
            done => return done,
        }
    }
}

pub const LIMIT: Duration = Duration::from_secs(20);

/// A flagcx-sw-peer child process.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub endpoint: String,
    pub addr: u64,
    pub len: u64,
    pub pid: u32,
}

impl Peer {
    pub fn spawn(size: usize) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flagcx-sw-peer"))
            .args(["--size", &size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flagcx-sw-peer");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("peer said {line:?}"))
        };
        let num = |s: String| match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => s.parse().unwrap(),
        };
        Peer {
            endpoint: field("endpoint"),
            addr: num(field("addr")),
            len: num(field("len")),
            pid: num(field("pid")) as u32,
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its one-line answer.
    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        reply.trim().to_owned()
    }

    pub fn sum(&mut self, off: u64, len: u64) -> u64 {
        let r = self.cmd(&format!("sum {off} {len}"));
        u64::from_str_radix(r.strip_prefix("sum ").unwrap_or_else(|| panic!("{r}")), 16).unwrap()
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}
