//! C ops and arrays: decoded in place.

use super::guard::invalid;
use super::types::{mcfx_op, MCFX_OP_READ, MCFX_OP_WRITE};
use crate::error::Result;
use crate::op::{OpRequest, OpSource, Opcode};

/// # Safety
/// `ptr` must be NULL (then `count` must be 0) or hold `count` entries.
pub(super) unsafe fn slice<'a, T>(ptr: *const T, count: usize) -> Result<&'a [T]> {
    if count == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return invalid("NULL array with a non-zero count");
    }
    // SAFETY: per this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// Decodes a C op in place (no copy into a buffer).
impl OpSource for mcfx_op {
    #[inline]
    fn request(&self) -> Result<OpRequest> {
        let opcode = match self.opcode {
            MCFX_OP_READ => Opcode::Read,
            MCFX_OP_WRITE => Opcode::Write,
            other => return invalid(&format!("unknown opcode {other}")),
        };
        if self.reserved != 0 {
            return invalid("reserved field is not 0");
        }
        Ok(OpRequest {
            opcode,
            local: self.local_addr as usize,
            len: self.length,
            peer: self.peer_id,
            remote: self.remote_addr,
            user_data: self.user_data,
        })
    }
}
