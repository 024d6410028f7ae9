#![allow(non_camel_case_types)]

//! Status codes (stable C values) and the error type the core returns.
//!
//! A status value never changes meaning; new errors get new numbers. The
//! detailed message of a failed call is kept per thread (see `ffi`), while a
//! failed *operation* reports its status through the completion callback and
//! logs its message through `tracing`.

use std::borrow::Cow;
use std::fmt;

/// Result of a call or of an operation. `MCFX_OK` is 0; errors are positive.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum mcfx_status {
    /// Success.
    MCFX_OK = 0,
    /// A required pointer is NULL, a length is zero, an opcode is unknown or a
    /// reserved field is not zero.
    MCFX_E_INVALID_ARGUMENT = 1,
    /// The config struct is too small, names another ABI version, or holds an
    /// out-of-range value.
    MCFX_E_BAD_CONFIG = 2,
    /// The local range of an op is not inside one registered region.
    MCFX_E_NOT_REGISTERED = 3,
    /// An address plus length wraps around the address space.
    MCFX_E_OVERFLOW = 4,
    /// The submission queue is full (and the configured wait, if any, ran out).
    MCFX_E_QUEUE_FULL = 5,
    /// The transport is being destroyed and accepts no new work.
    MCFX_E_SHUTTING_DOWN = 6,
    /// The region still has operations in flight.
    MCFX_E_BUSY = 7,
    /// The range overlaps a region that is already registered.
    MCFX_E_ALREADY_REGISTERED = 8,
    /// No region is registered at that address.
    MCFX_E_NOT_FOUND = 9,
    /// The caller's buffer is too small; the needed length was reported.
    MCFX_E_BUFFER_TOO_SMALL = 10,
    /// A FlagCX call failed (engine creation, registration, submission).
    MCFX_E_FLAGCX = 11,
    /// Operation: the resolver callback failed or returned a malformed endpoint.
    MCFX_E_RESOLVE = 12,
    /// Operation: connecting to the peer failed or took longer than the
    /// connect timeout.
    MCFX_E_CONNECT = 13,
    /// Operation: the remote range is not inside memory the peer registered,
    /// as seen by a connection made after the op was submitted (see
    /// `mcfx_op.remote_addr`).
    MCFX_E_REMOTE_RANGE = 14,
    /// Operation: FlagCX reported the transfer failed (again after one
    /// resubmit, or with no new connection to the peer to resubmit on).
    MCFX_E_TRANSFER_FAILED = 15,
    /// Operation: not finished by its deadline.
    MCFX_E_TIMEOUT = 16,
    /// Operation: the transport was destroyed before the operation finished.
    MCFX_E_CANCELED = 17,
    /// A Rust panic was caught at the C boundary (a bug; please report it).
    MCFX_E_PANIC = 18,
    /// Any other internal failure (e.g. a thread could not be started).
    MCFX_E_INTERNAL = 19,
    /// The call is not allowed from inside one of the transport's own
    /// callbacks (e.g. `mcfx_destroy` from its completion or resolver
    /// callback); nothing was changed.
    MCFX_E_IN_CALLBACK = 20,
    /// The transport does not serve peers (created with
    /// `MCFX_FLAG_NO_SERVE`), so it has no endpoint to give out.
    MCFX_E_NOT_SERVING = 21,
    /// Memory the call needed could not be allocated (e.g. under an
    /// address-space limit); the call changed nothing and the host was not
    /// aborted. Retrying later may succeed. Also an operation's status: the
    /// progress thread had no memory for its bookkeeping (a slot, a place
    /// among its peer's waiting ops or its pass's groups, a FlagCX call's
    /// record); the op was not transferred.
    MCFX_E_NO_MEMORY = 22,
    /// Registering would exceed the transport's `max_regions`; nothing was
    /// registered.
    MCFX_E_TOO_MANY_REGIONS = 23,
    /// The handle was created before this process was forked from its
    /// parent: in the child only `mcfx_destroy` is allowed (it releases the
    /// handle without touching the parent's threads or FlagCX state), and
    /// `mcfx_create` is refused while the parent's transports' state is
    /// inherited (exec first).
    MCFX_E_FORKED = 24,
    /// `mcfx_destroy` from a callback would wait for a transport whose own
    /// thread is, at that moment, destroying the caller's transport (two
    /// callbacks destroying each other's transports): nothing was changed.
    /// Destroy from a thread that is not a callback of any transport.
    MCFX_E_WOULD_DEADLOCK = 25,
}

pub use mcfx_status as Status;

impl Status {
    /// Every status, for tables and tests.
    pub const ALL: [Status; 26] = [
        Status::MCFX_OK,
        Status::MCFX_E_INVALID_ARGUMENT,
        Status::MCFX_E_BAD_CONFIG,
        Status::MCFX_E_NOT_REGISTERED,
        Status::MCFX_E_OVERFLOW,
        Status::MCFX_E_QUEUE_FULL,
        Status::MCFX_E_SHUTTING_DOWN,
        Status::MCFX_E_BUSY,
        Status::MCFX_E_ALREADY_REGISTERED,
        Status::MCFX_E_NOT_FOUND,
        Status::MCFX_E_BUFFER_TOO_SMALL,
        Status::MCFX_E_FLAGCX,
        Status::MCFX_E_RESOLVE,
        Status::MCFX_E_CONNECT,
        Status::MCFX_E_REMOTE_RANGE,
        Status::MCFX_E_TRANSFER_FAILED,
        Status::MCFX_E_TIMEOUT,
        Status::MCFX_E_CANCELED,
        Status::MCFX_E_PANIC,
        Status::MCFX_E_INTERNAL,
        Status::MCFX_E_IN_CALLBACK,
        Status::MCFX_E_NOT_SERVING,
        Status::MCFX_E_NO_MEMORY,
        Status::MCFX_E_TOO_MANY_REGIONS,
        Status::MCFX_E_FORKED,
        Status::MCFX_E_WOULD_DEADLOCK,
    ];

    pub fn from_i32(v: i32) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as i32 == v)
    }

    /// A short fixed description (what `mcfx_strerror` returns), NUL-terminated.
    pub fn description(self) -> &'static std::ffi::CStr {
        match self {
            Status::MCFX_OK => c"success",
            Status::MCFX_E_INVALID_ARGUMENT => c"invalid argument",
            Status::MCFX_E_BAD_CONFIG => c"invalid transport configuration",
            Status::MCFX_E_NOT_REGISTERED => c"local memory is not registered",
            Status::MCFX_E_OVERFLOW => c"address plus length overflows",
            Status::MCFX_E_QUEUE_FULL => c"submission queue is full",
            Status::MCFX_E_SHUTTING_DOWN => c"transport is shutting down",
            Status::MCFX_E_BUSY => c"region has operations in flight",
            Status::MCFX_E_ALREADY_REGISTERED => c"memory is already registered",
            Status::MCFX_E_NOT_FOUND => c"no region is registered at this address",
            Status::MCFX_E_BUFFER_TOO_SMALL => c"buffer too small",
            Status::MCFX_E_FLAGCX => c"FlagCX call failed",
            Status::MCFX_E_RESOLVE => c"peer could not be resolved",
            Status::MCFX_E_CONNECT => c"could not connect to peer",
            Status::MCFX_E_REMOTE_RANGE => c"remote range is not registered by the peer",
            Status::MCFX_E_TRANSFER_FAILED => c"transfer failed",
            Status::MCFX_E_TIMEOUT => c"operation timed out",
            Status::MCFX_E_CANCELED => c"operation canceled",
            Status::MCFX_E_PANIC => c"internal panic (bug)",
            Status::MCFX_E_INTERNAL => c"internal error",
            Status::MCFX_E_IN_CALLBACK => c"not allowed from the transport's own callback",
            Status::MCFX_E_NOT_SERVING => c"transport does not serve peers (MCFX_FLAG_NO_SERVE)",
            Status::MCFX_E_NO_MEMORY => c"out of memory",
            Status::MCFX_E_TOO_MANY_REGIONS => c"too many registered regions (max_regions)",
            Status::MCFX_E_FORKED => c"handle belongs to the parent process (forked child)",
            Status::MCFX_E_WOULD_DEADLOCK => {
                c"destroy would deadlock (transports destroying each other from callbacks)"
            }
        }
    }

    pub fn is_ok(self) -> bool {
        self == Status::MCFX_OK
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description().to_str().unwrap_or("?"))
    }
}

/// A failed call: a status plus a message for humans. A fixed message is
/// kept as it is and a formatted one is made with [`message`], so that
/// making an error never allocates in a way that could abort the host when
/// memory runs out (the message is then empty; the status still says what
/// failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: Cow<'static, str>,
}

impl Error {
    pub fn new(status: Status, message: impl Into<Cow<'static, str>>) -> Error {
        Error { status, message: message.into() }
    }
}

/// What to add to the message of a FlagCX failure that came without its
/// cause (engine creation, connect): when the process cannot open a file
/// descriptor right now, which FlagCX's sockets need, say so; else nothing.
/// (A trial open of `/dev/null`: no heap, closed at once.)
pub(crate) fn descriptor_note() -> &'static str {
    match std::fs::File::open("/dev/null") {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            " (the process cannot open a file descriptor: RLIMIT_NOFILE or the system's limit \
             reached)"
        }
        _ => "",
    }
}

/// `args` formatted as an error message without aborting when memory runs
/// out (formatted on the stack, cut at 511 bytes, copied fallibly; empty
/// when there is no room).
pub fn message(args: fmt::Arguments<'_>) -> Cow<'static, str> {
    Cow::Owned(crate::logging::message(args))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for `Err(Error::new(..))`.
pub fn fail<T>(status: Status, message: impl Into<Cow<'static, str>>) -> Result<T> {
    Err(Error::new(status, message))
}
