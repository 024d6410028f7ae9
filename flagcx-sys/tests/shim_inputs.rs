//! The shim rejects bad input with an error code instead of crashing.

mod common;

use std::ptr;

use common::{serial, Pair};
use flagcx_sys::{ffi, Error};

#[test]
fn shim_rejects_null_handles_and_pointers() {
    let _g = serial();
    // SAFETY: every call passes NULL on purpose; the shim must refuse them.
    unsafe {
        assert_eq!(ffi::fxs_engine_create(ptr::null_mut()), ffi::FXS_INVALID);
        assert_eq!(ffi::fxs_engine_start_rpc_server(ptr::null_mut()), ffi::FXS_INVALID);
        assert_eq!(ffi::fxs_engine_rpc_port(ptr::null_mut()), -1);
        let mut len = 0;
        assert_eq!(
            ffi::fxs_engine_metadata(ptr::null_mut(), ptr::null_mut(), 0, &mut len),
            ffi::FXS_INVALID
        );
        let mut out = ptr::null_mut();
        assert_eq!(
            ffi::fxs_connect(ptr::null_mut(), c"127.0.0.1".as_ptr(), 0, 1, &mut out),
            ffi::FXS_INVALID
        );
        let mut mr = 0;
        assert_eq!(ffi::fxs_reg(ptr::null_mut(), 4096, 1, &mut mr), ffi::FXS_INVALID);
        let mut id = 0;
        assert_eq!(ffi::fxs_poll(ptr::null_mut(), 1), ffi::FXS_INVALID);
        let list = ffi::fxs_list_create();
        assert!(!list.is_null());
        let local = 4096 as *mut std::ffi::c_void;
        assert_eq!(ffi::fxs_list_push(ptr::null_mut(), list, 1, local, 1, 1), ffi::FXS_INVALID);
        assert_eq!(ffi::fxs_list_push(list, ptr::null_mut(), 1, local, 1, 1), ffi::FXS_INVALID);
        assert_eq!(ffi::fxs_list_write(ptr::null_mut(), list, &mut id), ffi::FXS_INVALID);
        assert_eq!(ffi::fxs_list_read(ptr::null_mut(), list, &mut id), ffi::FXS_INVALID);
        assert_eq!(ffi::fxs_list_write(list, ptr::null_mut(), &mut id), ffi::FXS_INVALID);
        ffi::fxs_list_truncate(ptr::null_mut(), 0);
        ffi::fxs_list_destroy(list);
        // Destroy-style calls accept NULL.
        ffi::fxs_list_destroy(ptr::null_mut());
        ffi::fxs_engine_destroy(ptr::null_mut());
        ffi::fxs_conn_destroy(ptr::null_mut());
        ffi::fxs_engine_stop_accept(ptr::null_mut());
        ffi::fxs_mr_destroy(ptr::null_mut(), 1);
    }
}

#[test]
fn zero_lengths_and_empty_vectors_are_rejected() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    assert_eq!(link.conn.make_desc(link.dst.addr() as u64, 0), Err(Error::Invalid));
    // SAFETY: a zero-length and a NULL registration, refused by the shim.
    unsafe {
        assert_eq!(pair.local.register(link.src.addr(), 0), Err(Error::Invalid));
        assert_eq!(pair.local.register(0, 4096), Err(Error::Invalid));
    }
    let mut list = flagcx_sys::IovList::new().unwrap();
    let remote = link.dst.addr() as u64;
    assert_eq!(list.push(&link.conn, link.src.mr, link.src.addr(), 0, remote), Err(Error::Invalid));
    assert_eq!(list.push(&link.conn, link.src.mr, 0, 16, remote), Err(Error::Invalid));
    assert!(list.is_empty());
    assert_eq!(link.conn.write_list(&mut list), Err(Error::Invalid));
    assert_eq!(link.conn.read_list(&mut list), Err(Error::Invalid));
}

#[test]
fn metadata_with_a_too_small_buffer_reports_the_needed_length() {
    let _g = serial();
    let pair = Pair::new();
    let full = pair.remote.metadata().unwrap();
    let mut buf = [0u8; 4];
    let mut len = 0;
    // SAFETY: a live engine and a 4-byte buffer.
    let st = unsafe {
        ffi::fxs_engine_metadata(pair.remote.as_raw(), buf.as_mut_ptr().cast(), buf.len(), &mut len)
    };
    assert_eq!(st, ffi::FXS_INVALID);
    assert_eq!(len, full.len(), "the needed length is reported");
}
