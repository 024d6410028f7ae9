//! mooncake-flagcx: a FlagCX transport for Mooncake's transfer engine,
//! exported as a versioned C ABI (`include/mooncake_flagcx.h`).
//!
//! Callers submit ops into a bounded lock-free queue; one progress thread per
//! transport drains it, groups ops by (peer, opcode) into FlagCX vector calls,
//! polls them and delivers exactly one completion per op. Peers are resolved
//! and connected on connector threads, off the progress thread.
//!
//! Modules, one concern each:
//! - [`ffi`]: the C exports (thin; one panic/error guard)
//! - [`transport`]: create/submit/destroy, the handle's state
//! - [`queue`] + [`wake`]: the submission queue and the sleep/wake protocol
//! - [`progress`]: the progress thread; [`group`]: its grouping/splitting
//! - [`peers`]: resolver + connector threads, per-peer state
//! - [`registry`]: registered local memory (lock-free lookups)
//! - `host_log`: log events to the host's log callback
//! - [`config`], [`error`], [`stats`], [`op`], [`log`]

// Only the C ABI (`ffi`) and the few Rust types the tests and examples use
// (re-exported below) are public; every other module is crate-internal, so
// the compiler reports what nothing uses.
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod error;
pub mod ffi;
mod ffi_layout;
pub(crate) mod gate;
pub(crate) mod group;
pub(crate) mod holds;
mod host_log;
pub(crate) mod log;
pub(crate) mod op;
pub(crate) mod peers;
pub(crate) mod progress;
pub(crate) mod queue;
pub(crate) mod registry;
mod ring;
mod shared;
pub(crate) mod stats;
pub(crate) mod transport;
pub(crate) mod wake;

pub use config::Config;
pub use error::{Error, Status};
pub use op::{OpRequest, Opcode};
pub use stats::Snapshot;
pub use transport::{CompletionFn, ResolverFn, Transport};

pub use flagcx_sys;
