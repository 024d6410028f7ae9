//! Local memory regions registered with FlagCX.
//!
//! Invariants:
//! - the table is a persistent B+tree ([`tree`]) whose root is published
//!   with an `ArcSwap`: submitters look ranges up without locks or
//!   allocation; (un)registration builds a new root under `write`, copying
//!   one root-to-leaf path (O(log n) per call, whatever the table's size),
//!   and swaps it in;
//! - regions never overlap; at most `max_regions` are registered (one more
//!   is `MCFX_E_TOO_MANY_REGIONS`);
//! - every allocation of register and unregister is fallible
//!   ([`fallible`]): a failed one is `MCFX_E_NO_MEMORY` and changes nothing
//!   (a FlagCX registration already made is undone). Counter chunks are
//!   allocated on demand; the free-slot list has room for every slot handed
//!   out, so unregister's push never allocates;
//! - each region owns a counter slot ([`Holds`]) for the transport's whole
//!   life; an op holds its region's slot index ([`RegionSlot`]), not a
//!   reference count. Submitters bump `acquired` (and take it back for an op
//!   they could not queue), the thread running a pass alone bumps `released`; they
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
//!   process engine ([`crate::process_engine`]), which counts owners per base and
//!   never registers a base twice with FlagCX (another transport's base with
//!   another length is refused), so a region's FlagCX id stays valid until
//!   it is unregistered, whatever FlagCX does with a second registration.

mod tree;

use std::sync::OnceLock;

use arc_swap::ArcSwapAny;
use parking_lot::Mutex;

use crate::error::{fail, message, Error, Result, Status};
use crate::fallible::{self, NoMemory, TryArc};
use crate::holds::Holds;
use crate::process_engine::EngineRef;
use flagcx_sys::MrId;
use tree::{Node, NodeRef, Region};

/// Counter slots per chunk (a chunk is allocated when its first slot is).
const CHUNK: usize = 256;

/// A region as a submit found it: its counter slot and the registration it
/// was found in, which the submit's hold checks (a queued op keeps the slot
/// alone, [`RegionSlot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionRef {
    slot: u32,
    /// The registration it was found in (see the module invariants).
    generation: u64,
}

impl RegionRef {
    /// The region's counter slot: what a queued op keeps of it.
    #[inline]
    pub fn slot(self) -> RegionSlot {
        RegionSlot(self.slot)
    }
}

/// A queued op's hold on its region: the counter slot it releases when it
/// completes, where the FlagCX id of the registration is found while the
/// hold keeps the region registered (`Registry::mr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionSlot(u32);

/// Whether `[base, base + rlen)` holds `[addr, addr + len)` (overflow-free).
#[inline]
fn contains(base: usize, rlen: usize, addr: usize, len: usize) -> bool {
    addr >= base && addr - base <= rlen && len <= rlen - (addr - base)
}

pub(crate) struct Registry {
    engine: TryArc<EngineRef>,
    table: ArcSwapAny<NodeRef>,
    /// An empty table, allocated up front: the last unregister and `clear`
    /// publish it without allocating.
    empty: NodeRef,
    /// Counter slots in chunks of `CHUNK`, allocated (fallibly, under the
    /// writer lock) when their first slot is handed out and kept until the
    /// transport goes (stable addresses, no unsafe).
    counters: Vec<OnceLock<Vec<Holds>>>,
    max_regions: usize,
    write: Mutex<Slots>,
}

/// Slot bookkeeping, under the writer lock.
#[derive(Default)]
struct Slots {
    /// Slots of unregistered regions; its capacity is at least `next`.
    free: Vec<u32>,
    /// Slots handed out so far (`0..next`).
    next: u32,
    /// The last generation handed out.
    generation: u64,
    /// Regions in the table.
    count: usize,
}

#[cold]
fn no_memory(call: &str) -> Error {
    Error::new(
        Status::MCFX_E_NO_MEMORY,
        message(format_args!("{call}: out of memory for the region table")),
    )
}

impl Registry {
    /// An empty table for up to `max_regions` regions (at most
    /// `config::MAX_MAX_REGIONS`); `MCFX_E_NO_MEMORY` if its chunk directory
    /// cannot be allocated.
    pub fn new(engine: TryArc<EngineRef>, max_regions: usize) -> Result<Registry> {
        let chunks = max_regions.div_ceil(CHUNK);
        let mut counters = fallible::with_capacity(chunks).map_err(|_| no_memory("create"))?;
        counters.extend((0..chunks).map(|_| OnceLock::new()));
        let empty = TryArc::try_new(Node::empty()).map_err(|_| no_memory("create"))?;
        Ok(Registry {
            engine,
            table: ArcSwapAny::new(empty.clone()),
            empty,
            counters,
            max_regions,
            write: Mutex::new(Slots::default()),
        })
    }

    /// The counters of a slot that was handed out (its chunk exists: it was
    /// set before the slot was published, and the table load that found the
    /// slot comes after that).
    #[inline]
    fn counters(&self, slot: u32) -> &Holds {
        let chunk = self.counters[slot as usize / CHUNK].get().expect("a handed-out slot's chunk");
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
            return fail(
                Status::MCFX_E_OVERFLOW,
                message(format_args!("register: {addr:#x} + {len} overflows")),
            );
        };
        let mut slots = self.write.lock();
        let table = self.table.load_full();
        // The only region that can overlap is the last one starting before
        // `end` (the regions are disjoint and sorted).
        if let Some(r) = table.floor(end - 1).filter(|r| r.end() > addr) {
            return fail(
                Status::MCFX_E_ALREADY_REGISTERED,
                message(format_args!(
                    "register: [{addr:#x}, {end:#x}) overlaps registered [{:#x}, {:#x})",
                    r.base,
                    r.end()
                )),
            );
        }
        if slots.count >= self.max_regions {
            return fail(
                Status::MCFX_E_TOO_MANY_REGIONS,
                message(format_args!(
                    "register: {} regions are registered, the transport's max_regions; \
                     unregister one or create the transport with a larger max_regions",
                    slots.count
                )),
            );
        }
        // SAFETY: this function's own contract, passed on unchanged.
        let mr = unsafe { self.engine.register(self.engine.owner, addr, len) }?;
        if self.install(&mut slots, &table, addr, len, mr).is_err() {
            self.engine.deregister(self.engine.owner, addr);
            return Err(no_memory("register"));
        }
        tracing::debug!(addr, len, mr = mr.0, "registered region");
        Ok(())
    }

    /// Puts a registered region into a slot and a new table (under the
    /// writer lock; the caller checked overlap and the limit). On
    /// `NoMemory` nothing changed (a counter chunk may stay allocated).
    fn install(
        &self,
        slots: &mut Slots,
        table: &Node,
        addr: usize,
        len: usize,
        mr: MrId,
    ) -> std::result::Result<(), NoMemory> {
        let reuse = slots.free.last().copied();
        let slot = reuse.unwrap_or(slots.next);
        let chunk = &self.counters[slot as usize / CHUNK];
        if chunk.get().is_none() {
            let mut holds = fallible::with_capacity(CHUNK)?;
            holds.extend((0..CHUNK).map(|_| Holds::new()));
            // Under the writer lock: nobody else sets it.
            let _ = chunk.set(holds);
        }
        if reuse.is_none() {
            // Room for every slot in the free list (each is there at most
            // once), so unregister's push never allocates.
            let more = slots.next as usize + 1 - slots.free.len();
            fallible::reserve(&mut slots.free, more)?;
        }
        let generation = slots.generation + 1;
        let next = tree::insert(table, Region { base: addr, len, slot, generation })?;
        // Nothing below fails.
        match reuse {
            Some(_) => {
                slots.free.pop();
            }
            None => slots.next += 1,
        }
        slots.generation = generation;
        slots.count += 1;
        self.counters(slot).open(generation, mr.0);
        self.table.store(next);
        Ok(())
    }

    /// Unregisters the region starting at `addr`; fails with `MCFX_E_BUSY`
    /// while ops on it are in flight.
    pub fn unregister(&self, addr: usize) -> Result<()> {
        let mut slots = self.write.lock();
        let region = self.uninstall(&mut slots, addr)?;
        self.engine.deregister(self.engine.owner, region.base);
        tracing::debug!(addr, "unregistered region");
        Ok(())
    }

    /// Takes the region starting at `addr` out of the table and frees its
    /// slot (under the writer lock); FlagCX still has it.
    fn uninstall(&self, slots: &mut Slots, addr: usize) -> Result<Region> {
        let table = self.table.load_full();
        let Some(&region) = table.get(addr) else {
            return fail(
                Status::MCFX_E_NOT_FOUND,
                message(format_args!("unregister: no region starts at {addr:#x}")),
            );
        };
        // Built first: a failed allocation must leave the slot open.
        let next = match tree::remove(&table, addr) {
            Ok(next) => next.unwrap_or_else(|| self.empty.clone()),
            Err(NoMemory) => return Err(no_memory("unregister")),
        };
        if let Err(busy) = self.counters(region.slot).try_close() {
            return fail(
                Status::MCFX_E_BUSY,
                message(format_args!(
                    "unregister: {busy} ops on the region at {addr:#x} are in flight"
                )),
            );
        }
        self.table.store(next);
        debug_assert!(slots.free.len() < slots.free.capacity());
        slots.free.push(region.slot);
        slots.count -= 1;
        Ok(region)
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
    #[inline]
    pub fn release(&self, r: RegionSlot) {
        self.counters(r.0).release();
    }

    /// The FlagCX id of the registration an op holds (`r` from a queued
    /// op: its hold keeps the registration, so the id is the one the op
    /// was checked against).
    #[inline]
    pub fn mr(&self, r: RegionSlot) -> MrId {
        MrId(self.counters(r.0).mr())
    }

    /// Takes back `n` holds whose ops were never queued (caller threads).
    pub fn unhold(&self, r: RegionRef, n: u64) {
        self.counters(r.slot).unhold(n);
    }

    /// Deregisters everything (transport teardown).
    pub fn clear(&self) {
        let _w = self.write.lock();
        let table = self.table.swap(self.empty.clone());
        table.for_each(&mut |r| self.engine.deregister(self.engine.owner, r.base));
    }
}

/// One submit call's snapshot of the region table (see [`Registry::view`]).
pub(crate) struct View {
    table: arc_swap::Guard<NodeRef>,
    /// A copy of the region found last (a batch's ops usually share one):
    /// `(base, len, its ref)`, no pointer to chase for the next op.
    last: Option<(usize, usize, RegionRef)>,
}

impl View {
    /// The region holding `[addr, addr + len)`, if one does. The table is
    /// immutable, so the same range always gives the same answer in one view.
    ///
    /// Hot path: a range check against the region found last; a search of
    /// the tree (a binary search per level) only when the op is elsewhere.
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
        let region = self.table.floor(addr).filter(|r| contains(r.base, r.len, addr, len))?;
        let r = RegionRef { slot: region.slot, generation: region.generation };
        self.last = Some((region.base, region.len, r));
        Some(r)
    }
}

#[cold]
pub(crate) fn not_registered(addr: usize, len: usize) -> Error {
    Error::new(
        Status::MCFX_E_NOT_REGISTERED,
        message(format_args!(
            "local range [{addr:#x}, +{len}) is not inside one registered region"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_regions: usize) -> Registry {
        Registry::new(TryArc::try_new(EngineRef::acquire().unwrap()).unwrap(), max_regions).unwrap()
    }

    /// FlagCX may hand out an id again once it was deregistered; the table's
    /// ownership check must not rely on it not doing so.
    #[test]
    fn a_stale_table_cannot_take_a_hold_on_a_reused_slot_whatever_flagcx_ids_are() {
        let reg = registry(16);
        let (a, b) = (0x10_0000usize, 0x20_0000usize);
        let install = |addr| {
            let mut slots = reg.write.lock();
            let table = reg.table.load_full();
            // The same FlagCX id both times, as a provider reusing ids gives.
            reg.install(&mut slots, &table, addr, 4096, MrId(7)).unwrap();
        };
        install(a);
        let stale = reg.table.load_full();
        // A submit that loaded its view before the slot was reused.
        let acquire_in = |table: &NodeRef, addr, len| -> Result<RegionRef> {
            let mut view = View { table: arc_swap::Guard::from_inner(table.clone()), last: None };
            let r = view.find(addr, len).ok_or_else(|| not_registered(addr, len))?;
            if !reg.hold(r, 1) {
                return Err(not_registered(addr, len));
            }
            Ok(r)
        };
        // The live region (its op completes before the unregister).
        reg.release(acquire_in(&stale, a, 64).unwrap().slot());
        // Unregister a (no FlagCX call: the region was never in FlagCX).
        reg.uninstall(&mut reg.write.lock(), a).unwrap();
        install(b);
        assert_eq!(reg.table.load().get(b).unwrap().slot, stale.get(a).unwrap().slot, "reused");
        assert_eq!(
            acquire_in(&stale, a, 64).unwrap_err().status,
            Status::MCFX_E_NOT_REGISTERED,
            "a hold through the stale table would count against b's registration"
        );
        assert!(acquire_in(&reg.table.load_full(), b, 64).is_ok());
    }

    #[test]
    fn registering_past_max_regions_is_too_many_regions_and_changes_nothing() {
        let reg = registry(3);
        let mem = vec![0u8; 4096];
        let at = |i: usize| mem.as_ptr() as usize + i * 64;
        for i in 0..3 {
            // SAFETY: `mem` outlives the registry's registrations (cleared below).
            unsafe { reg.register(at(i), 64) }.unwrap();
        }
        // SAFETY: as above.
        let e = unsafe { reg.register(at(3), 64) }.unwrap_err();
        assert_eq!(e.status, Status::MCFX_E_TOO_MANY_REGIONS);
        assert!(e.message.contains("max_regions"), "{}", e.message);
        assert!(!reg.engine.is_registered(at(3)), "FlagCX never saw it");
        reg.unregister(at(1)).unwrap();
        // SAFETY: as above.
        unsafe { reg.register(at(3), 64) }.unwrap();
        reg.clear();
    }

    /// Every fallible allocation of register and unregister, made to fail
    /// in turn: each failure is NO_MEMORY with the table, the slots and
    /// FlagCX as they were, until the call gets through.
    #[test]
    fn a_failed_allocation_is_no_memory_and_changes_nothing() {
        let reg = registry(1 << 12);
        let mem = vec![0u8; 1100 * 64];
        let at = |i: usize| mem.as_ptr() as usize + i * 64;
        let snapshot = |reg: &Registry| {
            let mut regions = Vec::new();
            reg.table.load().for_each(&mut |r| regions.push(*r));
            let s = reg.write.lock();
            (regions, s.free.clone(), s.next, s.generation, s.count)
        };
        // A tree of two levels, a few slots to reuse, and the next new slot
        // 12 below a chunk boundary (512).
        for i in 0..500 {
            // SAFETY: `mem` outlives the registrations (cleared below).
            unsafe { reg.register(at(2 * i), 64) }.unwrap();
        }
        for i in 0..10 {
            reg.unregister(at(4 * i)).unwrap();
        }
        let mut failures = 0;
        for i in 0..40 {
            let addr = at(2 * i + 1);
            for n in 0.. {
                let before = snapshot(&reg);
                fallible::fail_after(Some(n));
                // SAFETY: as above.
                let r = unsafe { reg.register(addr, 64) };
                fallible::fail_after(None);
                let Err(e) = r else { break };
                assert_eq!(e.status, Status::MCFX_E_NO_MEMORY, "{e}");
                assert!(before == snapshot(&reg), "register {i}, failure {n} changed the table");
                assert!(!reg.engine.is_registered(addr), "register {i}, failure {n} kept FlagCX's");
                failures += 1;
            }
        }
        assert!(failures >= 40 * 2, "{failures} injected register failures");
        failures = 0;
        for i in 0..40 {
            let addr = at(2 * i + 1);
            for n in 0.. {
                let before = snapshot(&reg);
                fallible::fail_after(Some(n));
                let r = reg.unregister(addr);
                fallible::fail_after(None);
                let Err(e) = r else { break };
                assert_eq!(e.status, Status::MCFX_E_NO_MEMORY, "{e}");
                assert!(before == snapshot(&reg), "unregister {i}, failure {n} changed the table");
                assert!(reg.engine.is_registered(addr));
                failures += 1;
            }
            assert!(!reg.engine.is_registered(addr));
        }
        assert!(failures >= 40 * 2, "{failures} injected unregister failures");
        reg.clear();
    }
}
