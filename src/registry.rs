//! Local memory regions registered with FlagCX.
//!
//! Invariants:
//! - the table is an immutable sorted `Vec` behind an `ArcSwap`: submitters
//!   look ranges up without locks or allocation; (un)registration builds a
//!   new table under `write` and swaps it in (rare, off the hot path);
//! - regions never overlap;
//! - a region is removed only while no op holds it: submit increments
//!   `in_flight` and then checks `closing`; unregister sets `closing` and then
//!   checks `in_flight` (both SeqCst, so at least one side sees the other and
//!   an op is never accepted on memory that is being deregistered).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::error::{fail, Error, Result, Status};
use flagcx_sys::{Engine, MrId};

/// One registered region.
#[derive(Debug)]
pub struct Region {
    pub base: usize,
    pub len: usize,
    pub mr: MrId,
    in_flight: AtomicU64,
    closing: AtomicBool,
}

impl Region {
    fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.base && addr - self.base <= self.len && len <= self.len - (addr - self.base)
    }

    /// Ops accepted on this region and not yet completed.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(SeqCst)
    }

    /// Releases `n` ops taken with [`Registry::acquire`].
    pub fn release(&self, n: u64) {
        let before = self.in_flight.fetch_sub(n, SeqCst);
        debug_assert!(before >= n, "region in-flight count underflow");
    }
}

type Table = Vec<Arc<Region>>;

pub struct Registry {
    engine: Engine,
    table: ArcSwap<Table>,
    write: Mutex<()>,
}

impl Registry {
    pub fn new(engine: Engine) -> Registry {
        Registry { engine, table: ArcSwap::from_pointee(Vec::new()), write: Mutex::new(()) }
    }

    /// Registers `[addr, addr + len)`.
    ///
    /// # Safety
    /// The range must stay valid memory until it is unregistered, and may be
    /// read and written by transfers at any time until then.
    pub unsafe fn register(&self, addr: usize, len: usize) -> Result<()> {
        if addr == 0 || len == 0 {
            return fail(Status::MCFX_E_INVALID_ARGUMENT, "register: NULL address or zero length");
        }
        let Some(end) = addr.checked_add(len) else {
            return fail(Status::MCFX_E_OVERFLOW, format!("register: {addr:#x} + {len} overflows"));
        };
        let _w = self.write.lock();
        let table = self.table.load_full();
        if let Some(r) = table.iter().find(|r| addr < r.base + r.len && r.base < end) {
            return fail(
                Status::MCFX_E_ALREADY_REGISTERED,
                format!(
                    "register: [{addr:#x}, {end:#x}) overlaps registered [{:#x}, {:#x})",
                    r.base,
                    r.base + r.len
                ),
            );
        }
        // SAFETY: this function's own contract, passed on unchanged.
        let mr = unsafe { self.engine.register(addr, len) }.map_err(|e| {
            Error::new(
                Status::MCFX_E_FLAGCX,
                format!("FlagCX refused to register [{addr:#x}, +{len}): {e}"),
            )
        })?;
        let mut next: Table = table.iter().cloned().collect();
        let at = next.partition_point(|r| r.base < addr);
        next.insert(
            at,
            Arc::new(Region {
                base: addr,
                len,
                mr,
                in_flight: AtomicU64::new(0),
                closing: AtomicBool::new(false),
            }),
        );
        self.table.store(Arc::new(next));
        tracing::debug!(addr, len, mr = mr.0, "registered region");
        Ok(())
    }

    /// Unregisters the region starting at `addr`; fails with `MCFX_E_BUSY`
    /// while ops on it are in flight.
    pub fn unregister(&self, addr: usize) -> Result<()> {
        let _w = self.write.lock();
        let table = self.table.load_full();
        let Some(pos) = table.iter().position(|r| r.base == addr) else {
            return fail(
                Status::MCFX_E_NOT_FOUND,
                format!("unregister: no region starts at {addr:#x}"),
            );
        };
        let region = &table[pos];
        region.closing.store(true, SeqCst);
        let busy = region.in_flight.load(SeqCst);
        if busy > 0 {
            region.closing.store(false, SeqCst);
            return fail(
                Status::MCFX_E_BUSY,
                format!("unregister: {busy} ops on the region at {addr:#x} are in flight"),
            );
        }
        let mut next = (*table).clone();
        let region = next.remove(pos);
        self.table.store(Arc::new(next));
        self.engine.deregister(region.mr);
        tracing::debug!(addr, "unregistered region");
        Ok(())
    }

    /// Checks that one registered region holds `[addr, addr + len)`.
    ///
    /// Hot path: one lock-free table load and a binary search.
    pub fn check(&self, addr: usize, len: usize) -> Result<()> {
        let table = self.table.load();
        match find(&table, addr, len) {
            Some(r) if !r.closing.load(SeqCst) => Ok(()),
            _ => Err(not_registered(addr, len)),
        }
    }

    /// Finds the region holding `[addr, addr + len)` and takes `n` in-flight
    /// references on it for the ops that will use it.
    ///
    /// Hot path: one lock-free table load, a binary search, three atomics.
    pub fn acquire(&self, addr: usize, len: usize, n: u64) -> Result<Arc<Region>> {
        let table = self.table.load();
        let Some(region) = find(&table, addr, len) else {
            return Err(not_registered(addr, len));
        };
        region.in_flight.fetch_add(n, SeqCst);
        if region.closing.load(SeqCst) {
            region.release(n);
            return Err(not_registered(addr, len));
        }
        Ok(Arc::clone(region))
    }

    /// Deregisters everything (transport teardown).
    pub fn clear(&self) {
        let _w = self.write.lock();
        let table = self.table.swap(Arc::new(Vec::new()));
        for r in table.iter() {
            self.engine.deregister(r.mr);
        }
    }

    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn find(table: &Table, addr: usize, len: usize) -> Option<&Arc<Region>> {
    let at = table.partition_point(|r| r.base <= addr);
    at.checked_sub(1).map(|i| &table[i]).filter(|r| r.contains(addr, len))
}

#[cold]
fn not_registered(addr: usize, len: usize) -> Error {
    Error::new(
        Status::MCFX_E_NOT_REGISTERED,
        format!("local range [{addr:#x}, +{len}) is not inside one registered region"),
    )
}
