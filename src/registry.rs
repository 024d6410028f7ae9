//! Local memory regions registered with FlagCX.
//!
//! Invariants:
//! - the table is an immutable sorted `Vec` behind an `ArcSwap`: submitters
//!   look ranges up without locks or allocation; (un)registration builds a
//!   new table under `write` and swaps it in (rare, off the hot path);
//! - regions never overlap;
//! - each region owns a counter slot ([`Holds`]) for the transport's whole
//!   life; an op holds its region's slot index ([`RegionRef`]), not a
//!   reference count. Submitters bump `acquired` (and take it back for an op
//!   they could not queue), the progress thread alone bumps `released`; they
//!   sit on separate cache lines, so a steady stream of ops never bounces a
//!   line between the two sides. In flight = acquired - released (never
//!   reset, also across slot reuse);
//! - a region is removed only while no op holds it: submit bumps `acquired`
//!   and then checks `closing`; unregister sets `closing` and then reads
//!   `released` before `acquired` (all SeqCst), so either the submit sees
//!   `closing` and backs out, or unregister counts the op and refuses (the
//!   protocol is [`Holds`], model-checked in `tests/loom_holds.rs`);
//! - a slot's `generation` names the registration using it; generations come
//!   from a counter of this table, never from FlagCX (whose ids may be
//!   reused), so a submitter holding a table from before the slot was reused
//!   cannot take a hold on the new owner's behalf;
//! - FlagCX registration is process-wide: the table registers through the
//!   process engine ([`crate::engine`]), which counts owners per base.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::engine::EngineRef;
use crate::error::{fail, Error, Result, Status};
use crate::holds::Holds;
use flagcx_sys::MrId;

const CHUNK: usize = 256;
const CHUNKS: usize = 256;
/// Regions one transport can have registered at once.
pub(crate) const MAX_REGIONS: usize = CHUNK * CHUNKS;

/// An op's hold on its region: the slot to release when it completes, and
/// the FlagCX id of the registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionRef {
    slot: u32,
    pub mr: MrId,
    /// The registration it was found in (see the module invariants).
    generation: u64,
}

/// One registered region (an entry of the lookup table).
#[derive(Debug)]
struct Region {
    base: usize,
    len: usize,
    mr: MrId,
    slot: u32,
    generation: u64,
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

pub(crate) struct Registry {
    engine: Arc<EngineRef>,
    table: ArcSwap<Table>,
    /// Counter slots in chunks created on demand and kept until the
    /// transport goes (stable addresses, no unsafe).
    counters: Box<[OnceLock<Box<[Holds]>>]>,
    write: Mutex<Slots>,
}

/// Slot bookkeeping, under the writer lock.
#[derive(Default)]
struct Slots {
    free: Vec<u32>,
    next: u32,
    /// The last generation handed out.
    generation: u64,
}

impl Registry {
    pub fn new(engine: Arc<EngineRef>) -> Registry {
        Registry {
            engine,
            table: ArcSwap::from_pointee(Vec::new()),
            counters: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            write: Mutex::new(Slots::default()),
        }
    }

    fn counters(&self, slot: u32) -> &Holds {
        let chunk = self.counters[slot as usize / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| Holds::new()).collect());
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
        if slots.free.is_empty() && slots.next as usize >= MAX_REGIONS {
            return fail(
                Status::MCFX_E_INTERNAL,
                format!("register: more than {MAX_REGIONS} regions registered"),
            );
        }
        // SAFETY: this function's own contract, passed on unchanged.
        let mr = match unsafe { self.engine.register(self.engine.owner, addr, len) } {
            Ok(mr) => mr,
            Err(e) => {
                return fail(
                    Status::MCFX_E_FLAGCX,
                    format!("FlagCX refused to register [{addr:#x}, +{len}): {e}"),
                );
            }
        };
        self.install(&mut slots, &table, addr, len, mr);
        tracing::debug!(addr, len, mr = mr.0, "registered region");
        Ok(())
    }

    /// Puts a registered region into a free slot and a new table (under the
    /// writer lock; the caller checked there is a slot).
    fn install(&self, slots: &mut Slots, table: &Table, addr: usize, len: usize, mr: MrId) {
        let slot = slots.free.pop().unwrap_or_else(|| {
            slots.next += 1;
            slots.next - 1
        });
        slots.generation += 1;
        let generation = slots.generation;
        self.counters(slot).open(generation);
        let mut next: Table = table.to_vec();
        let at = next.partition_point(|r| r.base < addr);
        next.insert(at, Arc::new(Region { base: addr, len, mr, slot, generation }));
        self.table.store(Arc::new(next));
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
        if let Err(busy) = self.counters(region.slot).try_close() {
            return fail(
                Status::MCFX_E_BUSY,
                format!("unregister: {busy} ops on the region at {addr:#x} are in flight"),
            );
        }
        let mut next = (*table).clone();
        let region = next.remove(pos);
        self.table.store(Arc::new(next));
        self.engine.deregister(self.engine.owner, region.base);
        slots.free.push(region.slot);
        tracing::debug!(addr, "unregistered region");
        Ok(())
    }

    /// A snapshot of the table for one submit call: one lock-free load for
    /// the whole batch instead of one per op.
    pub fn view(&self) -> View {
        View { table: self.table.load(), last: None }
    }

    /// Takes `n` in-flight holds on `r` (found in a [`View`]) for `n` ops
    /// that are about to be queued; false, with no hold taken, when the
    /// region is being unregistered or its slot now belongs to a newer
    /// registration.
    ///
    /// Hot path: one atomic add on a line only submitters write, two loads,
    /// whatever `n` is (a batch's ops on one region share them).
    pub fn hold(&self, r: RegionRef, n: u64) -> bool {
        self.counters(r.slot).hold(n, r.generation)
    }

    /// Gives back the hold of a completed op (progress thread only; see
    /// [`Holds::release`]).
    pub fn release(&self, r: RegionRef) {
        self.counters(r.slot).release();
    }

    /// Takes back `n` holds whose ops were never queued (caller threads).
    pub fn unhold(&self, r: RegionRef, n: u64) {
        self.counters(r.slot).unhold(n);
    }

    /// Deregisters everything (transport teardown).
    pub fn clear(&self) {
        let _w = self.write.lock();
        let table = self.table.swap(Arc::new(Vec::new()));
        for r in table.iter() {
            self.engine.deregister(self.engine.owner, r.base);
        }
    }
}

/// One submit call's snapshot of the region table (see [`Registry::view`]).
pub(crate) struct View {
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
        let region = find(&self.table, addr, len)?;
        let r = RegionRef { slot: region.slot, mr: region.mr, generation: region.generation };
        self.last = Some((region.base, region.len, r));
        Some(r)
    }
}

fn find(table: &Table, addr: usize, len: usize) -> Option<&Arc<Region>> {
    let at = table.partition_point(|r| r.base <= addr).checked_sub(1)?;
    Some(&table[at]).filter(|r| r.contains(addr, len))
}

#[cold]
pub(crate) fn not_registered(addr: usize, len: usize) -> Error {
    Error::new(
        Status::MCFX_E_NOT_REGISTERED,
        format!("local range [{addr:#x}, +{len}) is not inside one registered region"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FlagCX may hand out an id again once it was deregistered; the table's
    /// ownership check must not rely on it not doing so.
    #[test]
    fn a_stale_table_cannot_take_a_hold_on_a_reused_slot_whatever_flagcx_ids_are() {
        let reg = Registry::new(Arc::new(EngineRef::acquire().unwrap()));
        let (a, b) = (0x10_0000usize, 0x20_0000usize);
        let install = |addr| {
            let mut slots = reg.write.lock();
            let table = reg.table.load_full();
            // The same FlagCX id both times, as a provider reusing ids gives.
            reg.install(&mut slots, &table, addr, 4096, MrId(7));
        };
        install(a);
        let stale = reg.table.load_full();
        // A submit that loaded its view before the slot was reused.
        let acquire_in = |table: &Arc<Table>, addr, len| -> Result<RegionRef> {
            let mut view =
                View { table: arc_swap::Guard::from_inner(Arc::clone(table)), last: None };
            let r = view.find(addr, len).ok_or_else(|| not_registered(addr, len))?;
            if !reg.hold(r, 1) {
                return Err(not_registered(addr, len));
            }
            Ok(r)
        };
        assert!(acquire_in(&stale, a, 64).is_ok(), "the live region");
        reg.release(acquire_in(&stale, a, 64).unwrap());
        {
            // Unregister a (no FlagCX call: the region was never in FlagCX).
            let mut slots = reg.write.lock();
            let mut next = (*reg.table.load_full()).clone();
            let region = next.remove(0);
            reg.table.store(Arc::new(next));
            slots.free.push(region.slot);
        }
        install(b);
        assert_eq!(reg.table.load()[0].slot, stale[0].slot, "the slot was reused");
        assert_eq!(
            acquire_in(&stale, a, 64).unwrap_err().status,
            Status::MCFX_E_NOT_REGISTERED,
            "a hold through the stale table would count against b's registration"
        );
        assert!(acquire_in(&reg.table.load_full(), b, 64).is_ok());
    }
}
