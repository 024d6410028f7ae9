//! Operations: what a caller submits ([`OpRequest`], from any [`OpSource`])
//! and what travels through the queue ([`Op`]: the request, its region
//! hold and its deadline, moved by value: no allocation per op).

use crate::clock::MonoTime;
use crate::registry::RegionSlot;

/// Direction of a transfer, from the local side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Remote memory -> local memory.
    Read,
    /// Local memory -> remote memory.
    Write,
}

/// One transfer as the caller describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRequest {
    pub opcode: Opcode,
    /// Local address (inside a registered region).
    pub local: usize,
    pub len: u64,
    /// The peer (Mooncake's segment id), resolved to an endpoint on first use.
    pub peer: u64,
    /// Absolute remote virtual address.
    pub remote: u64,
    /// Returned untouched in the op's completion.
    pub user_data: u64,
}

/// Anything a submit can read ops from: the Rust [`OpRequest`] or the C
/// `mcfx_op` (decoded in place, so a submit copies nothing into a buffer).
pub trait OpSource {
    fn request(&self) -> crate::error::Result<OpRequest>;
}

impl OpSource for OpRequest {
    fn request(&self) -> crate::error::Result<OpRequest> {
        Ok(*self)
    }
}

/// An accepted op: the request's fields, the region it holds and its
/// deadline. Moved by value through the queue (no allocation per op).
///
/// 56 bytes, so a queue slot (the op and its stamp) is one cache line: the
/// request's fields are laid out flat (an embedded `OpRequest` would keep
/// its own padding), and the region is its counter slot alone (the FlagCX
/// `mr` is read from that slot at issue, `Registry::mr`). At 88 bytes a
/// single op took 0.1 us longer (`single_4k` p50 0.86 against 0.74 us, 21
/// alternating rounds, Intel Xeon; batches within their spread, see
/// docs/benchmarks.md).
#[derive(Debug)]
pub struct Op {
    /// Local address (inside the held region).
    pub local: usize,
    pub len: u64,
    pub peer: u64,
    pub remote: u64,
    pub user_data: u64,
    /// When it fails with `MCFX_E_TIMEOUT`: `op_timeout` after the submit
    /// call that queued it (see [`MonoTime`]), wherever it is by then (in
    /// the queue, waiting for a connection, or in FlagCX).
    pub deadline: MonoTime,
    /// The region it holds (released at its completion).
    pub region: RegionSlot,
    pub opcode: Opcode,
    /// Its submitter's waiter slot (`waiters`): its completion wakes that
    /// thread if it sleeps in `mcfx_progress`.
    pub waiter: u8,
}

impl Op {
    #[inline]
    pub fn new(req: OpRequest, region: RegionSlot, deadline: MonoTime, waiter: u8) -> Op {
        let OpRequest { opcode, local, len, peer, remote, user_data } = req;
        Op { local, len, peer, remote, user_data, deadline, region, opcode, waiter }
    }
}

#[cfg(test)]
mod tests {
    /// The queue's ring holds one `Op` per slot (plus its 8-byte stamp), a
    /// cache line per slot: the memory formula in `progress` (`64 Q`)
    /// counts on this size, and a larger op would put two slots on a line.
    #[test]
    fn an_op_and_its_stamp_fill_one_line() {
        assert_eq!(std::mem::size_of::<super::Op>(), 56);
        assert_eq!(std::mem::size_of::<Option<super::Op>>(), 56);
    }
}
