//! Raw declarations of the C++ shim (`shim/flagcx_shim.h`). Everything here is
//! `unsafe` to call; the safe wrapper lives in the crate root.

use std::ffi::{c_char, c_int, c_void};

pub type fxs_status = c_int;
pub const FXS_OK: fxs_status = 0;
pub const FXS_INVALID: fxs_status = -1;
pub const FXS_FLAGCX: fxs_status = -2;
pub const FXS_EXCEPTION: fxs_status = -3;

pub const FXS_POLL_PENDING: c_int = 0;
pub const FXS_POLL_DONE: c_int = 1;
pub const FXS_POLL_FAILED: c_int = 2;

/// Layout of `FlagcxP2pRdmaDesc` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct fxs_desc {
    pub addr: u64,
    pub size: u32,
    pub rkey: u32,
    pub nmsgs: u32,
    pub rid: u32,
    pub idx: u64,
    pub padding: [u8; 32],
}

const _: () = assert!(std::mem::size_of::<fxs_desc>() == 64);

extern "C" {
    pub fn fxs_engine_create(engine_out: *mut *mut c_void) -> fxs_status;
    pub fn fxs_engine_destroy(engine: *mut c_void);
    pub fn fxs_engine_stop_accept(engine: *mut c_void);
    pub fn fxs_engine_start_rpc_server(engine: *mut c_void) -> fxs_status;
    pub fn fxs_engine_rpc_port(engine: *mut c_void) -> c_int;
    pub fn fxs_engine_metadata(
        engine: *mut c_void,
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
    ) -> fxs_status;

    pub fn fxs_connect(
        engine: *mut c_void,
        ip: *const c_char,
        remote_gpu: c_int,
        remote_port: c_int,
        conn_out: *mut *mut c_void,
    ) -> fxs_status;
    pub fn fxs_conn_destroy(conn: *mut c_void);

    pub fn fxs_reg(engine: *mut c_void, addr: usize, len: usize, mr_out: *mut u64) -> fxs_status;
    pub fn fxs_mr_destroy(engine: *mut c_void, mr: u64);
    pub fn fxs_make_desc(
        conn: *mut c_void,
        remote_addr: u64,
        len: u32,
        desc_out: *mut fxs_desc,
    ) -> fxs_status;

    pub fn fxs_list_create() -> *mut c_void;
    pub fn fxs_list_destroy(list: *mut c_void);
    pub fn fxs_list_push(
        list: *mut c_void,
        conn: *mut c_void,
        mr: u64,
        local: *mut c_void,
        len: u32,
        remote_addr: u64,
    ) -> fxs_status;
    pub fn fxs_list_truncate(list: *mut c_void, n: usize);
    pub fn fxs_list_write(conn: *mut c_void, list: *mut c_void, id_out: *mut u64) -> fxs_status;
    pub fn fxs_list_read(conn: *mut c_void, list: *mut c_void, id_out: *mut u64) -> fxs_status;
    pub fn fxs_poll(conn: *mut c_void, id: u64) -> c_int;
    pub fn fxs_reports_failures() -> c_int;
}
