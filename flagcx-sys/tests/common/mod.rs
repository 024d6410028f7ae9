//! Fixtures shared by the flagcx-sys integration tests.
#![allow(dead_code)]

use std::ffi::CString;
use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use flagcx_sys::{Conn, Engine, Iov, MrId, Poll, RemoteDesc, TransferId};

#[allow(unused_imports)]
pub use flagcx_sys::testing::{assert_no_violations, serial};

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

    pub fn iov(&self, off: usize, len: usize, remote: RemoteDesc) -> Iov {
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

    /// `src` on the local engine and `dst` on the remote one, `len` bytes
    /// each, then a fresh connection and a descriptor for all of `dst`.
    pub fn link(&self, len: usize) -> Link {
        let src = Buf::new(&self.local, len);
        let dst = Buf::new(&self.remote, len);
        let conn = self.connect();
        let desc = conn.make_desc(dst.addr() as u64, len as u32).unwrap();
        Link { conn, desc, src, dst }
    }
}

/// What `Pair::link` sets up. The connection drops before the buffers.
pub struct Link {
    pub conn: Conn,
    pub desc: RemoteDesc,
    pub src: Buf,
    pub dst: Buf,
}

impl Link {
    /// Starts a write of the first `len` bytes of `src` to `dst`.
    pub fn write(&self, len: usize) -> TransferId {
        self.conn.write_vector(&[self.src.iov(0, len, self.desc)]).unwrap()
    }

    /// Polls `id` on this link's connection until it finishes.
    pub fn wait(&self, id: TransferId) -> Poll {
        wait(&self.conn, id, LIMIT)
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
