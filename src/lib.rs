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

pub mod config;
pub mod engine;
pub mod error;
pub mod ffi;
mod ffi_layout;
pub mod group;
mod host_log;
pub mod log;
pub mod op;
pub mod peers;
pub mod progress;
pub mod queue;
pub mod registry;
mod ring;
pub mod stats;
pub mod transport;
pub mod wake;

pub use config::Config;
pub use error::{Error, Status};
pub use op::{OpRequest, Opcode};
pub use transport::Transport;

pub use flagcx_sys;
