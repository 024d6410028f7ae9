//! mooncake-flagcx: a FlagCX transport for Mooncake, exported as a C ABI.
//!
//! The transport core arrives with issue 4; for now the crate re-exports the
//! binding so the workspace builds end to end.

pub use flagcx_sys;
