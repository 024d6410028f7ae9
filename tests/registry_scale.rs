//! The region table at scale, through the C ABI: the limit is the config's
//! `max_regions` (one more is `MCFX_E_TOO_MANY_REGIONS`), and overlap checks
//! and lookups stay exact among many regions (`registry_cost.rs` times
//! 100 000 registrations).

mod common;

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::*;
use std::ffi::c_void;

fn register(n: &Node, addr: usize, len: usize) -> mcfx_status {
    // SAFETY: live handle; every test's buffer outlives its node.
    unsafe { mcfx_register(n.t, addr as *mut c_void, len) }
}

fn unregister(n: &Node, addr: usize) -> mcfx_status {
    // SAFETY: live handle.
    unsafe { mcfx_unregister(n.t, addr as *mut c_void) }
}

/// A node with room for `max_regions` that serves no peers.
fn node(max_regions: u32) -> Node {
    Node::with(|c| {
        c.max_regions = max_regions;
        c.flags |= MCFX_FLAG_NO_SERVE;
    })
}

#[test]
fn registration_65537_with_the_default_config_is_too_many_regions() {
    let t = node(0); // zero: the default, 65536
    let mem = AlignedBuf::new(65537 * 16);
    for i in 0..65536 {
        assert_eq!(register(&t, mem.addr() + i * 16, 16), OK, "registration {i}: {}", last_error());
    }
    let st = register(&t, mem.addr() + 65536 * 16, 16);
    assert_eq!(st, mcfx_status::MCFX_E_TOO_MANY_REGIONS);
    let msg = last_error();
    assert!(msg.contains("mcfx_register") && msg.contains("max_regions"), "{msg}");
    // One out, one in.
    assert_eq!(unregister(&t, mem.addr()), OK);
    assert_eq!(register(&t, mem.addr() + 65536 * 16, 16), OK, "{}", last_error());
    assert_eq!(register(&t, mem.addr(), 16), mcfx_status::MCFX_E_TOO_MANY_REGIONS);
}

#[test]
fn register_past_max_regions_is_too_many_regions_and_registers_nothing() {
    let t = node(100);
    let mem = AlignedBuf::new(101 * 64);
    for i in 0..100 {
        assert_eq!(register(&t, mem.addr() + i * 64, 64), OK);
    }
    let extra = mem.addr() + 100 * 64;
    assert_eq!(register(&t, extra, 64), mcfx_status::MCFX_E_TOO_MANY_REGIONS);
    // Nothing of it was registered: not for submits, not for unregister.
    let (st, accepted) = t.submit(&[write(extra, 64, 1, 0x1000, 1)]);
    assert_eq!((st, accepted), (mcfx_status::MCFX_E_NOT_REGISTERED, 0));
    assert_eq!(unregister(&t, extra), mcfx_status::MCFX_E_NOT_FOUND);
}

/// 70 000 regions (past the old fixed limit of 65 536), 64 bytes each with
/// 64-byte gaps: every overlap is refused, every neighbour accepted.
#[test]
fn overlaps_are_refused_and_neighbours_accepted_among_seventy_thousand_regions() {
    const N: usize = 70_000;
    let t = node(N as u32 + 2);
    let mem = AlignedBuf::new(2 * N * 64 + 128);
    let at = |i: usize| mem.addr() + 64 + i * 128;
    for i in 0..N {
        assert_eq!(register(&t, at(i), 64), OK, "registration {i}: {}", last_error());
    }
    let taken = mcfx_status::MCFX_E_ALREADY_REGISTERED;
    for i in (0..N).step_by(997).chain([N - 1]) {
        let (base, end) = (at(i), at(i) + 64);
        for (addr, len) in [
            (base, 64),
            (base, 1),
            (base + 63, 1),
            (base - 1, 2),
            (end - 1, 2),
            (base - 64, 192),
            (base + 8, 8),
        ] {
            assert_eq!(register(&t, addr, len), taken, "[{addr:#x}, +{len}) over region {i}");
        }
        assert!(last_error().contains("overlaps"), "{}", last_error());
    }
    // The gaps around the first and the last region: adjacent on both sides.
    assert_eq!(register(&t, at(0) - 64, 64), OK, "{}", last_error());
    assert_eq!(register(&t, at(N - 1) + 64, 64), OK, "{}", last_error());
    assert_eq!(register(&t, at(N - 1) + 128, 1), mcfx_status::MCFX_E_TOO_MANY_REGIONS);
}

/// xorshift64*, fixed seed: the same run every time.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % n
    }
}

/// Random registrations (of random lengths, so some overlap),
/// unregistrations and lookups against a simple model (a list of ranges):
/// every status is the model's, the limit included.
#[test]
fn random_registrations_and_lookups_match_a_simple_model() {
    const MAX: usize = 2000;
    const SPAN: usize = 64 * 1024;
    let t = node(MAX as u32);
    let mem = AlignedBuf::new(SPAN * 8);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut model: Vec<(usize, usize)> = Vec::new(); // (offset, len), in any order
    let overlaps =
        |m: &[(usize, usize)], a: usize, l: usize| m.iter().any(|&(b, n)| a < b + n && b < a + l);
    let (mut user_data, mut queued) = (0u64, 0usize);
    for round in 0..40 {
        // Grow to the limit in even rounds, shrink in odd ones.
        let grow = round % 2 == 0;
        for _ in 0..2000 {
            if rng.below(10) < if grow { 8 } else { 3 } {
                let (off, len) = (rng.below(SPAN * 8 - 64), 1 + rng.below(64));
                let want = if overlaps(&model, off, len) {
                    mcfx_status::MCFX_E_ALREADY_REGISTERED
                } else if model.len() == MAX {
                    mcfx_status::MCFX_E_TOO_MANY_REGIONS
                } else {
                    OK
                };
                assert_eq!(register(&t, mem.addr() + off, len), want, "[+{off:#x}, +{len})");
                if want == OK {
                    model.push((off, len));
                }
            } else {
                // A registered base, or any address (mostly not one).
                let off = if !model.is_empty() && rng.below(4) > 0 {
                    model[rng.below(model.len())].0
                } else {
                    rng.below(SPAN * 8)
                };
                let at = model.iter().position(|&(b, _)| b == off);
                let want = if at.is_some() { OK } else { mcfx_status::MCFX_E_NOT_FOUND };
                assert_eq!(unregister(&t, mem.addr() + off), want, "unregister +{off:#x}");
                if let Some(i) = at {
                    model.swap_remove(i);
                }
            }
        }
        // Lookups: an op is accepted exactly when its local range lies
        // inside one region (it then fails to resolve peer 9).
        for _ in 0..200 {
            let (off, len) = match rng.below(3) {
                0 if !model.is_empty() => {
                    let (b, n) = model[rng.below(model.len())];
                    let from = rng.below(n);
                    (b + from, 1 + rng.below(n - from + 1)) // sometimes one byte too long
                }
                _ => (rng.below(SPAN * 8 - 64), 1 + rng.below(64)),
            };
            let inside = model.iter().any(|&(b, n)| off >= b && off + len <= b + n);
            user_data += 1;
            let (st, accepted) =
                t.submit(&[write(mem.addr() + off, len as u64, 9, 0x1000, user_data)]);
            let want = if inside { (OK, 1) } else { (mcfx_status::MCFX_E_NOT_REGISTERED, 0) };
            assert_eq!((st, accepted), want, "lookup [+{off:#x}, +{len}) in round {round}");
            queued += accepted;
        }
        // The accepted ops hold their regions until they complete.
        t.done.wait_for(queued, LIMIT);
    }
}
