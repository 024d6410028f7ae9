//! The C ABI's fixed parts: version, table, status strings, config checks,
//! last-error copies, stats sizing.

mod common;

use std::ffi::{c_char, CStr};
use std::ptr;

use common::*;
use mooncake_flagcx::ffi::*;
use mooncake_flagcx::Status;

use mcfx_status::*;

#[test]
fn version_name_and_table_agree() {
    assert_eq!(mcfx_abi_version(), MCFX_ABI_VERSION);
    // SAFETY: static NUL-terminated string.
    assert_eq!(unsafe { CStr::from_ptr(mcfx_impl_name()) }.to_str().unwrap(), "rust");
    // SAFETY: static table.
    let api = unsafe { &*mcfx_get_api_v1() };
    assert_eq!(api.abi_version, 1);
    assert_eq!(api.struct_size as usize, std::mem::size_of::<mcfx_api_v1>());
    assert_eq!(api.submit as usize, mcfx_submit as *const () as usize);
    assert_eq!(api.create as usize, mcfx_create as *const () as usize);
    // SAFETY: static string.
    assert_eq!(unsafe { CStr::from_ptr((api.impl_name)()) }.to_str().unwrap(), "rust");
}

#[test]
fn every_status_has_a_distinct_description_and_unknown_codes_are_handled() {
    let mut seen = std::collections::HashSet::new();
    for s in Status::ALL {
        // SAFETY: static string.
        let d = unsafe { CStr::from_ptr(mcfx_strerror(s as i32)) }.to_str().unwrap();
        assert!(!d.is_empty());
        assert!(seen.insert(d), "duplicate description {d:?}");
    }
    for bad in [-1, Status::ALL.len() as i32, 9999, i32::MIN] {
        // SAFETY: static string.
        let d = unsafe { CStr::from_ptr(mcfx_strerror(bad)) }.to_str().unwrap();
        assert_eq!(d, "unknown status code");
    }
}

#[test]
fn bad_configs_are_refused_with_a_message() {
    let _g = serial();
    type Tweak = Box<dyn Fn(&mut mcfx_config)>;
    let cases: Vec<(Tweak, mcfx_status, &str)> = vec![
        (Box::new(|c| c.abi_version = 2), MCFX_E_BAD_CONFIG, "abi_version"),
        (Box::new(|c| c.struct_size = 8), MCFX_E_BAD_CONFIG, "struct_size"),
        (Box::new(|c| c.on_complete = None), MCFX_E_INVALID_ARGUMENT, "on_complete"),
        (Box::new(|c| c.resolve = None), MCFX_E_INVALID_ARGUMENT, "resolve"),
        (Box::new(|c| c.queue_capacity = 2 << 20), MCFX_E_BAD_CONFIG, "queue_capacity"),
        (Box::new(|c| c.max_slice_bytes = 1 << 32), MCFX_E_BAD_CONFIG, "max_slice_bytes"),
        (Box::new(|c| c.flags = 0x80), MCFX_E_BAD_CONFIG, "flags"),
        (Box::new(|c| c.provider_options = c"speed=9".as_ptr()), MCFX_E_BAD_CONFIG, "speed"),
    ];
    for (tweak, status, word) in cases {
        match Node::try_with(|c| tweak(c)) {
            Ok(_) => panic!("config with bad {word} was accepted"),
            Err((st, msg)) => {
                assert_eq!(st, status, "{word}: {msg}");
                assert!(msg.contains(word), "message {msg:?} should mention {word}");
            }
        }
    }
    // SAFETY: NULL config / NULL out pointer.
    unsafe {
        let mut t = ptr::null_mut();
        assert_eq!(mcfx_create(ptr::null(), &mut t), MCFX_E_INVALID_ARGUMENT);
        let done = std::sync::Arc::new(Completions::default());
        let dir = std::sync::Arc::new(Directory::default());
        let c = config(&done, &dir);
        assert_eq!(mcfx_create(&c, ptr::null_mut()), MCFX_E_INVALID_ARGUMENT);
    }
}

#[test]
fn an_older_smaller_config_gets_defaults_for_newer_fields() {
    let _g = serial();
    let a = Node::with(|c| {
        c.struct_size = std::mem::offset_of!(mcfx_config, queue_capacity) as u32;
        c.queue_capacity = 3; // beyond struct_size: must be ignored
    });
    let src = flagcx_sys::testing::AlignedBuf::new(64);
    a.register(&src);
    let ops: Vec<_> = (0..100).map(|i| write(src.addr(), 64, 1, 0x1000, i)).collect();
    let (st, n) = a.submit(&ops);
    assert_eq!((st, n), (OK, 100), "the default capacity applies, not 3");
}

#[test]
fn provider_options_set_the_software_provider_knobs() {
    let _g = serial();
    let _a = Node::with(|c| c.provider_options = c"latency_ns=1234, fail_op=0".as_ptr());
    assert_eq!(flagcx_sys::sw::knob(flagcx_sys::sw::Knob::LatencyNs), Some(1234));
}

#[test]
fn last_error_is_copied_truncated_and_sized_like_snprintf() {
    let _g = serial();
    // SAFETY: NULL handle on purpose.
    assert_eq!(
        unsafe { mcfx_unregister(ptr::null_mut(), ptr::null_mut()) },
        MCFX_E_INVALID_ARGUMENT
    );
    let full = last_error();
    assert!(full.contains("mcfx_unregister") && full.contains("NULL"), "{full}");
    let mut small = [0x55 as c_char; 5];
    // SAFETY: 5-byte buffer.
    let n = unsafe { mcfx_last_error(small.as_mut_ptr(), small.len()) };
    assert_eq!(n, full.len());
    // SAFETY: NUL-terminated by the call.
    assert_eq!(unsafe { CStr::from_ptr(small.as_ptr()) }.to_str().unwrap(), &full[..4]);
    // SAFETY: NULL buffer with cap 0 only asks for the length.
    assert_eq!(unsafe { mcfx_last_error(ptr::null_mut(), 0) }, full.len());
}

#[test]
fn endpoint_and_stats_check_their_buffers() {
    let _g = serial();
    let a = Node::new();
    assert!(a.endpoint.starts_with("127.0.0.1:"), "{}", a.endpoint);
    let mut buf = [0 as c_char; 4];
    let mut len = 0;
    // SAFETY: 4-byte buffer.
    let st = unsafe { mcfx_local_endpoint(a.t, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((st, len), (MCFX_E_BUFFER_TOO_SMALL, a.endpoint.len()));
    // SAFETY: NULL length pointer.
    let st = unsafe { mcfx_local_endpoint(a.t, buf.as_mut_ptr(), 4, ptr::null_mut()) };
    assert_eq!(st, MCFX_E_INVALID_ARGUMENT);
    let mut s = mcfx_stats::default();
    // SAFETY: struct_size 0 is refused before anything is written.
    assert_eq!(unsafe { mcfx_get_stats(a.t, &mut s) }, MCFX_E_INVALID_ARGUMENT);
    // An older, shorter stats struct: only its fields are written.
    let mut words = [0u64; 4];
    words[0] = 24; // struct_size = 24 (size, reserved, submitted, completed...)
                   // SAFETY: 32 writable bytes, struct_size says 24.
    let st = unsafe { mcfx_get_stats(a.t, words.as_mut_ptr().cast()) };
    assert_eq!(st, OK);
    assert_eq!(words[3], 0, "bytes past struct_size untouched");
}
