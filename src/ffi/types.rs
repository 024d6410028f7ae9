//! The `#[repr(C)]` types and constants of the C header. Fields are only
//! ever appended; the layouts are pinned by `crate::ffi_layout`.

use std::ffi::{c_char, c_void};

use super::guard::mcfx_transport;
use crate::config::MAX_ENDPOINT_LEN;
use crate::error::mcfx_status;
use crate::stats::Snapshot;

pub use super::abi_version::MCFX_ABI_VERSION;

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
/// `mcfx_config.flags`: let the idle progress thread sleep with its own CPU
/// affinity. By default, while its CPUs are not contended, it is pinned to
/// the CPU it sleeps on until it wakes, so a wake-up finds it there instead
/// of queued behind the waker (which some VM schedulers do; see
/// docs/design.md, "Idle policy"); once it sees itself preempted it sleeps
/// unpinned for a while anyway. This flag never pins.
pub const MCFX_FLAG_NO_PIN_ASLEEP: u32 = 2;

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

/// Completion callback: `status` is `MCFX_OK` or the op's error. Runs on the
/// transport's progress thread, or on a thread inside `mcfx_progress` (one
/// thread at a time either way); keep it short and never block in it. It must
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

/// `mcfx_capabilities` bit: the loaded FlagCX tells a failed transfer apart
/// from a finished one, so such an op completes `MCFX_E_TRANSFER_FAILED`.
/// Without it (real FlagCX today: its status call returns only "done") a
/// transfer that failed completes `MCFX_OK`: verify data end to end (e.g. a
/// checksum the reader checks) where that matters.
pub const MCFX_CAP_REPORTS_TRANSFER_FAILURES: u64 = 1;
/// `mcfx_capabilities` bit: the loaded FlagCX is the in-tree software
/// provider (a test double: copies in software or models a NIC; never RDMA).
pub const MCFX_CAP_SOFTWARE_PROVIDER: u64 = 2;

/// Transport configuration. Start from `mcfx_config_init`, which writes
/// `struct_size`, `abi_version` and every default, then set the callbacks.
/// Zero in a numeric field also means "default" (except `submit_wait_us`,
/// whose default is 0). A value above a field's documented maximum is
/// `MCFX_E_BAD_CONFIG`. Fields are only ever appended: a caller built against
/// an older header passes a smaller `struct_size` and gets defaults for the
/// newer fields. The smallest accepted `struct_size` covers the fields up to
/// `resolve_ctx`; a `struct_size` below `sizeof(mcfx_config)` must end where
/// a field ends (one that cuts a field is `MCFX_E_BAD_CONFIG`: no field is
/// ever read in part); `abi_version` may be any version from 1 to
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
    /// Submission queue slots (default `MCFX_DEFAULT_QUEUE_CAPACITY`, at most
    /// `MCFX_MAX_QUEUE_CAPACITY`).
    pub queue_capacity: u32,
    /// Microseconds a submit waits for room (queue slots or `max_in_flight`)
    /// before `MCFX_E_QUEUE_FULL`, asleep, woken as room frees (default 0:
    /// fail at once; at most `MCFX_MAX_SUBMIT_WAIT_US`).
    pub submit_wait_us: u32,
    /// Per-op deadline, in ms, counted from the `mcfx_submit` call that
    /// queued the op (never early; noticed within a few ms after). Default
    /// `MCFX_DEFAULT_OP_TIMEOUT_MS`, at most `MCFX_MAX_OP_TIMEOUT_MS`.
    pub op_timeout_ms: u32,
    /// How long an op waits for its peer's connection, in ms (default
    /// `MCFX_DEFAULT_CONNECT_TIMEOUT_MS`, at most `MCFX_MAX_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u32,
    /// Microseconds the idle progress thread spins before parking
    /// (default `MCFX_DEFAULT_SPIN_GRACE_US`, at most `MCFX_MAX_SPIN_GRACE_US`),
    /// while it keeps its CPU: once it sees itself preempted (busy CPUs, a
    /// CPU quota) or host threads driving progress, it spins only a few
    /// microseconds for a while. Waking a parked thread costs tens of
    /// microseconds on many VMs; spinning costs a core while it lasts.
    pub spin_grace_us: u32,
    /// Ops taken from the queue per progress pass (default
    /// `MCFX_DEFAULT_MAX_BATCH`, at most `MCFX_MAX_MAX_BATCH`).
    pub max_batch: u32,
    /// Longest piece of one op per FlagCX entry, in bytes (default
    /// `MCFX_DEFAULT_MAX_SLICE_BYTES`, 1 GiB; at most
    /// `MCFX_MAX_MAX_SLICE_BYTES`, 4 GiB - 1). Longer ops are split and
    /// complete once.
    pub max_slice_bytes: u64,
    /// Threads that resolve and connect peers (default
    /// `MCFX_DEFAULT_CONNECT_THREADS`, at most `MCFX_MAX_CONNECT_THREADS`). A
    /// connect running longer than 200 ms stops counting against them
    /// (another thread takes its place): up to 5 x connect_threads + 1
    /// connector threads exist while peers are stuck.
    pub connect_threads: u32,
    /// On destroy, ms that in-flight ops may take to finish (default
    /// `MCFX_DEFAULT_SHUTDOWN_TIMEOUT_MS`, at most
    /// `MCFX_MAX_SHUTDOWN_TIMEOUT_MS`).
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
    /// Ops the transport holds at once: queued, waiting for a connection
    /// and inside FlagCX (default `MCFX_DEFAULT_MAX_IN_FLIGHT`, at most
    /// `MCFX_MAX_MAX_IN_FLIGHT`). A submit beyond
    /// it is refused with `MCFX_E_QUEUE_FULL` (after `submit_wait_us`), as
    /// for a full queue; the memory a slow or dead peer can make the
    /// transport hold is bounded by it.
    pub max_in_flight: u32,
    /// Regions the transport may have registered at once (default
    /// `MCFX_DEFAULT_MAX_REGIONS`, at most `MCFX_MAX_MAX_REGIONS`); one more
    /// is `MCFX_E_TOO_MANY_REGIONS`.
    pub max_regions: u32,
}

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
    /// Absolute address in the peer's registered memory: memory the peer
    /// registered before this op's `mcfx_submit` call. FlagCX knows a
    /// peer's regions as they were when a connection was made, so the op
    /// fails `MCFX_E_REMOTE_RANGE` only if `[remote_addr, +length)` is not
    /// in them as seen by a connection made after the op was submitted: a
    /// lookup that misses on an older connection waits for a reconnect (the
    /// one under way for that peer, or one it starts; the misses of a peer
    /// share it) and is retried on it, where a miss fails at once. A
    /// transfer that fails is resubmitted once on such a connection when it
    /// still describes the range (the peer registered the base again).
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
///
/// Every field but `in_flight` is a counter that only grows: two reads, in
/// any threads, never see one go down (each is counted once, after the fact,
/// and never taken back). `in_flight` is their difference, a gauge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct mcfx_stats {
    pub struct_size: u32,
    pub reserved: u32,
    /// Ops accepted by `mcfx_submit` (counted once queued; ops a full queue
    /// or `max_in_flight` refused are never counted). Monotonic.
    pub submitted: u64,
    /// Ops completed with `MCFX_OK`. Monotonic.
    pub completed: u64,
    /// Ops completed with an error other than `MCFX_E_TIMEOUT` and
    /// `MCFX_E_CANCELED`. Monotonic.
    pub failed: u64,
    /// Ops completed with `MCFX_E_TIMEOUT`. Monotonic.
    pub timed_out: u64,
    /// Ops completed with `MCFX_E_CANCELED` (destroy). Monotonic.
    pub canceled: u64,
    /// Bytes moved by ops completed with `MCFX_OK`. Monotonic.
    pub bytes: u64,
    /// `mcfx_submit` calls that returned `MCFX_E_QUEUE_FULL` (no room in the
    /// queue or within `max_in_flight`). Monotonic.
    pub queue_full: u64,
    /// Times a submit woke the sleeping progress thread. Monotonic.
    pub wakeups: u64,
    /// Peer connections made (reconnects included). Monotonic.
    pub connects: u64,
    /// Peer connection attempts that failed (resolve or connect). Monotonic.
    pub connect_failures: u64,
    /// Reconnects made to refresh a peer's region list. Monotonic.
    pub reconnects: u64,
    /// FlagCX vector transfers issued. Monotonic.
    pub flagcx_transfers: u64,
    /// Completion callbacks that panicked (Rust callbacks; caught).
    /// Monotonic.
    pub callback_panics: u64,
    /// Accepted ops not yet completed: `submitted` minus the four completion
    /// counters, never below zero. The copy is retried (a few times) while
    /// ops complete under it, so it is the count at one moment, at most
    /// `max_in_flight`, unless ops keep completing through every retry.
    /// Goes up and down.
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
    /// Appended (the table's `struct_size` covers it in libraries that have
    /// it: check before calling).
    pub capabilities: unsafe extern "C" fn() -> u64,
    /// `mcfx_progress`. Appended after `capabilities`: check `struct_size`.
    pub progress:
        unsafe extern "C" fn(transport: *mut mcfx_transport, completed: *mut u64) -> mcfx_status,
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
