//! A bounded MPSC ring of slots with per-slot stamps (after Vyukov's bounded
//! queue) that takes a batch with one reservation: the submission queue's
//! storage (`queue.rs` adds admission and waiting).
//!
//! Invariants:
//! - preallocated; a push never allocates;
//! - a producer owns positions `[first, first + count)` once its CAS moved
//!   `tail` past them, and publishes them (stamp `pos + 1`, Release) when done,
//!   the first position last: a consumer waiting there sees the batch whole;
//! - a producer that panics while filling still publishes its slots (the
//!   unfilled ones hold `None`, which `pop` skips), so the ring never stalls;
//! - one consumer: only it reads published values and frees slots (stamp
//!   `pos + lap`, Release). The model in `tests/loom_ring.rs` checks this.

use crossbeam_utils::CachePadded;

use crate::sync::{
    with_mut, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    Ordering::SeqCst, UnsafeCell,
};

/// Line-aligned: a slot of `Op` (56 bytes and the stamp) is exactly one
/// cache line, so neighbouring slots never share one (a large ring from
/// malloc starts 16 bytes into a page, so without this every slot would
/// straddle two lines).
#[repr(align(64))]
struct Slot<T> {
    /// `pos` while the slot is free for position `pos`; `pos + 1` once the
    /// value for `pos` is published.
    stamp: AtomicUsize,
    /// `None` whenever the slot is free (the consumer takes the value out).
    value: UnsafeCell<Option<T>>,
}

/// The ring. A position is `lap * (mask + 1) + index` (index < capacity), so
/// stamps of different laps never collide and no division is needed.
pub struct Ring<T> {
    slots: Box<[Slot<T>]>,
    lap: Lap,
    /// Next position to reserve (producers, CAS). Each writer side on its
    /// own line pair (`CachePadded` is 128 bytes on x86-64: adjacent-line
    /// prefetch).
    tail: CachePadded<AtomicUsize>,
    /// Next position to pop (the consumer alone writes it).
    head: CachePadded<AtomicUsize>,
}

// SAFETY: a slot's value is written only by the producer that reserved its
// position (tail CAS) before publishing it, and read only by the single
// consumer after it saw the publication (stamp Release/Acquire), so values
// are never accessed from two threads at once; T crosses threads (Send).
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring of `capacity` slots, or `None` when their memory cannot be had
    /// (the capacity comes from the caller: no abort for a size the system
    /// cannot give).
    pub fn try_new(capacity: usize) -> Option<Ring<T>> {
        assert!(capacity > 0, "queue capacity must be positive");
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity).ok()?;
        slots.extend(
            (0..capacity)
                .map(|i| Slot { stamp: AtomicUsize::new(i), value: UnsafeCell::new(None) }),
        );
        Some(Ring {
            slots: slots.into_boxed_slice(),
            lap: Lap { mask: (capacity + 1).next_power_of_two() - 1, capacity },
            tail: CachePadded::new(AtomicUsize::new(0)),
            head: CachePadded::new(AtomicUsize::new(0)),
        })
    }

    /// Reserves up to `n` free slots with one CAS, fills slot `j` with
    /// `make(j)` and publishes them together. Returns how many it took (0:
    /// the queue is full). (The transport counts its pushes:
    /// [`Ring::push_counted`].)
    #[cfg(any(test, mcfx_loom))]
    pub fn push_with(&self, n: usize, make: impl FnMut(usize) -> T) -> usize {
        self.push_counted(n, |_| {}, make)
    }

    /// [`Ring::push_with`], calling `reserved(count)` once the slots are
    /// reserved and before any of them is published (and before any
    /// `make`): a count taken there is exact (these `count` values will be
    /// popped) and precedes the consumer's first sight of them.
    #[inline]
    pub fn push_counted(
        &self,
        n: usize,
        reserved: impl FnOnce(usize),
        mut make: impl FnMut(usize) -> T,
    ) -> usize {
        if n == 0 {
            return 0;
        }
        // Locals: the atomics below would make the compiler reload fields.
        let (lap, slots) = (self.lap, &self.slots[..]);
        // Relaxed: only a hint where to look; the CAS below decides.
        let mut tail = self.tail.load(Relaxed);
        let (first, count) = loop {
            let (mut end, mut k) = (tail, 0);
            // Acquire: pairs with the consumer's Release when it freed the
            // slot, so our write below follows its read of the old value.
            while k < n && slots[lap.index(end)].stamp.load(Acquire) == end {
                k += 1;
                end = lap.next(end);
            }
            if k == 0 {
                // Relaxed: as above; an unchanged tail means the ring is full.
                let now = self.tail.load(Relaxed);
                if now == tail {
                    return 0;
                }
                tail = now;
                continue;
            }
            match self.tail.compare_exchange_weak(tail, end, SeqCst, Relaxed) {
                Ok(_) => break (tail, k),
                Err(now) => tail = now,
            }
        };
        // Publishes on drop, also if `reserved` or `make` panics (unfilled
        // slots carry None, which the consumer skips): the ring never stalls.
        let _publish = Publish { slots, lap, first, count };
        reserved(count);
        let mut pos = first;
        for j in 0..count {
            let value = make(j);
            // SAFETY: [first, first + count) was reserved by our CAS and is
            // not yet published: no other thread touches these values.
            with_mut(&slots[lap.index(pos)].value, |v| unsafe { *v = Some(value) });
            pos = lap.next(pos);
        }
        count
    }

    /// Consumer only.
    pub fn pop(&self) -> Option<T> {
        loop {
            // Relaxed: the consumer is the only writer of `head`.
            let head = self.head.load(Relaxed);
            let slot = &self.slots[self.lap.index(head)];
            // Acquire: pairs with the producer's publishing Release.
            if slot.stamp.load(Acquire) != head.wrapping_add(1) {
                return None;
            }
            // SAFETY: published for `head` (seen above) and only the single
            // consumer reads published values.
            let value = with_mut(&slot.value, |v| unsafe { (*v).take() });
            self.head.store(self.lap.next(head), Relaxed);
            // Release: the value was taken before producers may reuse it.
            slot.stamp.store(head.wrapping_add(self.lap.mask + 1), Release);
            if value.is_some() {
                return value;
            }
        }
    }

    /// Consumer only: no published slot at the head.
    pub fn is_empty(&self) -> bool {
        // Relaxed: consumer-owned; Acquire: as in `pop`.
        let head = self.head.load(Relaxed);
        self.slots[self.lap.index(head)].stamp.load(Acquire) != head.wrapping_add(1)
    }
}

/// Publishes reserved slots: every one but the first, then the first, so a
/// consumer waiting at the first sees them all at once.
struct Publish<'a, T> {
    slots: &'a [Slot<T>],
    lap: Lap,
    first: usize,
    count: usize,
}

impl<T> Drop for Publish<'_, T> {
    fn drop(&mut self) {
        let (lap, slots) = (self.lap, self.slots);
        if self.count > 1 {
            let mut pos = lap.next(self.first);
            for _ in 1..self.count {
                // Release: the value written before is visible with the stamp.
                slots[lap.index(pos)].stamp.store(pos.wrapping_add(1), Release);
                pos = lap.next(pos);
            }
        }
        // Release: as above, and after every other slot of the batch.
        slots[lap.index(self.first)].stamp.store(self.first.wrapping_add(1), Release);
    }
}

/// Position arithmetic: `mask + 1` (a power of two above the capacity) is
/// one lap.
#[derive(Clone, Copy)]
struct Lap {
    mask: usize,
    capacity: usize,
}

impl Lap {
    #[inline]
    fn index(self, pos: usize) -> usize {
        pos & self.mask
    }

    #[inline]
    fn next(self, pos: usize) -> usize {
        if (pos & self.mask) + 1 < self.capacity {
            pos.wrapping_add(1)
        } else {
            (pos & !self.mask).wrapping_add(self.mask + 1)
        }
    }
}

#[cfg(all(test, not(mcfx_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A queued op's slot is one whole cache line, wherever the ring lands.
    #[test]
    fn an_op_slot_is_one_aligned_line() {
        assert_eq!(std::mem::size_of::<Slot<crate::op::Op>>(), 64);
        assert_eq!(std::mem::align_of::<Slot<crate::op::Op>>(), 64);
        let ring: Ring<crate::op::Op> = Ring::try_new(3).unwrap();
        assert_eq!(ring.slots.as_ptr() as usize % 64, 0);
    }

    #[test]
    fn batches_pop_in_order_and_a_full_ring_takes_only_what_fits() {
        let ring: Ring<u64> = Ring::try_new(5).unwrap();
        let mut next = 0u64;
        let mut expect = 0u64;
        // Many laps, odd batch sizes against an odd capacity.
        for round in 0..1000 {
            let n = 1 + round % 7;
            let base = next;
            let took = ring.push_with(n, |j| base + j as u64);
            assert!(took <= n && took <= 5);
            next += took as u64;
            if round % 3 != 0 {
                while let Some(v) = ring.pop() {
                    assert_eq!(v, expect);
                    expect += 1;
                }
                assert!(ring.is_empty());
            }
        }
        while let Some(v) = ring.pop() {
            assert_eq!(v, expect);
            expect += 1;
        }
        assert_eq!(expect, next);
        assert_eq!(ring.push_with(9, |j| j as u64), 5, "an empty ring takes its capacity");
        assert_eq!(ring.push_with(1, |_| 0), 0, "a full ring takes nothing");
    }

    #[test]
    fn a_panicking_producer_leaves_no_hole() {
        let ring: Ring<u64> = Ring::try_new(8).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ring.push_with(4, |j| if j == 2 { panic!("make failed") } else { j as u64 })
        }));
        assert!(r.is_err());
        assert_eq!(ring.push_with(1, |_| 7), 1);
        let got: Vec<u64> = std::iter::from_fn(|| ring.pop()).collect();
        assert_eq!(got, vec![0, 1, 7]);
    }

    #[test]
    fn concurrent_batches_arrive_exactly_once_in_each_producers_order() {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 20_000;
        let ring: Arc<Ring<u64>> = Arc::new(Ring::try_new(64).unwrap());
        let threads: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    let mut n = 1usize;
                    let until = Instant::now() + Duration::from_secs(60);
                    while sent < PER && Instant::now() < until {
                        let want = n.min((PER - sent) as usize);
                        let base = sent;
                        sent += ring.push_with(want, |j| (p << 32) | (base + j as u64)) as u64;
                        n = n % 13 + 1;
                        if sent < PER {
                            std::thread::yield_now();
                        }
                    }
                    sent
                })
            })
            .collect();
        let mut next = [0u64; PRODUCERS as usize];
        let mut total = 0;
        let until = Instant::now() + Duration::from_secs(60);
        while total < PRODUCERS * PER && Instant::now() < until {
            match ring.pop() {
                Some(v) => {
                    let (p, seq) = ((v >> 32) as usize, v & 0xffff_ffff);
                    assert_eq!(seq, next[p], "producer {p}: lost, repeated or reordered");
                    next[p] += 1;
                    total += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for t in threads {
            assert_eq!(t.join().unwrap(), PER);
        }
        assert_eq!(total, PRODUCERS * PER);
        assert!(ring.pop().is_none());
    }
}
