/// Newest version of the C ABI this library implements. `mcfx_create`
/// accepts a config of any version from 1 up to this one; the v1 table
/// (`mcfx_get_api_v1`) always reports 1.
// build.rs compiles this file too (`include!`), for the SONAME.
pub const MCFX_ABI_VERSION: u32 = 1;
