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
//! - a base is registered with FlagCX for the longest length any of its
//!   owners registered (FlagCX keeps one registration per base); it is
//!   registered again when that longest length changes, and deregistered
//!   when its last owner unregisters.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use flagcx_sys::{Engine, MrId};
use parking_lot::Mutex;

use crate::error::{Error, Result, Status};

/// The process's shared FlagCX engine and its registration counts.
pub struct ProcessEngine {
    pub engine: Engine,
    regs: Mutex<HashMap<usize, Shared>>,
    serving: Mutex<bool>,
}

/// One base address registered by one or more transports.
struct Shared {
    mr: MrId,
    /// (owner, length) per transport that registered this base.
    owners: Vec<(u64, usize)>,
}

impl Shared {
    fn longest(&self) -> usize {
        self.owners.iter().map(|&(_, len)| len).max().unwrap_or(0)
    }
}

/// The engine and how many [`EngineRef`]s hold it.
static CURRENT: Mutex<Option<(Arc<ProcessEngine>, usize)>> = Mutex::new(None);

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
        let engine = match current.as_mut() {
            Some((engine, users)) => {
                *users += 1;
                Arc::clone(engine)
            }
            None => {
                let engine = Arc::new(ProcessEngine {
                    engine: Engine::create()?,
                    regs: Mutex::new(HashMap::new()),
                    serving: Mutex::new(false),
                });
                *current = Some((Arc::clone(&engine), 1));
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
            Some((_, users)) => {
                *users -= 1;
                *users == 0
            }
            None => false,
        };
        drop(ours);
        if last {
            // Destroyed under the lock: see the module invariants.
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

    /// Registers `[addr, addr + len)` for `owner`: `MCFX_E_FLAGCX` when
    /// FlagCX refuses, `MCFX_E_NO_MEMORY` (nothing changed) when the
    /// bookkeeping cannot be allocated.
    ///
    /// # Safety
    /// As [`Engine::register`]: the range stays valid memory until `owner`
    /// deregisters it.
    pub unsafe fn register(&self, owner: u64, addr: usize, len: usize) -> Result<MrId> {
        let refused = |e| {
            Error::new(
                Status::MCFX_E_FLAGCX,
                format!("FlagCX refused to register [{addr:#x}, +{len}): {e}"),
            )
        };
        let no_memory = |_| Error::new(Status::MCFX_E_NO_MEMORY, "register: out of memory");
        let mut regs = self.regs.lock();
        if let Some(s) = regs.get_mut(&addr) {
            s.owners.try_reserve(1).map_err(no_memory)?;
            if len > s.longest() {
                // SAFETY: the caller vouches for the longer range.
                s.mr = unsafe { self.engine.register(addr, len) }.map_err(refused)?;
            }
            s.owners.push((owner, len));
            return Ok(s.mr);
        }
        regs.try_reserve(1).map_err(no_memory)?;
        let mut owners = Vec::new();
        owners.try_reserve_exact(1).map_err(no_memory)?;
        // SAFETY: as above.
        let mr = unsafe { self.engine.register(addr, len) }.map_err(refused)?;
        owners.push((owner, len));
        regs.insert(addr, Shared { mr, owners });
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
        let Some(at) = s.owners.iter().position(|&(o, _)| o == owner) else { return };
        let before = s.longest();
        s.owners.swap_remove(at);
        if s.owners.is_empty() {
            self.engine.deregister(s.mr);
            regs.remove(&addr);
            return;
        }
        let after = s.longest();
        if after < before {
            // Shrink to what the remaining owners vouch for.
            // SAFETY: a remaining owner registered [addr, addr + after).
            match unsafe { self.engine.register(addr, after) } {
                Ok(mr) => s.mr = mr,
                Err(e) => {
                    tracing::warn!(addr, error = %e, "FlagCX refused to re-register a shrunk region")
                }
            }
        }
    }
}
