//! The version-1 function table (`mcfx_get_api_v1`).

use std::ffi::c_char;

use super::exports::*;
use super::types::mcfx_api_v1;

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
    capabilities: capabilities_entry,
    progress: mcfx_progress,
};

unsafe extern "C" fn impl_name_entry() -> *const c_char {
    mcfx_impl_name()
}

unsafe extern "C" fn capabilities_entry() -> u64 {
    mcfx_capabilities()
}

unsafe extern "C" fn strerror_entry(status: i32) -> *const c_char {
    mcfx_strerror(status)
}

/// The version-1 function table, for `dlopen` + `dlsym("mcfx_get_api_v1")`
/// users. Check `abi_version == 1` (always, also in libraries of a later ABI
/// version) and that `struct_size` covers the entries you call: the table
/// only grows at the end, so a library older than your header may end
/// before its newest entries (`offsetof(mcfx_api_v1, capabilities)`, 112 on
/// LP64, is the size of the first v1 table, 120 the size with
/// `capabilities`; call an entry only when `struct_size` covers it).
/// Static; never NULL; thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_get_api_v1() -> *const mcfx_api_v1 {
    &API_V1
}
