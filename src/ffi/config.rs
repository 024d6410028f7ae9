//! The C config: read at the caller's size, its callbacks wrapped, and its
//! fields copied into the core's settings (`crate::config` owns the
//! defaults, zero-means-default and the limits).

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::Duration;

use super::guard::invalid;
use super::types::*;
use crate::config::{or_default, Config, MAX_ENDPOINT_LEN};
use crate::error::{fail, Result, Status};
use crate::logging;
use crate::logging::message;

/// The fields every caller must pass (everything up to `resolve_ctx`).
pub(super) const MIN_CONFIG_SIZE: usize = std::mem::offset_of!(mcfx_config, queue_capacity);

/// Where each field of `mcfx_config` ends: a `struct_size` below the full
/// size must be one of these, so that no field is read in part (a pointer
/// cut short and zero-extended would be called).
const CONFIG_FIELD_ENDS: [usize; 21] = {
    use std::mem::{offset_of, size_of};
    macro_rules! ends {
        ($($f:ident: $t:ty),+) => { [$(offset_of!(mcfx_config, $f) + size_of::<$t>()),+] };
    }
    ends!(struct_size: u32, abi_version: u32, on_complete: mcfx_complete_fn,
        complete_ctx: *mut c_void, resolve: mcfx_resolve_fn, resolve_ctx: *mut c_void,
        queue_capacity: u32, submit_wait_us: u32, op_timeout_ms: u32, connect_timeout_ms: u32,
        spin_grace_us: u32, max_batch: u32, max_slice_bytes: u64, connect_threads: u32,
        shutdown_timeout_ms: u32, flags: u32, log_level: u32, log: mcfx_log_fn,
        log_ctx: *mut c_void, max_in_flight: u32, max_regions: u32)
};
const _: () = assert!(
    CONFIG_FIELD_ENDS[CONFIG_FIELD_ENDS.len() - 1] == std::mem::size_of::<mcfx_config>(),
    "CONFIG_FIELD_ENDS must list every field of mcfx_config"
);

/// The defaults as the C struct carries them (from `Config::default()`).
pub(super) fn default_config() -> mcfx_config {
    let d = Config::default();
    let clamp = |v: u128| u32::try_from(v).unwrap_or(u32::MAX);
    mcfx_config {
        struct_size: std::mem::size_of::<mcfx_config>() as u32,
        abi_version: MCFX_ABI_VERSION,
        on_complete: None,
        complete_ctx: ptr::null_mut(),
        resolve: None,
        resolve_ctx: ptr::null_mut(),
        queue_capacity: d.queue_capacity as u32,
        submit_wait_us: clamp(d.submit_wait.as_micros()),
        op_timeout_ms: clamp(d.op_timeout.as_millis()),
        connect_timeout_ms: clamp(d.connect_timeout.as_millis()),
        spin_grace_us: clamp(d.spin_grace.as_micros()),
        max_batch: d.max_batch as u32,
        max_slice_bytes: d.max_slice_bytes,
        connect_threads: d.connect_threads as u32,
        shutdown_timeout_ms: clamp(d.shutdown_timeout.as_millis()),
        flags: if d.serve_peers { 0 } else { MCFX_FLAG_NO_SERVE }
            | if d.pin_asleep { 0 } else { MCFX_FLAG_NO_PIN_ASLEEP },
        log_level: mcfx_log_level::MCFX_LOG_WARN as u32,
        log: None,
        log_ctx: ptr::null_mut(),
        max_in_flight: d.max_in_flight as u32,
        max_regions: d.max_regions as u32,
    }
}

/// The bytes of a `size`-byte config that hold whole fields (for
/// `mcfx_config_init`, which never writes part of a field).
pub(super) fn whole_fields(size: usize) -> usize {
    CONFIG_FIELD_ENDS.iter().copied().filter(|&end| end <= size).max().unwrap_or(0)
}

/// Copies a caller's config of any size into a zero-filled current one.
///
/// # Safety
/// `config` must be NULL or readable for its `struct_size` bytes.
pub(super) unsafe fn read_config(config: *const mcfx_config) -> Result<mcfx_config> {
    if config.is_null() {
        return invalid("NULL config");
    }
    // SAFETY: the first 8 bytes (struct_size, abi_version) are always present.
    let (size, version) = unsafe { ((*config).struct_size as usize, (*config).abi_version) };
    if !(1..=MCFX_ABI_VERSION).contains(&version) {
        return fail(
            Status::MCFX_E_BAD_CONFIG,
            message(format_args!(
                "config abi_version {version}, this library accepts 1..={MCFX_ABI_VERSION}"
            )),
        );
    }
    if size < MIN_CONFIG_SIZE {
        return fail(
            Status::MCFX_E_BAD_CONFIG,
            message(format_args!("config struct_size {size} is below the minimum {MIN_CONFIG_SIZE} (use mcfx_config_init)")),
        );
    }
    let n = size.min(std::mem::size_of::<mcfx_config>());
    if !CONFIG_FIELD_ENDS.contains(&n) {
        return fail(
            Status::MCFX_E_BAD_CONFIG,
            message(format_args!(
                "config struct_size {size} ends inside a field (it must be sizeof(mcfx_config) \
                 of some header version; use mcfx_config_init)"
            )),
        );
    }
    let mut c = std::mem::MaybeUninit::<mcfx_config>::zeroed();
    // SAFETY: reads n <= struct_size bytes the caller vouched for; all-zero
    // is a valid mcfx_config (NULL pointers, None callbacks, zeros).
    unsafe {
        ptr::copy_nonoverlapping(config.cast::<u8>(), c.as_mut_ptr().cast::<u8>(), n);
        Ok(c.assume_init())
    }
}

/// A C context pointer the caller promised may be used from our threads.
#[derive(Clone, Copy)]
struct Ctx(*mut c_void);
// SAFETY: mcfx_create's contract: the callbacks and contexts are usable from
// the transport's threads until destroy returns.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

type Converted = (Config, crate::transport::CompletionFn, crate::transport::ResolverFn);

pub(super) fn convert_config(c: &mcfx_config) -> Result<Converted> {
    let Some(complete) = c.on_complete else {
        return invalid("config.on_complete is NULL");
    };
    let Some(resolve) = c.resolve else {
        return invalid("config.resolve is NULL");
    };
    if c.flags & !(MCFX_FLAG_NO_SERVE | MCFX_FLAG_NO_PIN_ASLEEP) != 0 {
        return fail(
            Status::MCFX_E_BAD_CONFIG,
            message(format_args!("unknown config flags {:#x}", c.flags)),
        );
    }
    let d = Config::default();
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    let us = |v: u32| Duration::from_micros(u64::from(v));
    let config = Config {
        queue_capacity: or_default(c.queue_capacity as usize, d.queue_capacity),
        submit_wait: us(c.submit_wait_us),
        op_timeout: or_default(ms(c.op_timeout_ms), d.op_timeout),
        connect_timeout: or_default(ms(c.connect_timeout_ms), d.connect_timeout),
        spin_grace: or_default(us(c.spin_grace_us), d.spin_grace),
        max_batch: or_default(c.max_batch as usize, d.max_batch),
        max_slice_bytes: or_default(c.max_slice_bytes, d.max_slice_bytes),
        connect_threads: or_default(c.connect_threads as usize, d.connect_threads),
        shutdown_timeout: or_default(ms(c.shutdown_timeout_ms), d.shutdown_timeout),
        serve_peers: c.flags & MCFX_FLAG_NO_SERVE == 0,
        pin_asleep: c.flags & MCFX_FLAG_NO_PIN_ASLEEP == 0,
        max_in_flight: or_default(c.max_in_flight as usize, d.max_in_flight),
        max_regions: or_default(c.max_regions as usize, d.max_regions),
    };
    let complete_ctx = Ctx(c.complete_ctx);
    let resolve_ctx = Ctx(c.resolve_ctx);
    let on_complete = try_box(move |user_data: u64, status: Status| {
        let ctx = complete_ctx;
        // SAFETY: the caller's callback and context, valid until destroy
        // returns (mcfx_create's contract); the progress thread catches a
        // Rust panic unwinding out of it.
        unsafe { complete(ctx.0, user_data, status) }
    })?;
    let resolver = try_box(move |peer: u64| -> std::result::Result<String, String> {
        let ctx = resolve_ctx;
        let mut buf = [0u8; MAX_ENDPOINT_LEN + 1];
        let rc = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: as above; buf is writable for its length.
            unsafe { resolve(ctx.0, peer, buf.as_mut_ptr().cast(), buf.len()) }
        }))
        .map_err(|_| message(format_args!("the resolver callback panicked")))?;
        if rc != 0 {
            return Err(message(format_args!(
                "the resolver callback returned {rc} (peer unknown)"
            )));
        }
        let Some(end) = buf.iter().position(|&b| b == 0) else {
            return Err(message(format_args!(
                "the resolver callback wrote no NUL-terminated endpoint"
            )));
        };
        let Ok(text) = std::str::from_utf8(&buf[..end]) else {
            return Err(message(format_args!("the resolver callback wrote a non-UTF-8 endpoint")));
        };
        // Runs on a connector thread, on every connect: no allocation that
        // could abort (an empty endpoint fails the connect as malformed).
        let mut endpoint = String::new();
        if endpoint.try_reserve_exact(text.len()).is_ok() {
            endpoint.push_str(text);
        }
        Ok(endpoint)
    })?;
    Ok((config, on_complete, resolver))
}

/// `value` in a new box, or `MCFX_E_NO_MEMORY` when there is no memory
/// for it (`Box::new` would abort the host).
fn try_box<T>(value: T) -> Result<Box<T>> {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value)); // no allocation
    }
    // SAFETY: a non-zero-sized layout; the result is checked before use.
    let p = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return fail(Status::MCFX_E_NO_MEMORY, "no memory for the config's callbacks");
    }
    // SAFETY: `p` is a fresh allocation of T's layout from the global
    // allocator, which is what Box owns and frees.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}

/// The log callback and its level, if the config has one.
pub(super) fn convert_log(c: &mcfx_config) -> Result<Option<(u32, logging::LogFn)>> {
    let level = match c.log_level {
        0 => logging::WARN,
        l if l <= logging::TRACE => l,
        l => {
            return fail(
                Status::MCFX_E_BAD_CONFIG,
                message(format_args!("log_level {l} is outside 1..={}", logging::TRACE)),
            )
        }
    };
    let Some(log) = c.log else { return Ok(None) };
    let ctx = Ctx(c.log_ctx);
    let f = try_box(move |level: u32, message: &std::ffi::CStr| {
        let ctx = ctx;
        let level = match level {
            logging::ERROR => mcfx_log_level::MCFX_LOG_ERROR,
            logging::WARN => mcfx_log_level::MCFX_LOG_WARN,
            logging::INFO => mcfx_log_level::MCFX_LOG_INFO,
            logging::DEBUG => mcfx_log_level::MCFX_LOG_DEBUG,
            _ => mcfx_log_level::MCFX_LOG_TRACE,
        };
        // SAFETY: the caller's callback and context, valid until destroy
        // returns (mcfx_create's contract; logging never calls a closed
        // sink); the message is NUL-terminated and outlives the call.
        unsafe { log(ctx.0, level, message.as_ptr()) }
    })?;
    Ok(Some((level, f)))
}
