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
//! - `transport`: create/submit/destroy, the handle; `transport_state`: the
//!   state the handle and its threads share
//! - `queue` + `ring` + `gate` + `wake`: the submission queue, its ring, its
//!   admission (the one shutdown flag) and the sleep/wake protocol; `sync`:
//!   the primitives they are built on (std's, or loom's for the models)
//! - `progress`: the progress thread (run loop, drain, in-flight FlagCX
//!   calls, completion); `group`: its grouping/splitting
//! - `peers`: `connector` (resolver + connector threads, a narrow context)
//!   and `state` (per-peer connections, waiting ops, the refresh rule)
//! - `registry` + `holds`: registered local memory (lock-free lookups) and
//!   the hold/unregister protocol
//! - `slots`: the never-freed, fork-wiped handle slots that hold each
//!   transport's gate; `wait_graph`: destroys from callbacks that would wait
//!   for each other
//! - `process_engine`: the process's one FlagCX engine, registrations
//!   counted per base
//! - `logging`: the subscriber, the host's log callbacks, `MCFX_LOG`;
//!   `panic_hook`: panics off stderr; `threads`: starting the library's
//!   threads; `failure_log`: failed ops without flooding the log
//! - `config`, `error`, `stats`, `op`, `clock`
//!
//! No module imports one that imports it back: `transport` builds
//! `transport_state`, which `progress` reads and which hands
//! `peers::connector` its context; `progress` drives `peers::state`.

// Only the C ABI (`ffi`) and the few Rust types the tests and examples use
// (re-exported below) are public; every other module is crate-internal, so
// the compiler reports what nothing uses.
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod failure_log;
pub(crate) mod fallible;
pub mod ffi;
mod ffi_layout;
pub(crate) mod gate;
pub(crate) mod group;
pub(crate) mod holds;
mod logging;
// Public only in a build for the loom models (`--cfg mcfx_loom`).
#[cfg(mcfx_loom)]
pub mod models;
pub(crate) mod op;
pub(crate) mod panic_hook;
pub(crate) mod peers;
pub(crate) mod process_engine;
pub(crate) mod progress;
pub(crate) mod queue;
pub(crate) mod registry;
mod ring;
pub(crate) mod slots;
pub(crate) mod stats;
pub(crate) mod sync;
pub(crate) mod threads;
pub(crate) mod transport;
mod transport_state;
pub(crate) mod wait_graph;
pub(crate) mod waiters;
pub(crate) mod wake;

pub use config::Config;
pub use error::{Error, Status};
pub use op::{OpRequest, Opcode};
pub use stats::Snapshot;
pub use transport::{CompletionFn, ResolverFn, Transport};
