//! Fixtures shared by the flagcx-sys integration tests.
#![allow(dead_code)]

use std::ffi::CString;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
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

/// An aligned buffer registered with an engine for its lifetime.
pub struct Buf {
    mem: AlignedBuf,
    pub mr: MrId,
    engine: Engine,
}

impl Buf {
    pub fn new(engine: &Engine, len: usize) -> Buf {
        let mem = AlignedBuf::new(len);
        // SAFETY: the buffer outlives the registration (Drop deregisters
        // first), and tests only look at it between transfers.
        let mr = unsafe { engine.register(mem.addr(), len) }.expect("register");
        Buf { mem, mr, engine: engine.clone() }
    }

    pub fn addr(&self) -> usize {
        self.mem.addr()
    }

    pub fn bytes(&mut self) -> &mut [u8] {
        self.mem.bytes()
    }

    pub fn iov(&self, off: usize, len: usize, remote: flagcx_sys::RemoteDesc) -> Iov {
        Iov::new(self.mr, self.addr() + off, len, remote)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.engine.deregister(self.mr);
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

#[allow(unused_imports)]
pub use flagcx_sys::testing::PeerProcess as Peer;
