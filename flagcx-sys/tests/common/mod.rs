//! Fixtures shared by the flagcx-sys integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use flagcx_sys::testing::AlignedBuf;
use flagcx_sys::{Conn, Engine, IovList, MrId, Poll, TransferId};

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

    /// The entry moving `len` bytes at `off` in this buffer to or from the
    /// peer's `remote` address.
    pub fn entry(&self, off: usize, len: usize, remote: u64) -> Entry {
        Entry { mr: self.mr, local: self.addr() + off, len, remote }
    }
}

/// One entry of a vector transfer, pushed into an [`IovList`] by
/// [`write`] / [`read`] (which make its descriptor from the connection's
/// snapshot of the peer's regions).
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub mr: MrId,
    pub local: usize,
    pub len: usize,
    pub remote: u64,
}

fn list_of(conn: &Conn, entries: &[Entry]) -> flagcx_sys::Result<IovList> {
    let mut list = IovList::new()?;
    for e in entries {
        let len = u32::try_from(e.len).map_err(|_| flagcx_sys::Error::Invalid)?;
        list.push(conn, e.mr, e.local, len, e.remote)?;
    }
    Ok(list)
}

/// One vector write of `entries`; `Err` when an entry's remote range is in
/// no region of the snapshot, or FlagCX refused the call.
pub fn write(conn: &Conn, entries: &[Entry]) -> flagcx_sys::Result<TransferId> {
    conn.write_list(&mut list_of(conn, entries)?)
}

/// One vector read into `entries` (see [`write`]).
pub fn read(conn: &Conn, entries: &[Entry]) -> flagcx_sys::Result<TransferId> {
    conn.read_list(&mut list_of(conn, entries)?)
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

    /// A fresh connection (its region snapshot is taken now).
    pub fn connect(&self) -> Conn {
        let port = self.remote.rpc_port().unwrap();
        self.local.connect(c"127.0.0.1", 0, port).expect("connect")
    }

    /// `src` on the local engine and `dst` on the remote one, `len` bytes
    /// each, then a fresh connection (whose snapshot describes all of `dst`).
    pub fn link(&self, len: usize) -> Link {
        let src = Buf::new(&self.local, len);
        let dst = Buf::new(&self.remote, len);
        let conn = self.connect();
        conn.make_desc(dst.addr() as u64, len as u32).unwrap();
        Link { conn, src, dst }
    }
}

/// What `Pair::link` sets up. The connection drops before the buffers.
pub struct Link {
    pub conn: Conn,
    pub src: Buf,
    pub dst: Buf,
}

impl Link {
    /// The start of `dst`, as the peer's address.
    pub fn remote(&self) -> u64 {
        self.dst.addr() as u64
    }

    /// Starts a write of the first `len` bytes of `src` to `dst`.
    pub fn write(&self, len: usize) -> TransferId {
        write(&self.conn, &[self.src.entry(0, len, self.remote())]).unwrap()
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
