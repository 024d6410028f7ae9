//! The process's one FlagCX engine, shared by every transport.
//!
//! FlagCX registers memory per process, not per engine, and destroying an
//! engine drops every registration of the process. So the transports of a
//! process share one engine (created with the first transport, destroyed
//! with the last), and registrations are counted here per base address
//! across transports: FlagCX deregisters a base only when no transport uses
//! it any more.
//!
//! Invariants:
//! - at most one [`ProcessEngine`] exists at a time; `USERS` counts the
//!   [`EngineRef`]s and the engine is dropped (FlagCX engine destroyed) under
//!   the `CURRENT` lock when the count reaches zero, so a transport created
//!   concurrently never sees an engine that is about to go;
//!   (A FlagCX connection keeps the FlagCX engine alive; transports drop
//!   their connections before their engine hold, so the engine is not
//!   destroyed later, outside the lock, after a new one was created.)
//! - a base is registered with FlagCX once, by its first owner, and
//!   deregistered when its last owner unregisters; every owner registers it
//!   with the same length, and all of them use the one FlagCX id it got
//!   (another length is `MCFX_E_ALREADY_REGISTERED`, see below).
//!
//! Why one length per base: FlagCX keeps one registration per base in the
//! software provider (registering a base again resizes it and keeps its
//! id), but what a FlagCX does when a registered base is registered again
//! is not part of its API: one built on `ibv_reg_mr` hands out a new id and
//! keeps the old registration. Growing or shrinking a shared base by
//! registering it again, as this module did, then left transports with a
//! stale id and leaked the other registrations (a shrink left the longer one
//! open to remote writes into memory no owner vouched for any more).
//! Following the ids instead (the current id per base looked up when an op
//! is issued, earlier ids freed when no op uses them) would still depend on
//! FlagCX's answer to a second registration, and a shrink cannot take an id
//! away from transfers already in flight on it. So the engine never
//! registers a base FlagCX already has: the id a transport gets stays valid
//! until the last owner leaves, whatever FlagCX does with a second
//! registration (it never sees one). The cost is a rule for callers: the
//! transports of a process share a base only with one length (they
//! register the same buffers; a different length is refused, with a message
//! naming the length already registered).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use flagcx_sys::{Engine, MrId};
use parking_lot::Mutex;

use crate::error::{fail, message, Error, Result, Status};

/// The process's shared FlagCX engine and its registration counts.
pub struct ProcessEngine {
    pub engine: Engine,
    regs: Mutex<HashMap<usize, BaseRegistration>>,
    serving: Mutex<bool>,
}

/// One base address registered by one or more transports.
struct BaseRegistration {
    /// The FlagCX registration of `[base, base + len)`, made by the first
    /// owner.
    mr: MrId,
    len: usize,
    /// The transports that registered this base.
    owners: Vec<u64>,
}

/// The engine, how many [`EngineRef`]s hold it, and the process that made
/// it (a forked child must not use its parent's: its threads are gone).
static CURRENT: Mutex<Option<(Arc<ProcessEngine>, usize, u32)>> = Mutex::new(None);

/// The pid of the process whose engine `CURRENT` holds (0: none), readable
/// without the lock, which a thread of the parent may have held at fork.
static ENGINE_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether this process is a child forked while its parent had transports:
/// their threads, locks (parking_lot's global table among them) and FlagCX
/// engine do not exist coherently here, so nothing new may be built on
/// them. Reads one atomic; no lock.
pub fn inherited_through_fork() -> bool {
    // Relaxed: the value was written before the fork, in this memory.
    let pid = ENGINE_PID.load(Relaxed);
    pid != 0 && pid != std::process::id()
}

/// A transport's hold on the process engine; the last one dropped destroys
/// the FlagCX engine.
pub struct EngineRef {
    engine: Option<Arc<ProcessEngine>>,
    /// Identifies this holder's registrations.
    pub owner: u64,
}

impl EngineRef {
    /// The process engine, created if no transport holds one.
    pub fn acquire() -> flagcx_sys::Result<EngineRef> {
        static OWNERS: AtomicU64 = AtomicU64::new(1);
        let mut current = CURRENT.lock();
        let pid = std::process::id();
        // (A forked child of a process with an engine never gets here: see
        // `inherited_through_fork`.)
        let engine = match current.as_mut() {
            Some((engine, users, _)) => {
                *users += 1;
                Arc::clone(engine)
            }
            None => {
                let engine = Arc::new(ProcessEngine {
                    engine: Engine::create()?,
                    regs: Mutex::new(HashMap::new()),
                    serving: Mutex::new(false),
                });
                *current = Some((Arc::clone(&engine), 1, pid));
                ENGINE_PID.store(pid, Relaxed);
                engine
            }
        };
        // Relaxed: a unique number is all that is needed.
        Ok(EngineRef { engine: Some(engine), owner: OWNERS.fetch_add(1, Relaxed) })
    }
}

impl Deref for EngineRef {
    type Target = ProcessEngine;
    fn deref(&self) -> &ProcessEngine {
        self.engine.as_ref().expect("held until drop")
    }
}

impl Drop for EngineRef {
    fn drop(&mut self) {
        let ours = self.engine.take();
        let mut current = CURRENT.lock();
        let last = match current.as_mut() {
            Some((_, users, _)) => {
                *users -= 1;
                *users == 0
            }
            None => false,
        };
        drop(ours);
        if last {
            // Destroyed under the lock: see the module invariants.
            ENGINE_PID.store(0, Relaxed);
            drop(current.take());
        }
    }
}

impl ProcessEngine {
    /// Starts FlagCX's RPC server once per engine (while any transport
    /// serves, and until the engine goes).
    pub fn serve(&self) -> flagcx_sys::Result<()> {
        let mut serving = self.serving.lock();
        if !*serving {
            self.engine.start_rpc_server()?;
            *serving = true;
        }
        Ok(())
    }

    /// Registers `[addr, addr + len)` for `owner`: with FlagCX if no other
    /// transport has this base, otherwise as another owner of its
    /// registration, which must have the same length
    /// (`MCFX_E_ALREADY_REGISTERED` if not; see the module doc).
    /// `MCFX_E_FLAGCX` when FlagCX refuses, `MCFX_E_NO_MEMORY` (nothing
    /// changed) when the bookkeeping cannot be allocated.
    ///
    /// # Safety
    /// As [`Engine::register`]: the range stays valid memory until `owner`
    /// deregisters it.
    pub unsafe fn register(&self, owner: u64, addr: usize, len: usize) -> Result<MrId> {
        let no_memory = |_| Error::new(Status::MCFX_E_NO_MEMORY, "register: out of memory");
        let mut regs = self.regs.lock();
        if let Some(s) = regs.get_mut(&addr) {
            if s.len != len {
                return fail(
                    Status::MCFX_E_ALREADY_REGISTERED,
                    message(format_args!(
                        "register: [{addr:#x}, +{len}): another transport of this process \
                         registered this base with length {}; transports may share a base \
                         only with the same length (FlagCX keeps one registration per base)",
                        s.len
                    )),
                );
            }
            s.owners.try_reserve(1).map_err(no_memory)?;
            s.owners.push(owner);
            return Ok(s.mr);
        }
        regs.try_reserve(1).map_err(no_memory)?;
        let mut owners = Vec::new();
        owners.try_reserve_exact(1).map_err(no_memory)?;
        // SAFETY: the caller vouches for the range.
        let mr = unsafe { self.engine.register(addr, len) }.map_err(|e| {
            Error::new(
                Status::MCFX_E_FLAGCX,
                message(format_args!("FlagCX refused to register [{addr:#x}, +{len}): {e}")),
            )
        })?;
        owners.push(owner);
        regs.insert(addr, BaseRegistration { mr, len, owners });
        Ok(mr)
    }

    /// Whether some owner has `addr` registered (tests).
    #[cfg(test)]
    pub fn is_registered(&self, addr: usize) -> bool {
        self.regs.lock().contains_key(&addr)
    }

    /// Drops `owner`'s registration of `addr`; FlagCX forgets the base when
    /// no owner is left.
    pub fn deregister(&self, owner: u64, addr: usize) {
        let mut regs = self.regs.lock();
        let Some(s) = regs.get_mut(&addr) else { return };
        let Some(at) = s.owners.iter().position(|&o| o == owner) else { return };
        s.owners.swap_remove(at);
        if s.owners.is_empty() {
            self.engine.deregister(s.mr);
            regs.remove(&addr);
        }
    }
}
