//! Status polling semantics and the misuse the provider detects.

mod common;

use std::time::Instant;

use common::{serial, Pair, LIMIT};
use flagcx_sys::{ffi, sw, Poll};

fn raw_conn(conn: &flagcx_sys::Conn) -> *mut std::ffi::c_void {
    conn.as_raw()
}

#[test]
fn polling_each_id_until_done_records_no_violation() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    // Other tests of this binary may have left hung transfers behind.
    let outstanding = sw::transfers_outstanding().unwrap();
    for _ in 0..1000 {
        let id = link.write(4096);
        assert_eq!(link.wait(id), Poll::Done);
    }
    common::assert_no_violations();
    assert_eq!(sw::transfers_outstanding(), Some(outstanding));
}

#[test]
fn polling_an_id_again_after_done_is_a_violation() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    let id = link.write(4096);
    let raw = id.raw();
    assert_eq!(link.wait(id), Poll::Done);
    // SAFETY: deliberate misuse through the raw API; the provider tolerates it.
    let again = unsafe { ffi::fxs_poll(raw_conn(&link.conn), raw) };
    assert_eq!(again, ffi::FXS_POLL_DONE, "a stale id reads as done, like FlagCX");
    assert_eq!(sw::violations().unwrap().repeated_poll, 1);
}

#[test]
fn polling_an_unknown_id_reports_done_and_is_a_violation() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    // SAFETY: deliberate misuse; the id was never issued.
    let r = unsafe { ffi::fxs_poll(raw_conn(&link.conn), 0x7777_0000_1234) };
    assert_eq!(r, ffi::FXS_POLL_DONE);
    assert_eq!(sw::violations().unwrap().unknown_poll, 1);
}

#[test]
fn concurrent_polls_of_one_id_are_a_violation() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    // A hung transfer stays pending, so two threads can hammer its id.
    assert!(sw::set_knob(sw::Knob::HangOp, 1));
    let id = link.write(4096);
    let (raw_id, raw) = (id.raw(), raw_conn(&link.conn) as usize);
    drop(id); // abandoned on purpose: it never finishes
              // Usually caught within microseconds; a loaded machine gets LIMIT.
    let deadline = Instant::now() + LIMIT;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while sw::violations().unwrap().concurrent_poll == 0 && Instant::now() < deadline {
                    // SAFETY: deliberate concurrent misuse of a live id.
                    unsafe { ffi::fxs_poll(raw as *mut _, raw_id) };
                }
            });
        }
    });
    assert!(sw::violations().unwrap().concurrent_poll >= 1, "two pollers were never caught");
}

#[test]
fn extension_reports_a_failed_transfer_and_the_bool_call_would_not() {
    let _g = serial();
    assert!(flagcx_sys::reports_failures(), "the provider exports flagcxSwXferResult");
    let pair = Pair::new();
    let link = pair.link(4096);
    assert!(sw::set_knob(sw::Knob::FailOp, 1));
    let id = link.write(4096);
    assert_eq!(link.wait(id), Poll::Failed);
    let id = link.write(4096);
    assert_eq!(link.wait(id), Poll::Done, "only the Nth op fails");
    common::assert_no_violations();
}
