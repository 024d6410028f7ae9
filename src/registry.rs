//! Local memory regions registered with FlagCX.
//!
//! Invariants:
//! - the table is an immutable sorted `Vec` behind an `ArcSwap`: submitters
//!   look ranges up without locks or allocation; (un)registration builds a
//!   new table under `write` and swaps it in (rare, off the hot path);
//! - regions never overlap;
//! - each region owns a counter slot (`Counters`) for the transport's whole
//!   life; an op holds its region's slot index ([`RegionRef`]), not a
//!   reference count. Submitters bump `acquired` (and take it back for an op
//!   they could not queue), the progress thread alone bumps `released`; they
//!   sit on separate cache lines, so a steady stream of ops never bounces a
//!   line between the two sides. In flight = acquired - released (never
//!   reset, also across slot reuse);
//! - a region is removed only while no op holds it: submit bumps `acquired`
//!   and then checks `closing`; unregister sets `closing` and then reads
//!   `released` before `acquired` (all SeqCst), so either the submit sees
//!   `closing` and backs out, or unregister counts the op and refuses.

use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::error::{fail, Error, Result, Status};
use flagcx_sys::{Engine, MrId};

const CHUNK: usize = 256;
const CHUNKS: usize = 256;
/// Regions one transport can have registered at once.
pub(crate) const MAX_REGIONS: usize = CHUNK * CHUNKS;

/// 128-byte alignment: one writer per line pair (adjacent-line prefetch).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// In-flight accounting of one region slot.
#[derive(Default)]
struct Counters {
    acquired: Padded<AtomicU64>,
    released: Padded<AtomicU64>,
    closing: AtomicBool,
    /// The FlagCX id of the region using this slot, so a submitter holding a
    /// table from before the slot was reused cannot take a hold on the new
    /// owner's behalf.
    owner: AtomicU64,
}

impl Counters {
    fn in_flight(&self) -> u64 {
        // released first: an op completing in between only makes the
        // answer larger (a spurious BUSY), never smaller.
        let released = self.released.0.load(SeqCst);
        self.acquired.0.load(SeqCst).wrapping_sub(released)
    }
}

/// An op's hold on its region: the slot to release when it completes, and
/// the FlagCX id of the registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionRef {
    slot: u32,
    pub mr: MrId,
}

/// One registered region (an entry of the lookup table).
#[derive(Debug)]
struct Region {
    base: usize,
    len: usize,
    mr: MrId,
    slot: u32,
}

impl Region {
    fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.base && addr - self.base <= self.len && len <= self.len - (addr - self.base)
    }
}

type Table = Vec<Arc<Region>>;

pub struct Registry {
    engine: Engine,
    table: ArcSwap<Table>,
    /// Counter slots in chunks created on demand and kept until the
    /// transport goes (stable addresses, no unsafe).
    counters: Box<[OnceLock<Box<[Counters]>>]>,
    write: Mutex<Slots>,
}

/// Slot bookkeeping, under the writer lock.
#[derive(Default)]
struct Slots {
    free: Vec<u32>,
    next: u32,
}

impl Registry {
    pub fn new(engine: Engine) -> Registry {
        Registry {
            engine,
            table: ArcSwap::from_pointee(Vec::new()),
            counters: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            write: Mutex::new(Slots::default()),
        }
    }

    fn counters(&self, slot: u32) -> &Counters {
        let chunk = self.counters[slot as usize / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| Counters::default()).collect());
        &chunk[slot as usize % CHUNK]
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
        let mut slots = self.write.lock();
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
        let slot = match slots.free.pop() {
            Some(s) => s,
            None if (slots.next as usize) < MAX_REGIONS => {
                slots.next += 1;
                slots.next - 1
            }
            None => {
                return fail(
                    Status::MCFX_E_INTERNAL,
                    format!("register: more than {MAX_REGIONS} regions registered"),
                )
            }
        };
        // SAFETY: this function's own contract, passed on unchanged.
        let mr = match unsafe { self.engine.register(addr, len) } {
            Ok(mr) => mr,
            Err(e) => {
                slots.free.push(slot);
                return fail(
                    Status::MCFX_E_FLAGCX,
                    format!("FlagCX refused to register [{addr:#x}, +{len}): {e}"),
                );
            }
        };
        let counters = self.counters(slot);
        counters.owner.store(mr.0, SeqCst);
        counters.closing.store(false, SeqCst);
        let mut next: Table = table.iter().cloned().collect();
        let at = next.partition_point(|r| r.base < addr);
        next.insert(at, Arc::new(Region { base: addr, len, mr, slot }));
        self.table.store(Arc::new(next));
        tracing::debug!(addr, len, mr = mr.0, "registered region");
        Ok(())
    }

    /// Unregisters the region starting at `addr`; fails with `MCFX_E_BUSY`
    /// while ops on it are in flight.
    pub fn unregister(&self, addr: usize) -> Result<()> {
        let mut slots = self.write.lock();
        let table = self.table.load_full();
        let Some(pos) = table.iter().position(|r| r.base == addr) else {
            return fail(
                Status::MCFX_E_NOT_FOUND,
                format!("unregister: no region starts at {addr:#x}"),
            );
        };
        let region = &table[pos];
        let counters = self.counters(region.slot);
        counters.closing.store(true, SeqCst);
        let busy = counters.in_flight();
        if busy > 0 {
            counters.closing.store(false, SeqCst);
            return fail(
                Status::MCFX_E_BUSY,
                format!("unregister: {busy} ops on the region at {addr:#x} are in flight"),
            );
        }
        let mut next = (*table).clone();
        let region = next.remove(pos);
        self.table.store(Arc::new(next));
        self.engine.deregister(region.mr);
        slots.free.push(region.slot);
        tracing::debug!(addr, "unregistered region");
        Ok(())
    }

    /// Checks that one registered region holds `[addr, addr + len)`.
    ///
    /// Hot path: one lock-free table load and a binary search.
    pub fn check(&self, addr: usize, len: usize) -> Result<()> {
        let table = self.table.load();
        match find(&table, addr, len) {
            Some(r) if !self.counters(r.slot).closing.load(SeqCst) => Ok(()),
            _ => Err(not_registered(addr, len)),
        }
    }

    /// Finds the region holding `[addr, addr + len)` and takes one in-flight
    /// hold on it for an op; give it back with [`Registry::release`].
    ///
    /// Hot path: one lock-free table load, a binary search, an atomic add on
    /// a line only submitters write, one load.
    pub fn acquire(&self, addr: usize, len: usize) -> Result<RegionRef> {
        let table = self.table.load();
        let Some(region) = find(&table, addr, len) else {
            return Err(not_registered(addr, len));
        };
        let counters = self.counters(region.slot);
        counters.acquired.0.fetch_add(1, SeqCst);
        if counters.closing.load(SeqCst) || counters.owner.load(SeqCst) != region.mr.0 {
            self.unacquire(RegionRef { slot: region.slot, mr: region.mr });
            return Err(not_registered(addr, len));
        }
        Ok(RegionRef { slot: region.slot, mr: region.mr })
    }

    /// Gives back the hold of a completed op. Progress thread only: it is
    /// the one writer of `released`, so a plain store does (no locked
    /// instruction on the completion path). Release ordering suffices: a
    /// reader that sees an older value only overestimates what is in flight.
    pub fn release(&self, r: RegionRef) {
        let released = &self.counters(r.slot).released.0;
        released.store(released.load(Relaxed).wrapping_add(1), Release);
    }

    /// Takes back a hold whose op was never queued (caller threads).
    pub fn unacquire(&self, r: RegionRef) {
        self.counters(r.slot).acquired.0.fetch_sub(1, SeqCst);
    }

    /// Ops holding the region that starts at `addr` (None: not registered).
    pub fn in_flight(&self, addr: usize) -> Option<u64> {
        let table = self.table.load();
        let r = table.iter().find(|r| r.base == addr)?;
        Some(self.counters(r.slot).in_flight())
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
