//! The lock-free protocols, public in a build for their loom models only
//! (`--cfg mcfx_loom`, see `sync`): `tests/loom_gate.rs`,
//! `tests/loom_ring.rs`, `tests/loom_wake.rs`, `tests/loom_holds.rs` and
//! `tests/inflight_loom_room.rs` drive these types as the crate builds
//! them, on loom's primitives. Owns nothing; in other builds it does not
//! exist and the types stay crate-internal.

pub use crate::gate::{Admission, Gate};
pub use crate::holds::Holds;
pub use crate::ring::Ring;
pub use crate::waiters::Waiters;
pub use crate::wake::{Notified, RoomWait, Wake, BRIEF_NAP};
