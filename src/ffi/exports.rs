//! The exported `extern "C"` functions (each a thin shell around a call of
//! the core inside [`guard`]).

use std::ffi::{c_char, c_void};
use std::mem::ManuallyDrop;
use std::panic::catch_unwind;
use std::ptr;

use super::config::{convert_config, convert_log, default_config, read_config, whole_fields};
use super::guard::{
    guard, invalid, live_transport, mcfx_transport, publish, refused, slot_of, Body, LAST_ERROR,
};
use super::op::slice;
use super::types::*;
use crate::error::{fail, mcfx_status, message, Error, Status};
use crate::logging::{self, Scope};
use crate::transport::Transport;

/// The ABI version this library implements (`MCFX_ABI_VERSION`).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_abi_version() -> u32 {
    MCFX_ABI_VERSION
}

/// The implementation's name: "rust" for this library (the C++ baseline
/// says "cpp"). Static string; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_impl_name() -> *const c_char {
    c"rust".as_ptr()
}

/// What the loaded FlagCX can do, as `MCFX_CAP_*` bits: whether a failed
/// transfer can be reported (`MCFX_CAP_REPORTS_TRANSFER_FAILURES`; without
/// it a failed transfer completes `MCFX_OK`) and whether it is the in-tree
/// software provider, a test double (`MCFX_CAP_SOFTWARE_PROVIDER`). The
/// same for every transport of the process; `mcfx_create` logs a warning
/// for each that a production host should know about. Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_capabilities() -> u64 {
    catch_unwind(crate::transport::capabilities).unwrap_or(0)
}

/// A static description of a status code (unknown codes included). Never
/// NULL; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn mcfx_strerror(status: i32) -> *const c_char {
    match Status::from_i32(status) {
        Some(s) => s.description().as_ptr(),
        None => c"unknown status code".as_ptr(),
    }
}

/// Copies the message of this thread's last failed call into `buf` (at most
/// `cap - 1` bytes plus a NUL) and returns the message's full length, like
/// `snprintf` (messages are at most 512 bytes). `buf` may be NULL when `cap` is 0. Thread-safe (per thread).
///
/// # Safety
/// `buf` must be writable for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn mcfx_last_error(buf: *mut c_char, cap: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|m| {
            let m = m.borrow();
            let m = m.as_bytes();
            if !buf.is_null() && cap > 0 {
                let n = m.len().min(cap - 1);
                // SAFETY: the caller made buf writable for cap > n bytes.
                unsafe {
                    ptr::copy_nonoverlapping(m.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            m.len()
        })
    })
    .unwrap_or(0)
}

/// Fills the first `size` bytes of `*config` (pass `sizeof(mcfx_config)` as
/// the caller compiled it) with the defaults: `struct_size` (the part
/// written), `abi_version`, every numeric default (queue_capacity 4096,
/// op_timeout_ms 30000, ...), NULL callbacks, flags 0. A caller built against
/// an older, smaller header is never written past its struct, and only whole
/// fields are written (`struct_size` says how many bytes). NULL, or `size`
/// below 8, is ignored. Thread-safe.
///
/// # Safety
/// `config` must be NULL or point to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn mcfx_config_init(config: *mut mcfx_config, size: usize) {
    if config.is_null() || size < 8 {
        return;
    }
    let n = whole_fields(size);
    let init = mcfx_config { struct_size: n as u32, ..default_config() };
    // SAFETY: checked non-NULL; the caller made `size` >= n bytes writable;
    // mcfx_config has no padding, so every byte copied is initialized.
    unsafe {
        ptr::copy_nonoverlapping((&init as *const mcfx_config).cast::<u8>(), config.cast::<u8>(), n)
    }
}

/// Creates a transport: a FlagCX engine, its RPC server, the progress thread
/// and the connector threads. On success `*out` holds a handle to free with
/// `mcfx_destroy`. Thread-safe.
///
/// Errors: `MCFX_E_INVALID_ARGUMENT` (NULL config/out or missing callback),
/// `MCFX_E_BAD_CONFIG` (struct_size too small, abi_version 0 or above
/// `MCFX_ABI_VERSION`, values out of range: see each field's maximum),
/// `MCFX_E_FLAGCX` (no engine: e.g. no RDMA device with real FlagCX),
/// `MCFX_E_NO_MEMORY` (no room for a thread's stack and start-up, or memory
/// the call needed; everything started is torn down, the host is never
/// aborted), `MCFX_E_INTERNAL` (a thread refused for another reason).
///
/// The transports of one process share one FlagCX engine (FlagCX
/// registration is process-wide); they are otherwise independent and may be
/// created and destroyed in any order.
///
/// # Safety
/// `config` must point to `config->struct_size` readable bytes; `out` must be
/// writable. The callbacks and their contexts must stay valid until
/// `mcfx_destroy` returns.
#[no_mangle]
pub unsafe extern "C" fn mcfx_create(
    config: *const mcfx_config,
    out: *mut *mut mcfx_transport,
) -> mcfx_status {
    guard("mcfx_create", || {
        crate::logging::init();
        if out.is_null() {
            return invalid("NULL out pointer");
        }
        // SAFETY: checked non-NULL; the caller provides a writable pointer.
        unsafe { out.write(ptr::null_mut()) };
        // SAFETY: the caller vouches config->struct_size bytes are readable.
        let c = unsafe { read_config(config)? };
        let (config, on_complete, resolver) = convert_config(&c)?;
        let log =
            convert_log(&c)?.map(|(level, f)| logging::register(level, f)).transpose().map_err(
                |_| Error::new(Status::MCFX_E_NO_MEMORY, "create: no memory for the log callback"),
            )?;
        // Creation's events, and the new threads' (they inherit the route),
        // go to this transport's callback only.
        let scope = Scope::enter(log.as_ref());
        let inner = match Transport::create(config, on_complete, resolver) {
            Ok(inner) => inner,
            Err(e) => {
                drop(scope);
                if let Some(sink) = &log {
                    logging::close(sink);
                }
                return Err(e);
            }
        };
        drop(scope);
        let handle = publish(Body { inner: ManuallyDrop::new(inner), log });
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Destroys a transport: stops accepting calls on the handle (concurrent
/// calls get `MCFX_E_SHUTTING_DOWN`; calls already running, e.g. an
/// `mcfx_unregister_batch` on another thread, are waited for), delivers
/// exactly one completion to every accepted op (`MCFX_E_CANCELED` for ops
/// that never ran or did not finish within `shutdown_timeout_ms`), joins the
/// progress thread, unregisters the transport's memory and frees the
/// transport. No callback runs after it returns. NULL is a no-op
/// (`MCFX_OK`). A handle that was already destroyed, or is being destroyed
/// by another thread, gives `MCFX_E_INVALID_ARGUMENT` (the handle's memory
/// is never freed, so a late call is answered, not a use of freed memory;
/// once a newer transport reuses it the answer is that transport's: do not
/// rely on it).
///
/// Called from one of this transport's own callbacks (completion or
/// resolver), it returns `MCFX_E_IN_CALLBACK` and changes nothing: destroy
/// it from another thread. Destroying another transport from a callback is
/// allowed, except when that transport's own thread is at that moment
/// destroying the caller's transport (directly or through a chain of such
/// destroys): that would wait for ever, so it returns
/// `MCFX_E_WOULD_DEADLOCK` and changes nothing.
///
/// Blocking: destroy waits for every resolver call that is running to
/// return, on any connector thread (the callback may use its context until
/// destroy returns), logging a warning while it waits; a resolver that
/// blocks forever blocks destroy forever. Ops waiting for that peer fail
/// `MCFX_E_CONNECT` at `connect_timeout_ms` regardless. Destroy never waits
/// for FlagCX's connect, which calls nothing of the caller's: a thread
/// inside it is left to finish on its own, holding its own references.
///
/// Fork: in a child forked from the process that created the transport
/// (Linux 4.14 or later), every call on the handle but this one returns
/// `MCFX_E_FORKED`; destroy returns `MCFX_OK` and releases the handle
/// without touching the parent's threads, FlagCX state or locks (the
/// child's copy of that memory is not freed). `mcfx_create` in such a child
/// returns `MCFX_E_FORKED` too: the parent's threads held locks the child
/// inherited; `exec` first (a spawned worker), or fork before creating any
/// transport.
///
/// Other transports of the process are not affected: they share the
/// process's FlagCX engine, which goes with the last transport, and memory
/// registered by several transports stays registered until the last of
/// them unregisters it.
///
/// # Safety
/// `transport` must be NULL or a handle from `mcfx_create`.
#[no_mangle]
pub unsafe extern "C" fn mcfx_destroy(transport: *mut mcfx_transport) -> mcfx_status {
    if transport.is_null() {
        return mcfx_status::MCFX_OK;
    }
    guard("mcfx_destroy", || {
        let slot = slot_of(transport)?;
        let admission = match slot.gate.admit() {
            Ok(admission) => admission,
            Err(crate::gate::Refused::Forked) => {
                // A child's copy of its parent's transport: nothing of it
                // can be torn down here, and no lock is taken (a parent's
                // thread may have held it at the fork): the slot stays as
                // the fork left it.
                return Ok(());
            }
            Err(crate::gate::Refused::Closing) => {
                return invalid("the transport is already being destroyed by another call")
            }
            Err(why) => return refused(why),
        };
        let body = crate::slots::body(slot).cast::<Body>();
        if body.is_null() {
            return invalid("the transport is already being destroyed by another call");
        }
        // SAFETY: admitted while the body was published: it stays until the
        // gate closes, which waits for `admission`.
        let t = unsafe { &(*body).inner };
        if t.on_own_thread() {
            return fail(
                Status::MCFX_E_IN_CALLBACK,
                "called from one of the transport's own callbacks; nothing was changed",
            );
        }
        let id = slot.id.load(std::sync::atomic::Ordering::Relaxed);
        let waiting = crate::wait_graph::wait_for(id)?;
        if !slot.gate.begin_close() {
            return invalid("the transport is already being destroyed by another call");
        }
        // This call owns the body now: later admissions find none.
        slot.body.store(std::ptr::null_mut(), std::sync::atomic::Ordering::Release);
        drop(admission);
        // Waits for the calls still inside (the gate), then stops the threads.
        t.shutdown();
        // SAFETY: published by mcfx_create from Box::into_raw; this call
        // won the gate's one OPEN -> CLOSING claim, so it frees it once, and
        // no call is inside any more (shutdown closed the gate).
        drop(unsafe { Box::from_raw(body) });
        drop(waiting);
        Ok(())
    })
}

/// Copies the transport's endpoint (`host:port`, what peers' resolvers must
/// return for it) into `buf` with a NUL and stores its length (without the
/// NUL) in `*len`. `MCFX_E_BUFFER_TOO_SMALL` when it does not fit (`*len`
/// still tells the length); `MCFX_E_NOT_SERVING` (nothing written) for a
/// transport created with `MCFX_FLAG_NO_SERVE`, which peers cannot connect
/// to. The transports of one process share one FlagCX engine, so they report
/// the same endpoint: a peer reaches every region registered in the process
/// through it. Thread-safe.
///
/// # Safety
/// `buf` must be writable for `cap` bytes; `len` must be writable.
#[no_mangle]
pub unsafe extern "C" fn mcfx_local_endpoint(
    transport: *const mcfx_transport,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mcfx_status {
    guard("mcfx_local_endpoint", || {
        let t = live_transport(transport)?;
        if len.is_null() || (buf.is_null() && cap > 0) {
            return invalid("NULL buffer or length pointer");
        }
        let Some(ep) = t.endpoint() else {
            return fail(
                Status::MCFX_E_NOT_SERVING,
                "the transport was created with MCFX_FLAG_NO_SERVE: peers cannot connect to it",
            );
        };
        let ep = ep.as_bytes();
        // SAFETY: len checked non-NULL.
        unsafe { len.write(ep.len()) };
        if ep.len() >= cap {
            return fail(
                Status::MCFX_E_BUFFER_TOO_SMALL,
                message(format_args!("endpoint needs {} bytes, buffer has {cap}", ep.len() + 1)),
            );
        }
        // SAFETY: buf is writable for cap > ep.len() bytes.
        unsafe {
            ptr::copy_nonoverlapping(ep.as_ptr(), buf.cast::<u8>(), ep.len());
            *buf.add(ep.len()) = 0;
        }
        Ok(())
    })
}

/// Registers `[addr, addr + length)` with FlagCX so ops can use it (and peers
/// can address it, from connections they make afterwards). Errors:
/// `MCFX_E_INVALID_ARGUMENT`, `MCFX_E_OVERFLOW`, `MCFX_E_ALREADY_REGISTERED`
/// (overlaps a region, or another transport of the process registered this
/// base with another length), `MCFX_E_TOO_MANY_REGIONS` (`max_regions`
/// reached), `MCFX_E_NO_MEMORY` (nothing changed), `MCFX_E_FLAGCX`,
/// `MCFX_E_SHUTTING_DOWN`. Thread-safe.
///
/// # Safety
/// The range must stay valid memory until it is unregistered (or the
/// transport destroyed); transfers and peers may read and write it meanwhile.
#[no_mangle]
pub unsafe extern "C" fn mcfx_register(
    transport: *mut mcfx_transport,
    addr: *mut c_void,
    length: usize,
) -> mcfx_status {
    guard("mcfx_register", || {
        let t = live_transport(transport)?;
        // SAFETY: this function's contract, passed on.
        unsafe { t.register(addr as usize, length) }
    })
}

/// Unregisters the region that starts at `addr`. Errors:
/// `MCFX_E_INVALID_ARGUMENT` (NULL `addr`), `MCFX_E_NOT_FOUND`, `MCFX_E_BUSY`
/// (ops on it are in flight; nothing changed). Memory another transport of
/// the process also registered stays registered for that one. Thread-safe.
///
/// # Safety
/// `transport` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcfx_unregister(
    transport: *mut mcfx_transport,
    addr: *mut c_void,
) -> mcfx_status {
    guard("mcfx_unregister", || {
        let t = live_transport(transport)?;
        if addr.is_null() {
            return invalid("NULL address");
        }
        t.unregister(addr as usize)
    })
}

/// Registers `count` regions in order; stops at the first failure (the
/// regions before it stay registered; the message names the index).
/// Thread-safe.
///
/// # Safety
/// As `mcfx_register` for every region; `regions` must hold `count` entries.
#[no_mangle]
pub unsafe extern "C" fn mcfx_register_batch(
    transport: *mut mcfx_transport,
    regions: *const mcfx_region,
    count: usize,
) -> mcfx_status {
    guard("mcfx_register_batch", || {
        let t = live_transport(transport)?;
        // SAFETY: the caller provides count entries (checked non-NULL).
        for (i, r) in unsafe { slice(regions, count)? }.iter().enumerate() {
            // SAFETY: mcfx_register's contract, per region.
            unsafe { t.register(r.addr as usize, r.length) }.map_err(|e| {
                Error::new(e.status, message(format_args!("region {i}: {}", e.message)))
            })?;
        }
        Ok(())
    })
}

/// Unregisters `count` regions in order; stops at the first failure (a NULL
/// entry is `MCFX_E_INVALID_ARGUMENT`; the message names the index).
/// Thread-safe.
///
/// # Safety
/// `addrs` must hold `count` entries.
#[no_mangle]
pub unsafe extern "C" fn mcfx_unregister_batch(
    transport: *mut mcfx_transport,
    addrs: *const *mut c_void,
    count: usize,
) -> mcfx_status {
    guard("mcfx_unregister_batch", || {
        let t = live_transport(transport)?;
        // SAFETY: the caller provides count entries (checked non-NULL).
        for (i, a) in unsafe { slice(addrs, count)? }.iter().enumerate() {
            if a.is_null() {
                return invalid(message(format_args!("region {i}: NULL address")));
            }
            t.unregister(*a as usize).map_err(|e| {
                Error::new(e.status, message(format_args!("region {i}: {}", e.message)))
            })?;
        }
        Ok(())
    })
}

/// Queues `count` ops. Ops are taken in order; the call stops at the first
/// op it cannot accept. The ops before it were queued and each gets exactly
/// one completion callback; `*accepted` tells how many. On a per-op error
/// (`MCFX_E_INVALID_ARGUMENT` for a bad opcode, a non-zero reserved field, a
/// zero length or a NULL local address; `MCFX_E_OVERFLOW`;
/// `MCFX_E_NOT_REGISTERED`) `ops[*accepted]` is the bad op (the message names
/// its index too) and the ops after it were not queued. On
/// `MCFX_E_QUEUE_FULL` `ops[*accepted..]` were not queued. No callback runs
/// for an op that was not queued. So a caller fails `ops[*accepted]` alone
/// and resubmits `ops + *accepted + 1` in one call (after a per-op error), or
/// `ops + *accepted` later (queue full). Errors of the call itself queue
/// nothing and set `*accepted` to 0: a NULL `transport`, NULL `ops` with a
/// non-zero `count` (`MCFX_E_INVALID_ARGUMENT`), `MCFX_E_SHUTTING_DOWN`,
/// `MCFX_E_FORKED`. `accepted` may be NULL. `MCFX_E_QUEUE_FULL` means no
/// room in the queue (`queue_capacity`) or within `max_in_flight` (ops the
/// transport holds: queued, waiting for a connection, inside FlagCX), after
/// waiting up to `submit_wait_us`.
///
/// Each queued op's deadline (`op_timeout_ms`) counts from this call,
/// wherever the op is when it passes (queued, waiting for its connection, or
/// in FlagCX). The call reads the monotonic clock once and deadlines are
/// checked against a coarse clock (granularity 1-4 ms on Linux) that is
/// never ahead of it, so an op times out no earlier than `op_timeout_ms`
/// after the call and typically within a few ms after.
///
/// Thread-safe; never blocks, except waiting asleep up to `submit_wait_us`
/// for room (woken as ops complete), and never calls FlagCX. Ops are queued a few at a time as they are
/// checked, so completion callbacks of the first ops may run while the call
/// still reads the later ones: a callback must not change or free the
/// `ops` array of a submit that has not returned.
///
/// # Safety
/// `ops` must hold `count` entries, unchanged until the call returns;
/// `transport` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcfx_submit(
    transport: *mut mcfx_transport,
    ops: *const mcfx_op,
    count: usize,
    accepted: *mut usize,
) -> mcfx_status {
    let mut n = 0;
    let status = guard("mcfx_submit", || {
        let t = live_transport(transport)?;
        // SAFETY: the caller provides count entries (checked non-NULL).
        t.submit_admitted(t.admission(), unsafe { slice(ops, count)? }, &mut n)
    });
    if !accepted.is_null() {
        // SAFETY: checked non-NULL; the caller provides a writable size_t.
        unsafe { accepted.write(n) };
    }
    status
}

/// Runs one progress pass on the calling thread, unless another thread is
/// running one (then it returns at once): queued ops are handed to FlagCX,
/// transfers in flight are polled, and ops that finished complete, their
/// callbacks running on this thread before the call returns. Stores in
/// `*completed` (when not NULL) how many ops it completed.
///
/// For a thread that waits for its completions anyway (a loop that polls
/// for them): calling this in that loop turns the wait into the work, so
/// the ops do not wait for the progress thread to get a CPU beside busy
/// threads. Never needed: the progress thread completes every op on its
/// own. Cheap when there is nothing to do (a few loads), and safe from any
/// number of threads at once (one runs the pass, the others return). A
/// pass is short (a few dozen ops), and a call may run none even with
/// transfers in flight (polled moments ago by another thread, or this
/// thread's recent calls found nothing and it skips a few): `*completed`
/// is 0 then; keep calling in the loop.
///
/// A thread whose last call of this was on a transport is taken to poll
/// it: its `mcfx_submit` of at most 16 ops there may leave a briefly
/// napping progress thread asleep (waking it would cost the thread its CPU
/// beside busy threads), and its next call here runs the pass that posts
/// them. If it does not call again, they start when the nap ends, at most
/// about 200 us later.
///
/// A call may sleep, so that waiting threads leave the CPUs to the thread
/// running the passes, when the CPUs are crowded (more threads waiting on
/// this transport than the process has CPUs). Once the calling thread has polled
/// for about 20 us while ops it submitted to this transport are
/// outstanding, its calls that complete nothing sleep until one of its ops
/// completes (at most about 200 us each); this lasts until the ops
/// outstanding at its first sleep have completed, and the next wait polls
/// first again. Never inside a completion callback or on a progress
/// thread, and not once destroy began (a sleeping call wakes and returns).
///
/// From a completion callback (on any thread) it returns `MCFX_OK` and
/// runs nothing for a transport whose pass is running on that thread.
/// `MCFX_E_SHUTTING_DOWN` once destroy began. Thread-safe.
///
/// # Safety
/// `transport` must be a live handle; `completed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mcfx_progress(
    transport: *mut mcfx_transport,
    completed: *mut u64,
) -> mcfx_status {
    let mut n = 0;
    // A thread whose recent calls found nothing to do skips a few without
    // touching the transport (`poll_backoff`), if the handle is still open
    // (a load; a destroyed handle gets its status from the full path).
    let open = slot_of(transport).is_ok_and(|slot| !slot.gate.is_closing());
    let status = if open && crate::progress::poll_backoff(transport as usize) {
        mcfx_status::MCFX_OK
    } else {
        guard("mcfx_progress", || {
            let t = live_transport(transport)?;
            let ran = t.progress()?;
            crate::progress::poll_result(transport as usize, ran.is_some());
            n = ran.unwrap_or(0);
            Ok(())
        })
    };
    if !completed.is_null() {
        // SAFETY: checked non-NULL; the caller provides a writable u64.
        unsafe { completed.write(n) };
    }
    status
}

/// Copies the counters into `*out`; set `out->struct_size` first (at least
/// 8). Only whole fields are written: a field that `struct_size` ends inside
/// is not, and `struct_size` is set to the bytes written. Thread-safe.
///
/// # Safety
/// `out` must point to `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn mcfx_get_stats(
    transport: *const mcfx_transport,
    out: *mut mcfx_stats,
) -> mcfx_status {
    guard("mcfx_get_stats", || {
        let t = live_transport(transport)?;
        if out.is_null() {
            return invalid("NULL stats pointer");
        }
        // SAFETY: checked non-NULL; struct_size is the first field.
        let size = unsafe { (*out).struct_size } as usize;
        if size < 8 {
            return fail(Status::MCFX_E_INVALID_ARGUMENT, "stats struct_size is not set");
        }
        // Whole fields only: every field after the first two u32 is a u64.
        let n = size.min(std::mem::size_of::<mcfx_stats>()) / 8 * 8;
        let full = mcfx_stats { struct_size: n as u32, ..mcfx_stats::from(&t.stats()) };
        // SAFETY: the caller made `size` bytes writable; we write n <= size.
        unsafe {
            ptr::copy_nonoverlapping((&full as *const mcfx_stats).cast::<u8>(), out.cast::<u8>(), n)
        };
        Ok(())
    })
}
