//! mooncake-flagcx: a FlagCX transport for Mooncake's transfer engine,
//! exported as a versioned C ABI (`include/mooncake_flagcx.h`).
//!
//! Callers submit ops into a bounded lock-free queue; one progress thread per
//! transport drains it, groups ops by (peer, opcode) into FlagCX vector calls,
//! polls them and delivers exactly one completion per op. Peers are resolved
//! and connected on connector threads, off the progress thread.
//!
//! Modules, one concern each:
//! - [`ffi`]: the C ABI (thin; one panic/error guard), split by concern
//! - `transport`: create/submit/destroy, the handle; `shared`: the state the
//!   handle and its threads share
//! - `queue` + `ring` + `gate` + `wake`: the submission queue, its ring, its
//!   admission (the one shutdown flag) and the sleep/wake protocol
//! - `progress`: the progress thread; `group`: its grouping/splitting
//! - `peers`: resolver + connector threads (a narrow context), per-peer state
//! - `registry` + `holds`: registered local memory (lock-free lookups) and
//!   the hold/unregister protocol
//! - `slots`: the never-freed, fork-wiped handle slots that hold each
//!   transport's gate; `wait_graph`: destroys from callbacks that would wait
//!   for each other
//! - `engine`: the process's one FlagCX engine
//! - `host_log` + `log`: log events to the host's callback or `MCFX_LOG`
//! - `config`, `error`, `stats`, `op`
//!
//! No module imports one that imports it back: `transport` builds `shared`,
//! which `progress` reads and which hands `peers` its context.

// Only the C ABI (`ffi`) and the few Rust types the tests and examples use
// (re-exported below) are public; every other module is crate-internal, so
// the compiler reports what nothing uses.
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod error;
pub(crate) mod failure_log;
pub mod ffi;
mod ffi_layout;
pub(crate) mod gate;
pub(crate) mod group;
pub(crate) mod holds;
mod host_log;
pub(crate) mod log;
// Public only in a build for the loom models (`--cfg mcfx_loom`).
#[cfg(mcfx_loom)]
pub mod models;
pub(crate) mod op;
pub(crate) mod peers;
pub(crate) mod progress;
pub(crate) mod queue;
pub(crate) mod registry;
mod ring;
mod shared;
pub(crate) mod slots;
pub(crate) mod stats;
pub(crate) mod sync;
pub(crate) mod transport;
pub(crate) mod wait_graph;
pub(crate) mod wake;

pub use config::Config;
pub use error::{Error, Status};
pub use op::{OpRequest, Opcode};
pub use stats::Snapshot;
pub use transport::{CompletionFn, ResolverFn, Transport};

pub use flagcx_sys;
