//! Counters, readable at any time from any thread.
//!
//! All counters are monotonically increasing `Relaxed` atomics: each is an
//! independent tally, nothing is published through them, and a reader only
//! needs an eventually consistent snapshot. Hot-path updates happen once per
//! submit call or per progress pass, not per op, where that is possible.
//!
//! One promise holds beyond that: an op's completion counters are stored
//! before its callback runs (`Progress::complete`), so a thread that has seen
//! the completion (synchronized with the callback) reads them counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// The one list of counters, grouped by writer: `$group: $Type { counters }`.
/// Calls `$m!` with it, so each use (the [`Stats`] groups, [`Snapshot`],
/// `snapshot`, the C `mcfx_stats` copy in `ffi`) is generated from it and a
/// counter is added in one place. The first group is the completion counters:
/// `snapshot` reads it before the others (see there).
macro_rules! counters {
    ($m:ident) => {
        $m! {
            /// Written by the progress thread only (plain stores: `Stats::bump`).
            progress: ProgressCounters {
                /// Ops completed successfully.
                completed,
                /// Ops completed with an error other than timeout or cancel.
                failed,
                /// Ops completed with `MCFX_E_TIMEOUT`.
                timed_out,
                /// Ops completed with `MCFX_E_CANCELED`.
                canceled,
                /// Bytes moved by successful ops.
                bytes,
                /// FlagCX vector transfers issued.
                flagcx_transfers,
                /// Completion callbacks that panicked (caught).
                callback_panics,
            }
            /// Written by submitting callers.
            callers: CallerCounters {
                /// Ops accepted by submit.
                submitted,
                /// Submit calls refused (in part or whole) because the queue
                /// was full.
                queue_full,
                /// Times a submitter had to wake the sleeping progress thread.
                wakeups,
            }
            /// Written by connector threads.
            connectors: ConnectorCounters {
                /// Peer connections established (including reconnects).
                connects,
                /// Connection attempts that failed (resolve or connect).
                connect_failures,
                /// Reconnects made to refresh a peer's region list.
                reconnects,
            }
        }
    };
}
pub(crate) use counters;

macro_rules! define_stats {
    ($(
        $(#[$gdoc:meta])* $group:ident: $Group:ident {
            $( $(#[$doc:meta])* $name:ident, )*
        }
    )*) => {
        $(
            $(#[$gdoc])*
            #[derive(Debug, Default)]
            pub(crate) struct $Group {
                $( $(#[$doc])* pub $name: AtomicU64, )*
            }
        )*

        /// The counters, each writer's group on its own cache lines
        /// (`CachePadded`: 128 bytes where the adjacent-line prefetcher pairs
        /// lines), so a caller's `submitted` update and the progress thread's
        /// `completed` update never bounce one line between cores on every op.
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $( $(#[$gdoc])* pub $group: CachePadded<$Group>, )*
        }

        /// A plain copy of the counters (`Stats`).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $($( $(#[$doc])* pub $name: u64, )*)*
        }

        impl Stats {
            /// A copy of every counter, group by group in the list's order:
            /// the completion counters first, then (after an Acquire fence)
            /// the rest. An op is counted submitted before it can complete,
            /// so this order never shows more completed than submitted
            /// (`in_flight` also saturates at zero).
            pub fn snapshot(&self) -> Snapshot {
                $($( let $name = self.$group.$name.load(Relaxed); )*
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);)*
                Snapshot { $($( $name, )*)* }
            }
        }
    };
}
counters!(define_stats);

impl Stats {
    /// For counters several threads write.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// For counters only the progress thread writes: a plain load and store
    /// (no locked instruction on the completion path).
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Takes back part of an `add` (ops counted but not queued).
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }
}

impl Snapshot {
    /// Ops accepted and not yet completed.
    pub fn in_flight(&self) -> u64 {
        let done = self.completed + self.failed + self.timed_out + self.canceled;
        self.submitted.saturating_sub(done)
    }
}
