#![allow(non_camel_case_types)]

//! The C ABI: every `extern "C"` export, kept thin.
//!
//! Each export checks its pointers, converts arguments and calls a safe
//! function of the core inside [`guard`], which catches panics and records
//! the message of a failed call for `mcfx_last_error`. Policy lives in the
//! core modules, never here.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{c_char, c_void};
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Mutex};

use crate::config::{CNumbers, Config, MAX_ENDPOINT_LEN};
use crate::error::{fail, Error, Result, Status};
use crate::host_log::{self, Scope, Sink};
use crate::op::{OpRequest, OpSource, Opcode};
use crate::stats::Snapshot;
use crate::transport::Transport;

pub use crate::error::mcfx_status;

/// Newest version of the C ABI this library implements. `mcfx_create`
/// accepts a config of any version from 1 up to this one; the v1 table
/// (`mcfx_get_api_v1`) always reports 1.
pub const MCFX_ABI_VERSION: u32 = 1;

/// `mcfx_op.opcode`: read remote memory into local memory.
pub const MCFX_OP_READ: u32 = 0;
/// `mcfx_op.opcode`: write local memory to remote memory.
pub const MCFX_OP_WRITE: u32 = 1;

/// Longest endpoint (`host:port`, without the NUL) a resolver may write;
/// the resolver's buffer holds `MCFX_MAX_ENDPOINT_LEN + 1` bytes.
pub const MCFX_MAX_ENDPOINT_LEN: u32 = 255;
const _: () = assert!(MCFX_MAX_ENDPOINT_LEN as usize == MAX_ENDPOINT_LEN);

/// `mcfx_config.flags`: do not start FlagCX's RPC server (this transport only
/// initiates; peers cannot connect to it).
pub const MCFX_FLAG_NO_SERVE: u32 = 1;

/// Severity of a message passed to `mcfx_config.log`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum mcfx_log_level {
    MCFX_LOG_ERROR = 1,
    MCFX_LOG_WARN = 2,
    MCFX_LOG_INFO = 3,
    MCFX_LOG_DEBUG = 4,
    MCFX_LOG_TRACE = 5,
}

/// An opaque transport handle.
pub struct mcfx_transport {
    /// Dropped by this handle's `Drop`, inside its log scope.
    inner: ManuallyDrop<Transport>,
    /// The host's log callback, if the config had one.
    log: Option<Arc<Sink>>,
}

impl Drop for mcfx_transport {
    fn drop(&mut self) {
        // Shutdown's events go to this transport's callback, which is closed
        // before mcfx_destroy returns (detached threads see it closed).
        let _scope = Scope::enter(self.log.as_ref());
        // SAFETY: dropped exactly once, here; `inner` is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        if let Some(sink) = &self.log {
            host_log::close(sink);
        }
    }
}

/// Completion callback: `status` is `MCFX_OK` or the op's error. Runs on the
/// transport's progress thread; keep it short and never block in it. It must
/// not unwind into the library: a Rust callback may panic (the panic is
/// caught, counted and the thread continues), a C++ callback must not throw.
pub type mcfx_complete_fn =
    Option<unsafe extern "C-unwind" fn(ctx: *mut c_void, user_data: u64, status: mcfx_status)>;

/// Resolver callback: writes the endpoint (`host:port`, IPv6 as
/// `[addr]:port`, NUL-terminated) of `peer_id` into `buf` (`cap` bytes:
/// `MCFX_MAX_ENDPOINT_LEN + 1`) and returns 0, or returns non-zero when the peer is unknown. Runs on a
/// connector thread, never on the progress thread; it may block (e.g. on a
/// metadata server), which delays only that peer.
pub type mcfx_resolve_fn = Option<
    unsafe extern "C-unwind" fn(
        ctx: *mut c_void,
        peer_id: u64,
        buf: *mut c_char,
        cap: usize,
    ) -> i32,
>;

/// Log callback: `level` is the message's severity, `message` a
/// NUL-terminated line valid only during the call. Called from any thread
/// (the transport's threads and those calling into the library), possibly
/// concurrently; never after `mcfx_destroy` of its transport returned. Keep
/// it short, do not call into this library from it, and do not unwind out
/// of it (a C++ callback must not throw).
pub type mcfx_log_fn = Option<
    unsafe extern "C-unwind" fn(ctx: *mut c_void, level: mcfx_log_level, message: *const c_char),
>;

/// Transport configuration. Start from `mcfx_config_init`, which writes
/// `struct_size`, `abi_version` and every default, then set the callbacks.
/// Zero in a numeric field also means "default" (except `submit_wait_us`,
/// whose default is 0). A value above a field's documented maximum is
/// `MCFX_E_BAD_CONFIG`. Fields are only ever appended: a caller built against
/// an older header passes a smaller `struct_size` and gets defaults for the
/// newer fields. The smallest accepted `struct_size` covers the fields up to
/// `resolve_ctx`; `abi_version` may be any version from 1 to
/// `MCFX_ABI_VERSION`. The layout has no padding (pinned by compile-time
/// asserts of every offset).
#[repr(C)]
pub struct mcfx_config {
    /// `sizeof(mcfx_config)` as the caller compiled it.
    pub struct_size: u32,
    /// `MCFX_ABI_VERSION` as the caller compiled it.
    pub abi_version: u32,
    /// Required.
    pub on_complete: mcfx_complete_fn,
    /// Passed to `on_complete` untouched.
    pub complete_ctx: *mut c_void,
    /// Required.
    pub resolve: mcfx_resolve_fn,
    /// Passed to `resolve` untouched.
    pub resolve_ctx: *mut c_void,
    /// Submission queue slots (default 4096, at most 1048576).
    pub queue_capacity: u32,
    /// Microseconds a submit waits for queue space before
    /// `MCFX_E_QUEUE_FULL` (default 0: fail at once; at most 10000000).
    pub submit_wait_us: u32,
    /// Per-op deadline, in ms, counted from the `mcfx_submit` call that
    /// queued the op (coarse clock: granularity 1-4 ms; never early). Default
    /// 30000, at most 3600000.
    pub op_timeout_ms: u32,
    /// How long an op waits for its peer's connection, in ms (default 10000,
    /// at most 600000).
    pub connect_timeout_ms: u32,
    /// Microseconds the idle progress thread spins before parking
    /// (default 50, at most 10000).
    pub spin_grace_us: u32,
    /// Ops taken from the queue per progress pass (default 256, at most
    /// 65536).
    pub max_batch: u32,
    /// Longest piece of one op per FlagCX entry, in bytes (default 1 GiB,
    /// at most 4 GiB - 1). Longer ops are split and complete once.
    pub max_slice_bytes: u64,
    /// Threads that resolve and connect peers (default 4, at most 64).
    pub connect_threads: u32,
    /// On destroy, ms that in-flight ops may take to finish (default 1000,
    /// at most 60000).
    pub shutdown_timeout_ms: u32,
    /// `MCFX_FLAG_*` bits.
    pub flags: u32,
    /// The most verbose `mcfx_log_level` passed to `log` (default, and 0:
    /// `MCFX_LOG_WARN`; at most `MCFX_LOG_TRACE`).
    pub log_level: u32,
    /// NULL (no callback: the library logs only to stderr, and only when
    /// `MCFX_LOG` is set), or the host's logger. It receives this transport's
    /// messages, and those of no transport in particular.
    pub log: mcfx_log_fn,
    /// Passed to `log` untouched.
    pub log_ctx: *mut c_void,
}

/// The fields every caller must pass (everything up to `resolve_ctx`).
const MIN_CONFIG_SIZE: usize = std::mem::offset_of!(mcfx_config, queue_capacity);

/// One operation of a submit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mcfx_op {
    /// `MCFX_OP_READ` or `MCFX_OP_WRITE`.
    pub opcode: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Local address, inside one registered region with `length` bytes.
    pub local_addr: *mut c_void,
    /// Bytes to move (> 0; any size: long ops are split internally).
    pub length: u64,
    /// The peer, resolved through the resolver callback on first use.
    pub peer_id: u64,
    /// Absolute address in the peer's registered memory.
    pub remote_addr: u64,
    /// Returned in the completion.
    pub user_data: u64,
}

/// One region for `mcfx_register_batch`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mcfx_region {
    pub addr: *mut c_void,
    pub length: usize,
}

/// Counters (see `mcfx_get_stats`). Set `struct_size` before the call (at
/// least 8: the size and reserved words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mcfx_stats {
    pub struct_size: u32,
    pub reserved: u32,
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub canceled: u64,
    pub bytes: u64,
    pub queue_full: u64,
    pub wakeups: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub reconnects: u64,
    pub flagcx_transfers: u64,
    pub callback_panics: u64,
    /// Accepted ops not yet completed.
    pub in_flight: u64,
}

/// Version 1 of the function table (see `mcfx_get_api_v1`).
#[repr(C)]
pub struct mcfx_api_v1 {
    /// Always 1: this table's version (newer tables get their own export).
    pub abi_version: u32,
    /// `sizeof(mcfx_api_v1)` of the library; entries are only appended.
    pub struct_size: u32,
    pub impl_name: unsafe extern "C" fn() -> *const c_char,
    pub strerror: unsafe extern "C" fn(status: i32) -> *const c_char,
    pub last_error: unsafe extern "C" fn(buf: *mut c_char, cap: usize) -> usize,
    pub config_init: unsafe extern "C" fn(config: *mut mcfx_config, size: usize),
    pub create: unsafe extern "C" fn(
        config: *const mcfx_config,
        out: *mut *mut mcfx_transport,
    ) -> mcfx_status,
    pub destroy: unsafe extern "C" fn(transport: *mut mcfx_transport) -> mcfx_status,
    pub local_endpoint: unsafe extern "C" fn(
        transport: *const mcfx_transport,
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
    ) -> mcfx_status,
    pub register_memory: unsafe extern "C" fn(
        transport: *mut mcfx_transport,
        addr: *mut c_void,
        length: usize,
    ) -> mcfx_status,
    pub unregister_memory:
        unsafe extern "C" fn(transport: *mut mcfx_transport, addr: *mut c_void) -> mcfx_status,
    pub register_batch: unsafe extern "C" fn(
        transport: *mut mcfx_transport,
        regions: *const mcfx_region,
        count: usize,
    ) -> mcfx_status,
    pub unregister_batch: unsafe extern "C" fn(
        transport: *mut mcfx_transport,
        addrs: *const *mut c_void,
        count: usize,
    ) -> mcfx_status,
    pub submit: unsafe extern "C" fn(
        transport: *mut mcfx_transport,
        ops: *const mcfx_op,
        count: usize,
        accepted: *mut usize,
    ) -> mcfx_status,
    pub get_stats:
        unsafe extern "C" fn(transport: *const mcfx_transport, out: *mut mcfx_stats) -> mcfx_status,
}

// ---- the guard -------------------------------------------------------------

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: &str) {
    LAST_ERROR.with(|m| {
        let mut m = m.borrow_mut();
        m.clear();
        m.push_str(message);
    });
}

/// Runs an export's body: a failure becomes its status (its message kept for
/// `mcfx_last_error`), a panic becomes `MCFX_E_PANIC`. Nothing unwinds into C.
fn guard(name: &str, body: impl FnOnce() -> Result<()>) -> mcfx_status {
    let _inside = crate::log::InExport::enter();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mcfx_status::MCFX_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.message));
            e.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let _ = catch_unwind(|| tracing::error!(function = name, "panic: {what}"));
            set_last_error(&format!("{name}: internal panic: {what}"));
            mcfx_status::MCFX_E_PANIC
        }
    }
}

fn invalid<T>(what: &str) -> Result<T> {
    fail(Status::MCFX_E_INVALID_ARGUMENT, what)
}

/// Live handles, so a double destroy is reported instead of freeing twice.
static LIVE: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashSet<usize>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A live transport borrowed by an export; while it lives, the thread's
/// log events go to the transport's log callback.
struct Live<'a> {
    transport: &'a Transport,
    _log: Scope,
}

impl std::ops::Deref for Live<'_> {
    type Target = Transport;
    fn deref(&self) -> &Transport {
        self.transport
    }
}

/// Borrows the transport behind a handle the caller vouches is live.
fn live_transport<'a>(t: *const mcfx_transport) -> Result<Live<'a>> {
    // SAFETY: non-NULL handles come from mcfx_create and, by the documented
    // contract, are not used after mcfx_destroy returned.
    match unsafe { t.as_ref() } {
        Some(t) => Ok(Live { transport: &t.inner, _log: Scope::enter_if_any(t.log.as_ref()) }),
        None => invalid("NULL transport"),
    }
}

// ---- exports ---------------------------------------------------------------

/// The ABI version this library implements (`MCFX_ABI_VERSION`).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_abi_version() -> u32 {
    MCFX_ABI_VERSION
}

/// The implementation's name: "rust" for this library (the C++ baseline
/// says "cpp"). Static string; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_impl_name() -> *const c_char {
    c"rust".as_ptr()
}

/// A static description of a status code (unknown codes included). Never
/// NULL; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_strerror(status: i32) -> *const c_char {
    match Status::from_i32(status) {
        Some(s) => s.description().as_ptr(),
        None => c"unknown status code".as_ptr(),
    }
}

/// Copies the message of this thread's last failed call into `buf` (at most
/// `cap - 1` bytes plus a NUL) and returns the message's full length, like
/// `snprintf`. `buf` may be NULL when `cap` is 0. Thread-safe (per thread).
///
/// # Safety
/// `buf` must be writable for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn mcfx_last_error(buf: *mut c_char, cap: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|m| {
            let m = m.borrow();
            if !buf.is_null() && cap > 0 {
                let n = m.len().min(cap - 1);
                // SAFETY: the caller made buf writable for cap > n bytes.
                unsafe {
                    ptr::copy_nonoverlapping(m.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            m.len()
        })
    })
    .unwrap_or(0)
}

/// Fills the first `size` bytes of `*config` (pass `sizeof(mcfx_config)` as
/// the caller compiled it) with the defaults: `struct_size` (the part
/// written), `abi_version`, every numeric default (queue_capacity 4096,
/// op_timeout_ms 30000, ...), NULL callbacks, flags 0. A caller built against
/// an older, smaller header is never written past its struct. NULL, or `size`
/// below 8, is ignored. Thread-safe.
///
/// # Safety
/// `config` must be NULL or point to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn mcfx_config_init(config: *mut mcfx_config, size: usize) {
    if config.is_null() || size < 8 {
        return;
    }
    let n = size.min(std::mem::size_of::<mcfx_config>());
    let init = mcfx_config { struct_size: n as u32, ..default_config() };
    // SAFETY: checked non-NULL; the caller made `size` >= n bytes writable;
    // mcfx_config has no padding, so every byte copied is initialized.
    unsafe {
        ptr::copy_nonoverlapping((&init as *const mcfx_config).cast::<u8>(), config.cast::<u8>(), n)
    }
}

/// The defaults as the C struct carries them (see `CNumbers::defaults`).
fn default_config() -> mcfx_config {
    let d = CNumbers::defaults();
    mcfx_config {
        struct_size: std::mem::size_of::<mcfx_config>() as u32,
        abi_version: MCFX_ABI_VERSION,
        on_complete: None,
        complete_ctx: ptr::null_mut(),
        resolve: None,
        resolve_ctx: ptr::null_mut(),
        queue_capacity: d.queue_capacity,
        submit_wait_us: d.submit_wait_us,
        op_timeout_ms: d.op_timeout_ms,
        connect_timeout_ms: d.connect_timeout_ms,
        spin_grace_us: d.spin_grace_us,
        max_batch: d.max_batch,
        max_slice_bytes: d.max_slice_bytes,
        connect_threads: d.connect_threads,
        shutdown_timeout_ms: d.shutdown_timeout_ms,
        flags: if Config::default().serve_peers { 0 } else { MCFX_FLAG_NO_SERVE },
        log_level: mcfx_log_level::MCFX_LOG_WARN as u32,
        log: None,
        log_ctx: ptr::null_mut(),
    }
}

/// The numeric fields of a C config (zeros included: `Config::from_c`
/// applies the defaults).
fn c_numbers(c: &mcfx_config) -> CNumbers {
    CNumbers {
        queue_capacity: c.queue_capacity,
        submit_wait_us: c.submit_wait_us,
        op_timeout_ms: c.op_timeout_ms,
        connect_timeout_ms: c.connect_timeout_ms,
        spin_grace_us: c.spin_grace_us,
        max_batch: c.max_batch,
        max_slice_bytes: c.max_slice_bytes,
        connect_threads: c.connect_threads,
        shutdown_timeout_ms: c.shutdown_timeout_ms,
    }
}

/// Creates a transport: a FlagCX engine, its RPC server, the progress thread
/// and the connector threads. On success `*out` holds a handle to free with
/// `mcfx_destroy`. Thread-safe.
///
/// Errors: `MCFX_E_INVALID_ARGUMENT` (NULL config/out or missing callback),
/// `MCFX_E_BAD_CONFIG` (struct_size too small, abi_version 0 or above
/// `MCFX_ABI_VERSION`, values out of range: see each field's maximum),
/// `MCFX_E_FLAGCX` (no engine: e.g. no RDMA device with real FlagCX),
/// `MCFX_E_INTERNAL` (threads, or memory for the queue and op slots could not
/// be allocated; the host is never aborted).
///
/// The transports of one process share one FlagCX engine (FlagCX
/// registration is process-wide); they are otherwise independent and may be
/// created and destroyed in any order.
///
/// # Safety
/// `config` must point to `config->struct_size` readable bytes; `out` must be
/// writable. The callbacks and their contexts must stay valid until
/// `mcfx_destroy` returns.
#[no_mangle]
pub unsafe extern "C" fn mcfx_create(
    config: *const mcfx_config,
    out: *mut *mut mcfx_transport,
) -> mcfx_status {
    guard("mcfx_create", || {
        crate::log::init();
        if out.is_null() {
            return invalid("NULL out pointer");
        }
        // SAFETY: checked non-NULL; the caller provides a writable pointer.
        unsafe { out.write(ptr::null_mut()) };
        // SAFETY: the caller vouches config->struct_size bytes are readable.
        let c = unsafe { read_config(config)? };
        let (config, on_complete, resolver) = convert_config(&c)?;
        let log = convert_log(&c)?.map(|(level, f)| host_log::register(level, f));
        // Creation's events, and the new threads' (they inherit the route),
        // go to this transport's callback only.
        let scope = Scope::enter(log.as_ref());
        let inner = match Transport::create(config, on_complete, resolver) {
            Ok(inner) => inner,
            Err(e) => {
                drop(scope);
                if let Some(sink) = &log {
                    host_log::close(sink);
                }
                return Err(e);
            }
        };
        drop(scope);
        let handle =
            Box::into_raw(Box::new(mcfx_transport { inner: ManuallyDrop::new(inner), log }));
        live().get_or_insert_with(HashSet::new).insert(handle as usize);
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Destroys a transport: stops accepting submits (concurrent submits get
/// `MCFX_E_SHUTTING_DOWN`), delivers exactly one completion to every accepted
/// op (`MCFX_E_CANCELED` for ops that never ran or did not finish within
/// `shutdown_timeout_ms`), joins the progress thread, unregisters the
/// transport's memory and frees the handle. No callback runs after it
/// returns. NULL is a no-op (`MCFX_OK`); a handle that was already destroyed
/// gives `MCFX_E_INVALID_ARGUMENT` (unless its memory was reused by a newer
/// transport: do not rely on it).
///
/// Called from one of this transport's own callbacks (completion or
/// resolver), it returns `MCFX_E_IN_CALLBACK` and changes nothing: destroy
/// it from another thread. Destroying another transport from a callback is
/// allowed.
///
/// Blocking: destroy waits for a resolver call that is running to return
/// (the callback may use its context until destroy returns, so it cannot be
/// abandoned), logging a warning while it waits; a resolver that blocks
/// forever blocks destroy forever. Ops waiting for that peer fail
/// `MCFX_E_CONNECT` at `connect_timeout_ms` regardless. A FlagCX connect
/// still running after `connect_timeout_ms` is detached (it calls nothing
/// of the caller's).
///
/// Other transports of the process are not affected: they share the
/// process's FlagCX engine, which goes with the last transport, and memory
/// registered by several transports stays registered until the last of
/// them unregisters it.
///
/// # Safety
/// `transport` must be NULL or a handle from `mcfx_create`.
#[no_mangle]
pub unsafe extern "C" fn mcfx_destroy(transport: *mut mcfx_transport) -> mcfx_status {
    if transport.is_null() {
        return mcfx_status::MCFX_OK;
    }
    guard("mcfx_destroy", || {
        {
            let mut live = live();
            let Some(set) = live.as_mut().filter(|set| set.contains(&(transport as usize))) else {
                return invalid("not a live transport (destroyed twice?)");
            };
            // SAFETY: the handle is live (in the set, which we hold locked).
            if unsafe { &(*transport).inner }.on_own_thread() {
                return fail(
                    Status::MCFX_E_IN_CALLBACK,
                    "called from one of the transport's own callbacks; nothing was changed",
                );
            }
            set.remove(&(transport as usize));
        }
        // SAFETY: the handle was live (came from Box::into_raw in
        // mcfx_create) and is now removed from the live set: freed once.
        drop(unsafe { Box::from_raw(transport) });
        Ok(())
    })
}

/// Copies the transport's endpoint (`host:port`, what peers' resolvers must
/// return for it) into `buf` with a NUL and stores its length (without the
/// NUL) in `*len`. `MCFX_E_BUFFER_TOO_SMALL` when it does not fit (`*len`
/// still tells the length); `MCFX_E_NOT_SERVING` (nothing written) for a
/// transport created with `MCFX_FLAG_NO_SERVE`, which peers cannot connect
/// to. The transports of one process share one FlagCX engine, so they report
/// the same endpoint: a peer reaches every region registered in the process
/// through it. Thread-safe.
///
/// # Safety
/// `buf` must be writable for `cap` bytes; `len` must be writable.
#[no_mangle]
pub unsafe extern "C" fn mcfx_local_endpoint(
    transport: *const mcfx_transport,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mcfx_status {
    guard("mcfx_local_endpoint", || {
        let t = live_transport(transport)?;
        if len.is_null() || (buf.is_null() && cap > 0) {
            return invalid("NULL buffer or length pointer");
        }
        let Some(ep) = t.endpoint() else {
            return fail(
                Status::MCFX_E_NOT_SERVING,
                "the transport was created with MCFX_FLAG_NO_SERVE: peers cannot connect to it",
            );
        };
        let ep = ep.as_bytes();
        // SAFETY: len checked non-NULL.
        unsafe { len.write(ep.len()) };
        if ep.len() >= cap {
            return fail(
                Status::MCFX_E_BUFFER_TOO_SMALL,
                format!("endpoint needs {} bytes, buffer has {cap}", ep.len() + 1),
            );
        }
        // SAFETY: buf is writable for cap > ep.len() bytes.
        unsafe {
            ptr::copy_nonoverlapping(ep.as_ptr(), buf.cast::<u8>(), ep.len());
            *buf.add(ep.len()) = 0;
        }
        Ok(())
    })
}

/// Registers `[addr, addr + length)` with FlagCX so ops can use it (and peers
/// can address it, from connections they make afterwards). Errors:
/// `MCFX_E_INVALID_ARGUMENT`, `MCFX_E_OVERFLOW`, `MCFX_E_ALREADY_REGISTERED`
/// (overlaps a region), `MCFX_E_FLAGCX`. Thread-safe.
///
/// # Safety
/// The range must stay valid memory until it is unregistered (or the
/// transport destroyed); transfers and peers may read and write it meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mcfx_register(
    transport: *mut mcfx_transport,
    addr: *mut c_void,
    length: usize,
) -> mcfx_status {
    guard("mcfx_register", || {
        let t = live_transport(transport)?;
        // SAFETY: this function's contract, passed on.
        unsafe { t.register(addr as usize, length) }
    })
}

/// Unregisters the region that starts at `addr`. Errors:
/// `MCFX_E_INVALID_ARGUMENT` (NULL `addr`), `MCFX_E_NOT_FOUND`, `MCFX_E_BUSY`
/// (ops on it are in flight; nothing changed). Memory another transport of
/// the process also registered stays registered for that one. Thread-safe.
///
/// # Safety
/// `transport` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcfx_unregister(
    transport: *mut mcfx_transport,
    addr: *mut c_void,
) -> mcfx_status {
    guard("mcfx_unregister", || {
        let t = live_transport(transport)?;
        if addr.is_null() {
            return invalid("NULL address");
        }
        t.unregister(addr as usize)
    })
}

/// Registers `count` regions in order; stops at the first failure (the
/// regions before it stay registered; the message names the index).
/// Thread-safe.
///
/// # Safety
/// As `mcfx_register` for every region; `regions` must hold `count` entries.
#[no_mangle]
pub unsafe extern "C" fn mcfx_register_batch(
    transport: *mut mcfx_transport,
    regions: *const mcfx_region,
    count: usize,
) -> mcfx_status {
    guard("mcfx_register_batch", || {
        let t = live_transport(transport)?;
        // SAFETY: the caller provides count entries (checked non-NULL).
        for (i, r) in unsafe { slice(regions, count)? }.iter().enumerate() {
            // SAFETY: mcfx_register's contract, per region.
            unsafe { t.register(r.addr as usize, r.length) }
                .map_err(|e| Error::new(e.status, format!("region {i}: {}", e.message)))?;
        }
        Ok(())
    })
}

/// Unregisters `count` regions in order; stops at the first failure (a NULL
/// entry is `MCFX_E_INVALID_ARGUMENT`; the message names the index).
/// Thread-safe.
///
/// # Safety
/// `addrs` must hold `count` entries.
#[no_mangle]
pub unsafe extern "C" fn mcfx_unregister_batch(
    transport: *mut mcfx_transport,
    addrs: *const *mut c_void,
    count: usize,
) -> mcfx_status {
    guard("mcfx_unregister_batch", || {
        let t = live_transport(transport)?;
        // SAFETY: the caller provides count entries (checked non-NULL).
        for (i, a) in unsafe { slice(addrs, count)? }.iter().enumerate() {
            if a.is_null() {
                return invalid(&format!("region {i}: NULL address"));
            }
            t.unregister(*a as usize)
                .map_err(|e| Error::new(e.status, format!("region {i}: {}", e.message)))?;
        }
        Ok(())
    })
}

/// Queues `count` ops. Ops are taken in order; the call stops at the first
/// op it cannot accept. The ops before it were queued and each gets exactly
/// one completion callback; `*accepted` tells how many. On a per-op error
/// (`MCFX_E_INVALID_ARGUMENT` for a bad opcode, a non-zero reserved field, a
/// zero length or a NULL local address; `MCFX_E_OVERFLOW`;
/// `MCFX_E_NOT_REGISTERED`) `ops[*accepted]` is the bad op (the message names
/// its index too) and the ops after it were not queued. On
/// `MCFX_E_QUEUE_FULL` `ops[*accepted..]` were not queued. No callback runs
/// for an op that was not queued. So a caller fails `ops[*accepted]` alone
/// and resubmits `ops + *accepted + 1` in one call (after a per-op error), or
/// `ops + *accepted` later (queue full). Errors of the call itself queue
/// nothing and set `*accepted` to 0: a NULL `transport`, NULL `ops` with a
/// non-zero `count` (`MCFX_E_INVALID_ARGUMENT`), `MCFX_E_SHUTTING_DOWN`.
/// `accepted` may be NULL.
///
/// Each queued op's deadline (`op_timeout_ms`) counts from this call,
/// wherever the op is when it passes (queued, waiting for its connection, or
/// in FlagCX). It is read from a coarse monotonic clock (one read per call;
/// granularity 1-4 ms on Linux), so an op times out no earlier than
/// `op_timeout_ms` after the call and typically within a few ms after.
///
/// Thread-safe; never blocks (except `submit_wait_us` when the queue is
/// full) and never calls FlagCX.
///
/// # Safety
/// `ops` must hold `count` entries; `transport` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcfx_submit(
    transport: *mut mcfx_transport,
    ops: *const mcfx_op,
    count: usize,
    accepted: *mut usize,
) -> mcfx_status {
    let mut n = 0;
    let status = guard("mcfx_submit", || {
        let t = live_transport(transport)?;
        // SAFETY: the caller provides count entries (checked non-NULL).
        t.submit(unsafe { slice(ops, count)? }, &mut n)
    });
    if !accepted.is_null() {
        // SAFETY: checked non-NULL; the caller provides a writable size_t.
        unsafe { accepted.write(n) };
    }
    status
}

/// Copies the counters into `*out`; set `out->struct_size` first (at least
/// 8). Only whole fields are written: a field that `struct_size` ends inside
/// is not, and `struct_size` is set to the bytes written. Thread-safe.
///
/// # Safety
/// `out` must point to `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn mcfx_get_stats(
    transport: *const mcfx_transport,
    out: *mut mcfx_stats,
) -> mcfx_status {
    guard("mcfx_get_stats", || {
        let t = live_transport(transport)?;
        if out.is_null() {
            return invalid("NULL stats pointer");
        }
        // SAFETY: checked non-NULL; struct_size is the first field.
        let size = unsafe { (*out).struct_size } as usize;
        if size < 8 {
            return fail(Status::MCFX_E_INVALID_ARGUMENT, "stats struct_size is not set");
        }
        // Whole fields only: every field after the first two u32 is a u64.
        let n = size.min(std::mem::size_of::<mcfx_stats>()) / 8 * 8;
        let full = mcfx_stats { struct_size: n as u32, ..mcfx_stats::from(&t.stats()) };
        // SAFETY: the caller made `size` bytes writable; we write n <= size.
        unsafe {
            ptr::copy_nonoverlapping((&full as *const mcfx_stats).cast::<u8>(), out.cast::<u8>(), n)
        };
        Ok(())
    })
}

/// The C copy of the counters, generated from the one list in `stats`: a
/// counter missing from `mcfx_stats` (or a field of it that is no counter)
/// fails the build.
macro_rules! stats_to_c {
    ($( $(#[$gdoc:meta])* $group:ident: $Group:ident {
        $( $(#[$doc:meta])* $name:ident, )*
    } )*) => {
        impl From<&Snapshot> for mcfx_stats {
            fn from(s: &Snapshot) -> mcfx_stats {
                mcfx_stats {
                    struct_size: std::mem::size_of::<mcfx_stats>() as u32,
                    reserved: 0,
                    $($( $name: s.$name, )*)*
                    in_flight: s.in_flight(),
                }
            }
        }
    };
}
crate::stats::counters!(stats_to_c);

static API_V1: mcfx_api_v1 = mcfx_api_v1 {
    // The table's own version, not MCFX_ABI_VERSION: it stays 1 when the
    // library moves on.
    abi_version: 1,
    struct_size: std::mem::size_of::<mcfx_api_v1>() as u32,
    impl_name: impl_name_entry,
    strerror: strerror_entry,
    last_error: mcfx_last_error,
    config_init: mcfx_config_init,
    create: mcfx_create,
    destroy: mcfx_destroy,
    local_endpoint: mcfx_local_endpoint,
    register_memory: mcfx_register,
    unregister_memory: mcfx_unregister,
    register_batch: mcfx_register_batch,
    unregister_batch: mcfx_unregister_batch,
    submit: mcfx_submit,
    get_stats: mcfx_get_stats,
};

unsafe extern "C" fn impl_name_entry() -> *const c_char {
    mcfx_impl_name()
}

unsafe extern "C" fn strerror_entry(status: i32) -> *const c_char {
    mcfx_strerror(status)
}

/// The version-1 function table, for `dlopen` + `dlsym("mcfx_get_api_v1")`
/// users. Check `abi_version == 1` (always, also in libraries of a later ABI
/// version) and `struct_size >= sizeof(mcfx_api_v1)` before using it.
/// Static; never NULL; thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_get_api_v1() -> *const mcfx_api_v1 {
    &API_V1
}

// ---- conversions -------------------------------------------------------------

/// # Safety
/// `ptr` must be NULL (then `count` must be 0) or hold `count` entries.
unsafe fn slice<'a, T>(ptr: *const T, count: usize) -> Result<&'a [T]> {
    if count == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return invalid("NULL array with a non-zero count");
    }
    // SAFETY: per this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// Copies a caller's config of any size into a zero-filled current one.
///
/// # Safety
/// `config` must be NULL or readable for its `struct_size` bytes.
unsafe fn read_config(config: *const mcfx_config) -> Result<mcfx_config> {
    if config.is_null() {
        return invalid("NULL config");
    }
    // SAFETY: the first 8 bytes (struct_size, abi_version) are always present.
    let (size, version) = unsafe { ((*config).struct_size as usize, (*config).abi_version) };
    if !(1..=MCFX_ABI_VERSION).contains(&version) {
        return fail(
            Status::MCFX_E_BAD_CONFIG,
            format!("config abi_version {version}, this library accepts 1..={MCFX_ABI_VERSION}"),
        );
    }
    if size < MIN_CONFIG_SIZE {
        return fail(
            Status::MCFX_E_BAD_CONFIG,
            format!("config struct_size {size} is below the minimum {MIN_CONFIG_SIZE} (use mcfx_config_init)"),
        );
    }
    let mut c = std::mem::MaybeUninit::<mcfx_config>::zeroed();
    let n = size.min(std::mem::size_of::<mcfx_config>());
    // SAFETY: reads n <= struct_size bytes the caller vouched for; all-zero
    // is a valid mcfx_config (NULL pointers, None callbacks, zeros).
    unsafe {
        ptr::copy_nonoverlapping(config.cast::<u8>(), c.as_mut_ptr().cast::<u8>(), n);
        Ok(c.assume_init())
    }
}

/// A C context pointer the caller promised may be used from our threads.
#[derive(Clone, Copy)]
struct Ctx(*mut c_void);
// SAFETY: mcfx_create's contract: the callbacks and contexts are usable from
// the transport's threads until destroy returns.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

type Converted = (Config, crate::transport::CompletionFn, crate::transport::ResolverFn);

fn convert_config(c: &mcfx_config) -> Result<Converted> {
    let Some(complete) = c.on_complete else {
        return invalid("config.on_complete is NULL");
    };
    let Some(resolve) = c.resolve else {
        return invalid("config.resolve is NULL");
    };
    if c.flags & !MCFX_FLAG_NO_SERVE != 0 {
        return fail(Status::MCFX_E_BAD_CONFIG, format!("unknown config flags {:#x}", c.flags));
    }
    let config = Config::from_c(c_numbers(c), c.flags & MCFX_FLAG_NO_SERVE == 0);
    let complete_ctx = Ctx(c.complete_ctx);
    let resolve_ctx = Ctx(c.resolve_ctx);
    let on_complete = Box::new(move |user_data: u64, status: Status| {
        let ctx = complete_ctx;
        // SAFETY: the caller's callback and context, valid until destroy
        // returns (mcfx_create's contract); the progress thread catches a
        // Rust panic unwinding out of it.
        unsafe { complete(ctx.0, user_data, status) }
    });
    let resolver = Box::new(move |peer: u64| -> std::result::Result<String, String> {
        let ctx = resolve_ctx;
        let mut buf = [0u8; MAX_ENDPOINT_LEN + 1];
        let rc = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: as above; buf is writable for its length.
            unsafe { resolve(ctx.0, peer, buf.as_mut_ptr().cast(), buf.len()) }
        }))
        .map_err(|_| "the resolver callback panicked".to_string())?;
        if rc != 0 {
            return Err(format!("the resolver callback returned {rc} (peer unknown)"));
        }
        let Some(end) = buf.iter().position(|&b| b == 0) else {
            return Err("the resolver callback wrote no NUL-terminated endpoint".into());
        };
        std::str::from_utf8(&buf[..end])
            .map(str::to_owned)
            .map_err(|_| "the resolver callback wrote a non-UTF-8 endpoint".into())
    });
    Ok((config, on_complete, resolver))
}

/// The log callback and its level, if the config has one.
fn convert_log(c: &mcfx_config) -> Result<Option<(u32, host_log::LogFn)>> {
    let level = match c.log_level {
        0 => host_log::WARN,
        l if l <= host_log::TRACE => l,
        l => {
            return fail(
                Status::MCFX_E_BAD_CONFIG,
                format!("log_level {l} is outside 1..={}", host_log::TRACE),
            )
        }
    };
    let Some(log) = c.log else { return Ok(None) };
    let ctx = Ctx(c.log_ctx);
    let f = Box::new(move |level: u32, message: &std::ffi::CStr| {
        let ctx = ctx;
        let level = match level {
            host_log::ERROR => mcfx_log_level::MCFX_LOG_ERROR,
            host_log::WARN => mcfx_log_level::MCFX_LOG_WARN,
            host_log::INFO => mcfx_log_level::MCFX_LOG_INFO,
            host_log::DEBUG => mcfx_log_level::MCFX_LOG_DEBUG,
            _ => mcfx_log_level::MCFX_LOG_TRACE,
        };
        // SAFETY: the caller's callback and context, valid until destroy
        // returns (mcfx_create's contract; host_log never calls a closed
        // sink); the message is NUL-terminated and outlives the call.
        unsafe { log(ctx.0, level, message.as_ptr()) }
    });
    Ok(Some((level, f)))
}

/// Decodes a C op in place (no copy into a buffer).
impl OpSource for mcfx_op {
    #[inline]
    fn request(&self) -> Result<OpRequest> {
        let opcode = match self.opcode {
            MCFX_OP_READ => Opcode::Read,
            MCFX_OP_WRITE => Opcode::Write,
            other => return invalid(&format!("unknown opcode {other}")),
        };
        if self.reserved != 0 {
            return invalid("reserved field is not 0");
        }
        Ok(OpRequest {
            opcode,
            local: self.local_addr as usize,
            len: self.length,
            peer: self.peer_id,
            remote: self.remote_addr,
            user_data: self.user_data,
        })
    }
}
