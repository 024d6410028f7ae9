//! Counters, readable at any time from any thread.
//!
//! Every counter only grows (a reader never sees one go down): each is
//! added to after the fact it counts and never taken back. `submitted`
//! counts accepted ops only, once their queue slots are reserved and before
//! they are published (see `Ring::push_counted`), so an op is counted
//! submitted before it can complete. `in_flight` (in `mcfx_stats`) is no
//! counter but their difference, and goes up and down.
//!
//! The counters are independent tallies updated with `Relaxed` RMWs (several
//! writers) or plain stores (the progress thread's, `Stats::bump`, with
//! Release so that a reader who sees a completion counted also sees its op
//! counted submitted, see `snapshot`). Hot-path updates happen once per
//! submit chunk or per completion, with no locked instruction on the
//! progress thread.
//!
//! One promise holds beyond that: an op's completion counters are stored
//! before its callback runs (`Progress::complete`), so a thread that has seen
//! the completion (synchronized with the callback) reads them counted.

use std::sync::atomic::{
    fence, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

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
                /// Ops accepted by submit (counted once queued, never taken
                /// back).
                submitted,
                /// Submit calls refused (in part or whole) because the queue
                /// was full or `max_in_flight` ops were held.
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
            /// the rest. An op is counted submitted before it can complete
            /// (and the completion counters are stored with Release), so this
            /// order never shows more completed than submitted. Then the
            /// completion counters are read again, and the whole copy taken
            /// again if an op completed meanwhile (up to `SNAPSHOT_TRIES`
            /// times): so `in_flight` is, in the usual case, the count of
            /// ops held at one moment, never above `max_in_flight` (ops are
            /// counted submitted after they took their credit and counted
            /// completed before they give it back).
            pub fn snapshot(&self) -> Snapshot {
                let mut tries = 1;
                loop {
                    $($( let $name = self.$group.$name.load(Relaxed); )*
                    fence(Acquire);)*
                    let s = Snapshot { $($( $name, )*)* };
                    if self.done() == s.done() || tries == SNAPSHOT_TRIES {
                        return s;
                    }
                    tries += 1;
                }
            }
        }
    };
}
counters!(define_stats);

/// How many times `snapshot` copies the counters at most while ops
/// complete under it.
const SNAPSHOT_TRIES: u32 = 8;

impl Stats {
    /// For counters several threads write.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// For counters only the thread running a pass writes (one at a time,
    /// ordered by the pass lock): a plain load and store
    /// (no locked instruction on the completion path).
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        // Relaxed: only this thread writes it. Release: a snapshot that
        // reads this value (then an Acquire fence) sees every `submitted`
        // count made before the op was published.
        counter.store(counter.load(Relaxed).wrapping_add(n), Release);
    }

    /// Ops completed, with any status.
    fn done(&self) -> u64 {
        let p = &self.progress;
        // Relaxed: read after `snapshot`'s Acquire fences, for comparison.
        [&p.completed, &p.failed, &p.timed_out, &p.canceled].iter().map(|c| c.load(Relaxed)).sum()
    }
}

impl Snapshot {
    /// Ops completed, with any status.
    pub(crate) fn done(&self) -> u64 {
        self.completed + self.failed + self.timed_out + self.canceled
    }

    /// Ops accepted and not yet completed.
    pub fn in_flight(&self) -> u64 {
        self.submitted.saturating_sub(self.done())
    }
}
