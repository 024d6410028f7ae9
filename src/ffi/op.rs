//! C ops and arrays: decoded in place.

use super::guard::invalid;
use super::types::{mcfx_op, MCFX_OP_READ, MCFX_OP_WRITE};
use crate::error::{message, Result};
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

/// Decodes a C op in place (no copy into a buffer). The check is one
/// comparison per field on the hot path; the error (with its message) is
/// built out of line.
impl OpSource for mcfx_op {
    #[inline]
    fn request(&self) -> Result<OpRequest> {
        let opcode = match (self.opcode, self.reserved) {
            (MCFX_OP_READ, 0) => Opcode::Read,
            (MCFX_OP_WRITE, 0) => Opcode::Write,
            _ => return bad_op(self),
        };
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

/// Why `op` is not a valid op (an unknown opcode first, then a non-zero
/// reserved field).
#[cold]
#[inline(never)]
fn bad_op(op: &mcfx_op) -> Result<OpRequest> {
    match op.opcode {
        MCFX_OP_READ | MCFX_OP_WRITE => invalid("reserved field is not 0"),
        other => invalid(message(format_args!("unknown opcode {other}"))),
    }
}
