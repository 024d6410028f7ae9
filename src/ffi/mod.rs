#![allow(non_camel_case_types)]

//! The C ABI: every `extern "C"` export, kept thin.
//!
//! Each export checks its pointers, converts arguments and calls a safe
//! function of the core inside `guard::guard`, which catches panics
//! and records the message of a failed call for `mcfx_last_error`. Policy
//! lives in the core modules, never here. By concern:
//! - `types`: the `#[repr(C)]` types and constants of the header (their
//!   layouts pinned by `crate::ffi_layout`);
//! - `guard`: the panic/error guard, the last error, the handle and the set
//!   of live handles;
//! - `exports`: the `extern "C"` functions; `table`: the v1 function table;
//! - `config`: the C config read and turned into the core's settings
//!   (zero-means-default lives in `crate::config`); `op`: C ops and arrays.
//!
//! cbindgen reads these files for `include/mooncake_flagcx.h` (build.rs
//! generates it into `OUT_DIR`; `scripts/header.sh` copies it to include/).

mod abi_version;
mod config;
mod exports;
mod guard;
mod op;
mod table;
mod types;

pub use crate::error::mcfx_status;
pub use exports::*;
pub use guard::mcfx_transport;
pub use table::mcfx_get_api_v1;
pub use types::*;
