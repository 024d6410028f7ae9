//! The C ABI's fixed parts: version, table, status strings, config checks
//! and defaults, the host log callback, last-error copies, stats sizing. (The
//! layouts are pinned at compile time: src/ffi_layout.rs.)

mod common;

use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::Arc;

use common::*;
use flagcx_sys::testing::AlignedBuf;
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
    assert_eq!(api.abi_version, 1, "the v1 table says 1 for ever");
    #[cfg(target_pointer_width = "64")]
    assert_eq!(api.struct_size, 128, "15 entries after the two words");
    assert_eq!(api.submit as usize, mcfx_submit as *const () as usize);
    assert_eq!(api.create as usize, mcfx_create as *const () as usize);
    // SAFETY: static string.
    assert_eq!(unsafe { CStr::from_ptr((api.impl_name)()) }.to_str().unwrap(), "rust");
    // SAFETY: a plain function of the table.
    assert_eq!(unsafe { (api.capabilities)() }, mcfx_capabilities());
    assert_eq!(api.progress as usize, mcfx_progress as *const () as usize);
}

/// The tests run on the software provider, which reports failed transfers:
/// both bits are set, and every create says it runs on a test double.
#[test]
fn capabilities_name_the_software_provider_and_create_warns_about_it() {
    let _g = serial();
    assert_eq!(
        mcfx_capabilities(),
        MCFX_CAP_REPORTS_TRANSFER_FAILURES | MCFX_CAP_SOFTWARE_PROVIDER
    );
    let logged = Arc::new(LogLines::default());
    let _a = Node::with(with_log(&logged, mcfx_log_level::MCFX_LOG_WARN));
    assert_eq!(
        logged.wait_for("software FlagCX provider"),
        Some(mcfx_log_level::MCFX_LOG_WARN),
        "create says at WARN that the provider is a test double"
    );
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
        (Box::new(|c| c.abi_version = MCFX_ABI_VERSION + 1), MCFX_E_BAD_CONFIG, "abi_version"),
        (Box::new(|c| c.abi_version = 0), MCFX_E_BAD_CONFIG, "abi_version"),
        (Box::new(|c| c.struct_size = 8), MCFX_E_BAD_CONFIG, "struct_size"),
        (Box::new(|c| c.on_complete = None), MCFX_E_INVALID_ARGUMENT, "on_complete"),
        (Box::new(|c| c.resolve = None), MCFX_E_INVALID_ARGUMENT, "resolve"),
        (Box::new(|c| c.queue_capacity = 2 << 20), MCFX_E_BAD_CONFIG, "queue_capacity"),
        (Box::new(|c| c.max_slice_bytes = 1 << 32), MCFX_E_BAD_CONFIG, "max_slice_bytes"),
        (Box::new(|c| c.flags = 0x80), MCFX_E_BAD_CONFIG, "flags"),
        (Box::new(|c| c.log_level = 6), MCFX_E_BAD_CONFIG, "log_level"),
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
    let src = AlignedBuf::new(64);
    a.register(&src);
    let ops: Vec<_> = (0..100).map(|i| write(src.addr(), 64, 1, 0x1000, i)).collect();
    let (st, n) = a.submit(&ops);
    assert_eq!((st, n), (OK, 100), "the default capacity applies, not 3");
}

#[test]
fn every_abi_version_up_to_the_current_one_is_accepted() {
    let _g = serial();
    for v in 1..=MCFX_ABI_VERSION {
        let mut a = Node::with(|c| c.abi_version = v);
        assert_eq!(a.destroy(), OK, "abi_version {v}");
    }
}

#[test]
fn a_config_of_the_first_v1_layout_works() {
    let _g = serial();
    // A caller that knows only the fields before the log callback (what v1
    // had before `log_level` was added): the log fields read as defaults.
    let a = Node::with(|c| {
        c.struct_size = std::mem::offset_of!(mcfx_config, log_level) as u32;
        c.log_level = 77; // beyond struct_size: must be ignored
        c.op_timeout_ms = 0; // zero still means "default"
    });
    let b = Node::new();
    a.knows(1, &b);
    let (src, dst) = (AlignedBuf::new(64), AlignedBuf::new(64));
    a.register(&src);
    b.register(&dst);
    a.submit_ok(&[write(src.addr(), 64, 1, dst.addr() as u64, 1)]);
    assert_eq!(a.done.wait_one(1, LIMIT), OK);
}

#[test]
fn config_init_writes_the_real_defaults_and_only_into_the_callers_struct() {
    let mut c = std::mem::MaybeUninit::<mcfx_config>::uninit();
    // SAFETY: a full-size struct; config_init writes all of it.
    let c = unsafe {
        ptr::write_bytes(c.as_mut_ptr(), 0xa5, 1);
        mcfx_config_init(c.as_mut_ptr(), std::mem::size_of::<mcfx_config>());
        c.assume_init()
    };
    assert_eq!(c.struct_size as usize, std::mem::size_of::<mcfx_config>());
    assert_eq!(c.abi_version, MCFX_ABI_VERSION);
    assert!(c.on_complete.is_none() && c.resolve.is_none() && c.log.is_none());
    assert!(c.complete_ctx.is_null() && c.resolve_ctx.is_null() && c.log_ctx.is_null());
    // The documented defaults, as literals (README, header).
    assert_eq!(c.queue_capacity, 32768);
    assert_eq!(c.submit_wait_us, 0);
    assert_eq!(c.op_timeout_ms, 30_000);
    assert_eq!(c.connect_timeout_ms, 10_000);
    assert_eq!(c.spin_grace_us, 1000);
    assert_eq!(c.max_batch, 256);
    assert_eq!(c.max_slice_bytes, 1 << 30);
    assert_eq!(c.connect_threads, 4);
    assert_eq!(c.shutdown_timeout_ms, 1000);
    assert_eq!(c.flags, 0);
    assert_eq!(c.log_level, mcfx_log_level::MCFX_LOG_WARN as u32);
    // An older caller's shorter struct: written up to its size, not beyond.
    let mut bytes = [0xa5u8; 128];
    let short = std::mem::offset_of!(mcfx_config, log_level);
    // SAFETY: 128 writable bytes, of which config_init may write `short`.
    unsafe { mcfx_config_init(bytes.as_mut_ptr().cast(), short) };
    assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize, short);
    assert!(bytes[short..].iter().all(|&b| b == 0xa5), "wrote past the caller's struct");
}

/// Every `struct_size` from 0 to sizeof + 64 with every field set (a log
/// callback included): a size that ends inside a field is refused, a size
/// at a field's end uses exactly the fields before it, a larger one all of
/// them. A log pointer cut short and zero-extended used to be called
/// (SIGSEGV at 89..=93 on LP64).
#[test]
fn every_config_size_reads_whole_fields_or_is_refused() {
    let _g = serial();
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static LINES: AtomicUsize = AtomicUsize::new(0);
    // A size that ends between `log` and `log_ctx` passes a NULL context.
    unsafe extern "C-unwind" fn count_line(_: *mut c_void, _: mcfx_log_level, _: *const c_char) {
        LINES.fetch_add(1, Relaxed);
    }
    let full = std::mem::size_of::<mcfx_config>();
    let (mut ok, mut refused) = (0, 0);
    for size in 0..=full + 64 {
        let r = Node::try_with(|c| {
            c.log = Some(count_line);
            c.log_ctx = 0x5a5a as *mut c_void;
            c.log_level = mcfx_log_level::MCFX_LOG_INFO as u32;
            c.struct_size = size as u32;
        });
        let at_field_end = size >= full
            || (std::mem::offset_of!(mcfx_config, queue_capacity)..full).contains(&size)
                && field_ends().contains(&size);
        match r {
            Ok(mut node) => {
                assert!(at_field_end, "struct_size {size} cuts a field but was accepted");
                assert_eq!(node.destroy(), OK);
                ok += 1;
            }
            Err((st, msg)) => {
                assert!(!at_field_end, "struct_size {size} was refused: {st:?} {msg}");
                assert_eq!(st, MCFX_E_BAD_CONFIG, "struct_size {size}: {msg}");
                assert!(msg.contains("struct_size"), "struct_size {size}: {msg}");
                refused += 1;
            }
        }
    }
    assert!(ok > 64 && refused > 40, "{ok} accepted, {refused} refused");
    // The sizes that hold the log pointer whole used it.
    assert!(LINES.load(Relaxed) > 0);
}

/// Where each field of mcfx_config ends, from the field list of the header.
fn field_ends() -> Vec<usize> {
    use std::mem::offset_of;
    let p = 8; // pointers and function pointers on LP64
    vec![
        4,
        8,
        offset_of!(mcfx_config, on_complete) + p,
        offset_of!(mcfx_config, complete_ctx) + p,
        offset_of!(mcfx_config, resolve) + p,
        offset_of!(mcfx_config, resolve_ctx) + p,
        offset_of!(mcfx_config, queue_capacity) + 4,
        offset_of!(mcfx_config, submit_wait_us) + 4,
        offset_of!(mcfx_config, op_timeout_ms) + 4,
        offset_of!(mcfx_config, connect_timeout_ms) + 4,
        offset_of!(mcfx_config, spin_grace_us) + 4,
        offset_of!(mcfx_config, max_batch) + 4,
        offset_of!(mcfx_config, max_slice_bytes) + 8,
        offset_of!(mcfx_config, connect_threads) + 4,
        offset_of!(mcfx_config, shutdown_timeout_ms) + 4,
        offset_of!(mcfx_config, flags) + 4,
        offset_of!(mcfx_config, log_level) + 4,
        offset_of!(mcfx_config, log) + p,
        offset_of!(mcfx_config, log_ctx) + p,
        offset_of!(mcfx_config, max_in_flight) + 4,
        offset_of!(mcfx_config, max_regions) + 4,
    ]
}

#[test]
fn config_init_writes_only_whole_fields() {
    for size in 8..=std::mem::size_of::<mcfx_config>() {
        let mut bytes = [0xa5u8; 160];
        // SAFETY: 160 writable bytes, of which config_init may write `size`.
        unsafe { mcfx_config_init(bytes.as_mut_ptr().cast(), size) };
        let written = u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(written <= size && field_ends().contains(&written), "size {size}: {written}");
        assert!(bytes[written..].iter().all(|&b| b == 0xa5), "size {size}: wrote a part field");
    }
}

// ---- the host log callback ----------------------------------------------------

#[test]
fn the_log_callback_gets_its_transports_failed_op_warning_and_nothing_after_destroy() {
    let _g = serial();
    let logged = Arc::new(LogLines::default());
    let mut a = Node::with(with_log(&logged, mcfx_log_level::MCFX_LOG_WARN));
    let quiet = Node::new(); // no callback: its events go nowhere
    let (src, other) = (AlignedBuf::new(64), AlignedBuf::new(64));
    a.register(&src);
    quiet.register(&other);
    // Peer 404 is unknown to both resolvers: the op fails with a warning.
    quiet.submit_ok(&[write(other.addr(), 64, 404, 0x1000, 7)]);
    assert_eq!(quiet.done.wait_one(7, LIMIT), MCFX_E_RESOLVE);
    a.submit_ok(&[write(src.addr(), 64, 404, 0x1000, 1)]);
    assert_eq!(a.done.wait_one(1, LIMIT), MCFX_E_RESOLVE);
    assert_eq!(logged.wait_for("op failed"), Some(mcfx_log_level::MCFX_LOG_WARN));
    assert!(logged.contains("user_data=1"), "{:?}", logged.lines.lock().unwrap());
    assert!(!logged.contains("user_data=7"), "another transport's warning was routed here");
    assert!(!logged.contains("transport created"), "INFO passed a WARN callback");
    assert_eq!(a.destroy(), OK);
    let after_destroy = logged.count();
    // More events in the process (another transport's warning, a create and
    // a destroy): the destroyed transport's callback hears none.
    quiet.submit_ok(&[write(other.addr(), 64, 404, 0x1000, 8)]);
    assert_eq!(quiet.done.wait_one(8, LIMIT), MCFX_E_RESOLVE);
    let mut b = Node::new();
    assert_eq!(b.destroy(), OK);
    assert_eq!(logged.count(), after_destroy, "called after mcfx_destroy returned");
}

#[test]
fn an_event_of_no_transport_reaches_every_callback() {
    let _g = serial();
    let (one, two) = (Arc::new(LogLines::default()), Arc::new(LogLines::default()));
    let a = Node::with(with_log(&one, mcfx_log_level::MCFX_LOG_WARN));
    let b = Node::with(with_log(&two, mcfx_log_level::MCFX_LOG_WARN));
    // This thread is in no transport's scope (not inside an mcfx_* call).
    tracing::warn!(marker = 4242, "an event of the process");
    tracing::debug!("below every callback's level");
    for logged in [&one, &two] {
        assert_eq!(logged.wait_for("marker=4242"), Some(mcfx_log_level::MCFX_LOG_WARN));
        assert!(!logged.contains("below every"));
    }
    drop((a, b));
}

#[test]
fn the_log_level_selects_what_the_callback_gets() {
    let _g = serial();
    let errors_only = Arc::new(LogLines::default());
    let verbose = Arc::new(LogLines::default());
    let a = Node::with(with_log(&errors_only, mcfx_log_level::MCFX_LOG_ERROR));
    let mut b = Node::with(with_log(&verbose, mcfx_log_level::MCFX_LOG_INFO));
    assert_eq!(verbose.wait_for("transport created"), Some(mcfx_log_level::MCFX_LOG_INFO));
    let src = AlignedBuf::new(64);
    a.register(&src);
    a.submit_ok(&[write(src.addr(), 64, 404, 0x1000, 1)]);
    assert_eq!(a.done.wait_one(1, LIMIT), MCFX_E_RESOLVE);
    assert_eq!(b.destroy(), OK);
    assert!(verbose.contains("transport destroyed"), "destroy's INFO goes to its own callback");
    assert_eq!(errors_only.count(), 0, "{:?}", errors_only.lines.lock().unwrap());
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
