//! Operations: what a caller submits ([`OpRequest`], from any [`OpSource`])
//! and what travels through the queue ([`Op`]: the request, its region
//! hold and its deadline, moved by value: no allocation per op).

use crate::clock::CoarseTime;
use crate::registry::RegionRef;

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

/// An accepted op: the request, the region it holds and its deadline. Moved
/// by value through the queue (no allocation per op).
#[derive(Debug)]
pub struct Op {
    pub req: OpRequest,
    pub region: RegionRef,
    /// When it fails with `MCFX_E_TIMEOUT`: `op_timeout` after the submit
    /// call that queued it (see [`CoarseTime`]), wherever it is by then (in
    /// the queue, waiting for a connection, or in FlagCX).
    pub deadline: CoarseTime,
    /// Its submitter's waiter slot (`waiters`): its completion wakes that
    /// thread if it sleeps in `mcfx_progress`.
    pub waiter: u8,
}

#[cfg(test)]
mod tests {
    /// The queue's ring holds one `Op` per slot (plus its 8-byte stamp):
    /// the memory formula in `progress` (`96 Q`) counts on this size.
    #[test]
    fn an_op_is_88_bytes() {
        assert_eq!(std::mem::size_of::<super::Op>(), 88);
    }
}
