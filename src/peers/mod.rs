//! Peers: connections to the other transports, made off the progress thread.
//!
//! - [`connector`]: the connector threads and their pool, which resolve a
//!   peer id through the caller's resolver and make FlagCX connections;
//!   they see a narrow context and nothing of the ops;
//! - [`state`]: what the progress thread knows of each peer (its
//!   connection, the ops waiting for one) and the rules that decide when an
//!   op may go out, waits, asks for a reconnect, or is judged by a
//!   connection (the remote-range rule).
//!
//! The progress thread owns the [`state::PeerTable`] (no lock) and talks to
//! the connectors only through [`connector::Connects`]' request and result
//! queues.

pub(crate) mod connector;
pub(crate) mod state;
