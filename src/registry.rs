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
        contains(self.base, self.len, addr, len)
    }
}

/// Whether `[base, base + rlen)` holds `[addr, addr + len)` (overflow-free).
#[inline]
fn contains(base: usize, rlen: usize, addr: usize, len: usize) -> bool {
    addr >= base && addr - base <= rlen && len <= rlen - (addr - base)
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

    /// A snapshot of the table for one submit call: one lock-free load for
    /// the whole batch instead of one per op.
    pub fn view(&self) -> View {
        View { table: self.table.load(), last: None }
    }

    /// Finds the region holding `[addr, addr + len)` and takes one in-flight
    /// hold on it for an op; give it back with [`Registry::release`].
    pub fn acquire(&self, addr: usize, len: usize) -> Result<RegionRef> {
        let region = self.view().find(addr, len).ok_or_else(|| not_registered(addr, len))?;
        if !self.hold(region, 1) {
            return Err(not_registered(addr, len));
        }
        Ok(region)
    }

    /// Takes `n` in-flight holds on `r` (found in a [`View`]) for `n` ops
    /// that are about to be queued; false, with no hold taken, when the
    /// region is being unregistered or its slot now belongs to a newer
    /// registration.
    ///
    /// Hot path: one atomic add on a line only submitters write, two loads,
    /// whatever `n` is (a batch's ops on one region share them).
    pub fn hold(&self, r: RegionRef, n: u64) -> bool {
        let counters = self.counters(r.slot);
        counters.acquired.0.fetch_add(n, SeqCst);
        if counters.closing.load(SeqCst) || counters.owner.load(SeqCst) != r.mr.0 {
            self.unhold(r, n);
            return false;
        }
        true
    }

    /// Gives back the hold of a completed op. Progress thread only: it is
    /// the one writer of `released`, so a plain store does (no locked
    /// instruction on the completion path). Release ordering suffices: a
    /// reader that sees an older value only overestimates what is in flight.
    pub fn release(&self, r: RegionRef) {
        let released = &self.counters(r.slot).released.0;
        released.store(released.load(Relaxed).wrapping_add(1), Release);
    }

    /// Takes back `n` holds whose ops were never queued (caller threads).
    pub fn unhold(&self, r: RegionRef, n: u64) {
        self.counters(r.slot).acquired.0.fetch_sub(n, SeqCst);
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

/// One submit call's snapshot of the region table (see [`Registry::view`]).
pub struct View {
    table: arc_swap::Guard<Arc<Table>>,
    /// A copy of the region found last (a batch's ops usually share one):
    /// `(base, len, its ref)`, no pointer to chase for the next op.
    last: Option<(usize, usize, RegionRef)>,
}

impl View {
    /// The region holding `[addr, addr + len)`, if one does. The table is
    /// immutable, so the same range always gives the same answer in one view.
    ///
    /// Hot path: a range check against the region found last; a binary
    /// search only when the op is elsewhere.
    #[inline]
    pub fn find(&mut self, addr: usize, len: usize) -> Option<RegionRef> {
        if let Some((base, rlen, r)) = self.last {
            if contains(base, rlen, addr, len) {
                return Some(r);
            }
        }
        self.search(addr, len)
    }

    fn search(&mut self, addr: usize, len: usize) -> Option<RegionRef> {
        let at = self.table.partition_point(|r| r.base <= addr).checked_sub(1)?;
        let region = &self.table[at];
        if !region.contains(addr, len) {
            return None;
        }
        let r = RegionRef { slot: region.slot, mr: region.mr };
        self.last = Some((region.base, region.len, r));
        Some(r)
    }
}

#[cold]
pub(crate) fn not_registered(addr: usize, len: usize) -> Error {
    Error::new(
        Status::MCFX_E_NOT_REGISTERED,
        format!("local range [{addr:#x}, +{len}) is not inside one registered region"),
    )
}
