//! Operations: what a caller submits and what travels through the queue.

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

/// An accepted op: the request and the region it holds. Moved by value
/// through the queue (no allocation per op). Its deadline is stamped when the
/// progress thread takes it (that thread reads the clock once per pass
/// anyway; the caller's submit stays free of clock reads).
#[derive(Debug)]
pub struct Op {
    pub req: OpRequest,
    pub region: RegionRef,
}
