//! flagcx-sys: a binding to FlagCX's point-to-point engine.
//!
//! FlagCX's P2P API is C++ (global functions taking `std::vector`s), so the
//! crate compiles a small `extern "C"` shim (`shim/`) and wraps it here in
//! safe types. Without `FLAGCX_HOME` the shim links the in-tree software
//! provider (`provider/`), a `libflagcx.so` with the same API that moves bytes
//! with `memcpy` (same process) or `process_vm_writev`/`readv` (another
//! process on this machine), so everything runs without an RDMA NIC.
//!
//! Ownership model:
//! - [`Engine`] is a shared handle; the FlagCX engine is destroyed when the
//!   last `Engine` clone and the last [`Conn`] made from it are dropped.
//! - [`Conn`] is owned ([`Engine::connect`]) and destroyed on drop.
//! - [`TransferId`] is neither `Copy` nor `Clone`: [`Conn::poll`] consumes it
//!   and hands it back only while the transfer is pending, so an id cannot be
//!   polled again after it reported completion (FlagCX recycles it then).
//! - Transfers are built in an [`IovList`] (FlagCX's own argument vectors)
//!   and started with [`Conn::write_list`] / [`Conn::read_list`].
//!
//! The product surface is the above plus [`reports_failures`] and
//! [`is_software_provider`]. Test support (the `testing` and `pattern`
//! modules, the software provider's knobs in `sw`, and the `flagcx-sw-peer`
//! binary) exists only with the `test-support` feature, which only tests,
//! examples and benchmarks enable.

#![allow(non_camel_case_types)]

pub mod ffi;
#[cfg(feature = "test-support")]
pub mod pattern;
#[cfg(feature = "test-support")]
pub mod sw;
#[cfg(feature = "test-support")]
pub mod testing;

use std::ffi::{c_int, c_void, CStr};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::{Arc, OnceLock};

/// Why a FlagCX call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// An argument was rejected before reaching FlagCX (NULL, zero length,
    /// more than `i32::MAX` entries, ...).
    Invalid,
    /// FlagCX returned an error code or NULL.
    Flagcx,
    /// A C++ exception was caught inside the shim.
    Exception,
    /// Memory for a result could not be allocated on the Rust side.
    NoMemory,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Invalid => "invalid argument",
            Error::Flagcx => "FlagCX reported an error",
            Error::Exception => "C++ exception in FlagCX",
            Error::NoMemory => "out of memory",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// `buf` resized to `len` zero bytes, growing fallibly.
fn zeroed(buf: &mut Vec<u8>, len: usize) -> Result<()> {
    buf.clear();
    buf.try_reserve_exact(len).map_err(|_| Error::NoMemory)?;
    buf.resize(len, 0);
    Ok(())
}

fn check(status: ffi::fxs_status) -> Result<()> {
    match status {
        ffi::FXS_OK => Ok(()),
        ffi::FXS_INVALID => Err(Error::Invalid),
        ffi::FXS_FLAGCX => Err(Error::Flagcx),
        _ => Err(Error::Exception),
    }
}

/// A registered memory region id (FlagCX's `FlagcxP2pMr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MrId(pub u64);

/// The largest length one descriptor can carry (`MakeDesc` takes a `uint32`).
pub const MAX_DESC_LEN: u64 = u32::MAX as u64;

struct EngineHandle(NonNull<c_void>);

// SAFETY: FlagCX engines are used from many threads (its own workers do);
// the calls this crate exposes on a shared engine (Connect, Reg, MrDestroy,
// metadata) take FlagCX's internal locks.
unsafe impl Send for EngineHandle {}
// SAFETY: as above; no method mutates Rust-side state.
unsafe impl Sync for EngineHandle {}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from fxs_engine_create and this is the last
        // reference (every Conn holds an Arc to this handle).
        unsafe { ffi::fxs_engine_destroy(self.0.as_ptr()) }
    }
}

/// A FlagCX P2P engine (shared handle).
#[derive(Clone)]
pub struct Engine {
    handle: Arc<EngineHandle>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Engine({:p})", self.raw())
    }
}

impl Engine {
    /// Creates an engine. Real FlagCX returns an error here on a machine
    /// without a usable RDMA stack.
    pub fn create() -> Result<Engine> {
        let mut raw = ptr::null_mut();
        // SAFETY: raw is a valid out-pointer.
        check(unsafe { ffi::fxs_engine_create(&mut raw) })?;
        let ptr = NonNull::new(raw).ok_or(Error::Flagcx)?;
        Ok(Engine { handle: Arc::new(EngineHandle(ptr)) })
    }

    fn raw(&self) -> *mut c_void {
        self.handle.0.as_ptr()
    }

    /// The FlagCX engine pointer, for calls this wrapper does not cover.
    /// It stays valid while this `Engine` (or a clone or Conn of it) lives.
    pub fn as_raw(&self) -> *mut c_void {
        self.raw()
    }

    /// Starts the thread that answers peers' connection handshakes.
    pub fn start_rpc_server(&self) -> Result<()> {
        // SAFETY: live engine pointer.
        check(unsafe { ffi::fxs_engine_start_rpc_server(self.raw()) })
    }

    /// Stops accepting new connections; existing ones keep working.
    pub fn stop_accept(&self) {
        // SAFETY: live engine pointer.
        unsafe { ffi::fxs_engine_stop_accept(self.raw()) }
    }

    pub fn rpc_port(&self) -> Option<u16> {
        // SAFETY: live engine pointer.
        let port = unsafe { ffi::fxs_engine_rpc_port(self.raw()) };
        u16::try_from(port).ok().filter(|p| *p != 0)
    }

    /// FlagCX's metadata string, `host:port?gpu?notifPort`.
    /// `NoMemory` when the buffer cannot be allocated (never an abort).
    pub fn metadata(&self) -> Result<String> {
        let mut buf = Vec::new();
        zeroed(&mut buf, 128)?;
        loop {
            let mut len = 0usize;
            // SAFETY: buf is writable for buf.len() bytes; len is an out-pointer.
            let st = unsafe {
                ffi::fxs_engine_metadata(self.raw(), buf.as_mut_ptr().cast(), buf.len(), &mut len)
            };
            if st == ffi::FXS_INVALID && len >= buf.len() {
                zeroed(&mut buf, len + 1)?;
                continue;
            }
            check(st)?;
            buf.truncate(len);
            return String::from_utf8(buf).map_err(|_| Error::Flagcx);
        }
    }

    /// The endpoint peers connect to: the metadata before the first `?`
    /// (what Mooncake publishes as `rdma_server_name`).
    pub fn endpoint(&self) -> Result<String> {
        let mut md = self.metadata()?;
        // Cut in place: no second allocation.
        md.truncate(md.find('?').unwrap_or(md.len()));
        Ok(md)
    }

    /// A fresh connection owned by the returned [`Conn`] (its snapshot of the
    /// peer's regions is taken now).
    pub fn connect(&self, ip: &CStr, remote_gpu: i32, port: u16) -> Result<Conn> {
        let mut raw = ptr::null_mut();
        // SAFETY: live engine, NUL-terminated ip, valid out-pointer.
        check(unsafe {
            ffi::fxs_connect(self.raw(), ip.as_ptr(), remote_gpu, c_int::from(port), &mut raw)
        })?;
        let ptr = NonNull::new(raw).ok_or(Error::Flagcx)?;
        Ok(Conn { ptr, _engine: self.handle.clone() })
    }

    /// Registers `[addr, addr + len)` for transfers (process-wide in FlagCX).
    ///
    /// # Safety
    /// The range must stay valid memory until it is deregistered, and may be
    /// read and written by transfers (local and remote) at any time until
    /// then: the caller must not hold Rust references into it across that.
    pub unsafe fn register(&self, addr: usize, len: usize) -> Result<MrId> {
        let mut mr = 0u64;
        // SAFETY: live engine; the caller vouches for the range.
        check(unsafe { ffi::fxs_reg(self.raw(), addr, len, &mut mr) })?;
        Ok(MrId(mr))
    }

    /// Deregisters a region. Note FlagCX has no refcount: registering the same
    /// base twice gives the same id, and one deregistration removes it.
    pub fn deregister(&self, mr: MrId) {
        // SAFETY: live engine; an unknown id is ignored by FlagCX.
        unsafe { ffi::fxs_mr_destroy(self.raw(), mr.0) }
    }
}

/// A connection to one peer engine, destroyed on drop.
pub struct Conn {
    ptr: NonNull<c_void>,
    // Keeps the engine alive: FlagCX connections must not outlive it.
    _engine: Arc<EngineHandle>,
}

// SAFETY: FlagCX connections accept WriteVector/ReadVector/MakeDesc from
// several threads; the one call that is not thread-safe per id (status) is
// guarded by TransferId's move-only ownership.
unsafe impl Send for Conn {}
// SAFETY: as above.
unsafe impl Sync for Conn {}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conn({:p})", self.ptr)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the conn came from fxs_connect and is destroyed once.
        unsafe { ffi::fxs_conn_destroy(self.ptr.as_ptr()) }
    }
}

/// A transfer in flight. Move-only: see [`Conn::poll`].
#[must_use = "a transfer id must be polled until it completes"]
#[derive(Debug, PartialEq, Eq)]
pub struct TransferId(u64);

impl TransferId {
    pub fn raw(&self) -> u64 {
        self.0
    }
}

/// One poll's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Not finished: poll the id again later.
    Pending(TransferId),
    /// Finished. With real FlagCX this includes transfers that failed, which
    /// it cannot tell apart (see [`reports_failures`]).
    Done,
    /// Finished with an error (only from providers that can tell).
    Failed,
}

impl Conn {
    /// The FlagCX connection pointer, for calls this wrapper does not cover
    /// (tests use it to misuse the status call on purpose).
    pub fn as_raw(&self) -> *mut c_void {
        self.ptr.as_ptr()
    }

    /// Describes the remote range `[remote_addr, remote_addr + len)` from the
    /// peer's regions as seen when this connection was made (FlagCX's
    /// MakeDesc) and returns the descriptor's remote key; `Err` when no region
    /// of the snapshot holds the range. [`IovList::push`] makes the
    /// descriptors of a transfer in place; this only asks whether (and
    /// through which key) the connection reaches a range.
    pub fn make_desc(&self, remote_addr: u64, len: u32) -> Result<u32> {
        let mut desc =
            ffi::fxs_desc { addr: 0, size: 0, rkey: 0, nmsgs: 0, rid: 0, idx: 0, padding: [0; 32] };
        // SAFETY: live conn, valid out-pointer.
        check(unsafe { ffi::fxs_make_desc(self.ptr.as_ptr(), remote_addr, len, &mut desc) })?;
        Ok(desc.rkey)
    }

    /// Polls a transfer once. The id comes back only while it is pending.
    ///
    /// A failure inside the shim (a C++ exception) is reported as pending:
    /// the caller's deadline then decides, as for any transfer that never
    /// finishes.
    #[inline]
    pub fn poll(&self, id: TransferId) -> Poll {
        // SAFETY: live conn; `id` is owned, so no other thread polls it.
        match unsafe { ffi::fxs_poll(self.ptr.as_ptr(), id.0) } {
            ffi::FXS_POLL_DONE => Poll::Done,
            ffi::FXS_POLL_FAILED => Poll::Failed,
            _ => Poll::Pending(id),
        }
    }
}

/// The entries of one vector call, built in FlagCX's own argument layout
/// (the shim's `fxs_list_*`): no entry array to convert per call and no
/// thread-local lookup. Reused across calls; once its vectors reached their
/// high-water mark, building and issuing a call allocates nothing.
pub struct IovList {
    ptr: NonNull<c_void>,
    /// Entries appended since the last call (the shim's vectors' length).
    len: usize,
}

// SAFETY: the list is plain C++ vectors owned by this value alone; `&mut self`
// on every method keeps one thread at a time on it.
unsafe impl Send for IovList {}

impl fmt::Debug for IovList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IovList({} entries)", self.len)
    }
}

impl Drop for IovList {
    fn drop(&mut self) {
        // SAFETY: the pointer came from fxs_list_create and is destroyed once.
        unsafe { ffi::fxs_list_destroy(self.ptr.as_ptr()) }
    }
}

impl IovList {
    /// An empty list; `Err` when the shim is out of memory.
    pub fn new() -> Result<IovList> {
        // SAFETY: no arguments; NULL on failure.
        let ptr = NonNull::new(unsafe { ffi::fxs_list_create() }).ok_or(Error::Exception)?;
        Ok(IovList { ptr, len: 0 })
    }

    /// Entries appended since the last call.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an entry moving `[local, local + len)` (inside region `mr`)
    /// to or from the remote range at `remote_addr`, described from `conn`'s
    /// snapshot of the peer's regions (the descriptor is made in place). On
    /// error (the remote range is in no region the peer registered, or a
    /// zero length) nothing is appended.
    #[inline]
    pub fn push(
        &mut self,
        conn: &Conn,
        mr: MrId,
        local: usize,
        len: u32,
        remote_addr: u64,
    ) -> Result<()> {
        // SAFETY: live list and conn; `local` is only stored (FlagCX reads
        // or writes it in the vector call, whose caller vouches for it).
        check(unsafe {
            ffi::fxs_list_push(
                self.ptr.as_ptr(),
                conn.ptr.as_ptr(),
                mr.0,
                local as *mut c_void,
                len,
                remote_addr,
            )
        })?;
        self.len += 1;
        Ok(())
    }

    /// Drops the entries from index `n` on.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            // SAFETY: live list.
            unsafe { ffi::fxs_list_truncate(self.ptr.as_ptr(), n) };
            self.len = n;
        }
    }
}

impl Conn {
    /// Starts a one-sided write of every entry of `list`; the list is empty
    /// afterwards, whatever the outcome. Local ranges must lie inside their
    /// registered regions (FlagCX checks and fails synchronously).
    /// `Err(Invalid)` for an empty list.
    #[inline]
    pub fn write_list(&self, list: &mut IovList) -> Result<TransferId> {
        let mut id = 0;
        list.len = 0;
        // SAFETY: live conn and list; FlagCX only reads local memory inside
        // registered regions, whose validity `register` vouched for.
        check(unsafe { ffi::fxs_list_write(self.ptr.as_ptr(), list.ptr.as_ptr(), &mut id) })?;
        Ok(TransferId(id))
    }

    /// Starts a one-sided read into every entry of `list`; the list is empty
    /// afterwards, whatever the outcome.
    #[inline]
    pub fn read_list(&self, list: &mut IovList) -> Result<TransferId> {
        let mut id = 0;
        list.len = 0;
        // SAFETY: as write_list; writes land only in registered regions.
        check(unsafe { ffi::fxs_list_read(self.ptr.as_ptr(), list.ptr.as_ptr(), &mut id) })?;
        Ok(TransferId(id))
    }
}

/// Whether the loaded FlagCX tells failed transfers apart from good ones
/// (the software provider does; real FlagCX reports both as done).
pub fn reports_failures() -> bool {
    // SAFETY: no arguments; resolves a symbol once.
    unsafe { ffi::fxs_reports_failures() != 0 }
}

/// Whether the loaded libflagcx is the in-tree software provider, a test
/// double (no RDMA): it exports the provider's extension
/// (`provider/include/flagcx_sw.h`), which real FlagCX does not.
pub fn is_software_provider() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        // SAFETY: RTLD_DEFAULT searches the loaded objects; the name is
        // NUL-terminated. The symbol is only looked at, never called.
        !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"flagcxSwSetKnob".as_ptr()) }.is_null()
    })
}
