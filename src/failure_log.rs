//! Failed ops in the log without flooding it.
//!
//! A dead peer fails every op sent to it: tens of thousands a second, each
//! of which used to be a WARN line (formatted on the progress thread and, in
//! Mooncake, written to glog). Here failures are grouped by (peer, status):
//! the first of a group in an interval is logged at once at WARN with its
//! message; the rest are only counted, and one summary line per group gives
//! the count when the interval is over. Every op's own detail stays at
//! DEBUG.
//!
//! Cost: a failure whose group is already reported this interval is a scan
//! of a short table and an add (no formatting, no allocation); the table
//! holds at most [`MAX_GROUPS`] groups (further groups share one catch-all
//! line), so memory is bounded whatever the peers do.

use std::time::Duration;

use crate::error::Status;

/// How long a group's later failures are only counted.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
/// Groups tracked at once; failures of further groups are counted together.
pub(crate) const MAX_GROUPS: usize = 64;

/// A (peer, status) group's current interval.
struct Group {
    peer: u64,
    status: Status,
    /// When its interval started (ns on the caller's clock).
    since_ns: u64,
    /// Failures after the first in this interval (not logged yet).
    more: u64,
}

/// The failures of the groups the table could not hold.
#[derive(Default)]
struct Overflow {
    since_ns: u64,
    count: u64,
}

/// One progress thread's failure reporter.
pub(crate) struct FailureLog {
    groups: Vec<Group>,
    overflow: Overflow,
    interval_ns: u64,
}

impl Default for FailureLog {
    fn default() -> Self {
        FailureLog::new(INTERVAL)
    }
}

impl FailureLog {
    pub(crate) fn new(interval: Duration) -> FailureLog {
        FailureLog {
            groups: Vec::new(),
            overflow: Overflow::default(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Reports op `user_data`'s failure at `now_ns`: WARN when it is its
    /// group's first in the interval, otherwise counted (DEBUG always).
    pub(crate) fn failed(
        &mut self,
        now_ns: u64,
        peer: u64,
        status: Status,
        user_data: u64,
        msg: &str,
    ) {
        tracing::debug!(peer, user_data, status = ?status, "op failed: {msg}");
        if let Some(g) = self.groups.iter_mut().find(|g| g.peer == peer && g.status == status) {
            if now_ns.saturating_sub(g.since_ns) < self.interval_ns {
                g.more += 1;
                return;
            }
            // Its interval is over: summarize it and start a new one with
            // this failure logged.
            summarize(g.peer, g.status, g.more, now_ns - g.since_ns);
            g.since_ns = now_ns;
            g.more = 0;
        } else {
            self.flush(now_ns);
            if self.groups.len() >= MAX_GROUPS || self.groups.try_reserve(1).is_err() {
                self.overflowed(now_ns);
                return;
            }
            self.groups.push(Group { peer, status, since_ns: now_ns, more: 0 });
        }
        tracing::warn!(
            peer,
            user_data,
            status = ?status,
            "op failed: {msg} (further failures of this peer with this status are counted \
             and summarized every {:?})",
            Duration::from_nanos(self.interval_ns)
        );
    }

    #[cold]
    fn overflowed(&mut self, now_ns: u64) {
        let o = &mut self.overflow;
        if o.count == 0 {
            o.since_ns = now_ns;
            tracing::warn!("ops failed for more than {MAX_GROUPS} (peer, status) pairs at once; counting the rest together");
        }
        o.count += 1;
    }

    /// Writes the summary of every interval that is over and forgets groups
    /// with nothing left to report. Cheap when nothing is due (a scan);
    /// the progress thread calls it now and then.
    pub(crate) fn flush(&mut self, now_ns: u64) {
        let interval = self.interval_ns;
        self.groups.retain_mut(|g| {
            let age = now_ns.saturating_sub(g.since_ns);
            if age < interval {
                return true;
            }
            if g.more > 0 {
                summarize(g.peer, g.status, g.more, age);
            }
            false
        });
        let o = &mut self.overflow;
        if o.count > 0 && now_ns.saturating_sub(o.since_ns) >= interval {
            tracing::warn!(
                count = o.count,
                "{} ops of further (peer, status) pairs failed in the last {:?}",
                o.count,
                Duration::from_nanos(now_ns - o.since_ns)
            );
            *o = Overflow::default();
        }
    }

    /// When the next summary is due (ns on the caller's clock), if any
    /// group has failures still to summarize: the progress thread sleeps no
    /// longer than that.
    pub(crate) fn next_due(&self) -> Option<u64> {
        let groups = self.groups.iter().filter(|g| g.more > 0).map(|g| g.since_ns);
        let overflow = (self.overflow.count > 0).then_some(self.overflow.since_ns);
        groups.chain(overflow).min().map(|since| since.saturating_add(self.interval_ns))
    }

    /// Summarizes everything still counted, whatever its age (shutdown).
    pub(crate) fn finish(&mut self, now_ns: u64) {
        for g in self.groups.drain(..) {
            summarize(g.peer, g.status, g.more, now_ns.saturating_sub(g.since_ns));
        }
        self.flush(now_ns.saturating_add(self.interval_ns));
    }

    /// Groups tracked now (tests).
    #[cfg(test)]
    fn groups(&self) -> usize {
        self.groups.len()
    }
}

#[cold]
fn summarize(peer: u64, status: Status, more: u64, over_ns: u64) {
    if more > 0 {
        tracing::warn!(
            peer,
            status = ?status,
            count = more,
            "{more} more ops to peer {peer} failed with {status:?} in the last {:?}",
            Duration::from_nanos(over_ns)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::subscriber::with_default;
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects the WARN lines (message field) emitted inside `f`.
    fn warnings(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
            fn on_event(
                &self,
                e: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *e.metadata().level() != tracing::Level::WARN {
                    return;
                }
                struct Msg<'a>(&'a mut String);
                impl tracing::field::Visit for Msg<'_> {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        if f.name() == "message" {
                            *self.0 = format!("{v:?}");
                        }
                    }
                }
                let mut line = String::new();
                e.record(&mut Msg(&mut line));
                self.0.lock().unwrap().push(line);
            }
        }
        let lines = Lines::default();
        with_default(tracing_subscriber::registry().with(lines.clone()), f);
        let out = lines.0.lock().unwrap().clone();
        out
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn twenty_thousand_failures_of_one_peer_make_two_lines() {
        let lines = warnings(|| {
            let mut log = FailureLog::new(Duration::from_secs(5));
            for i in 0..20_000u64 {
                // 20 000 failures over 4 s: one interval.
                log.failed(i * 200_000, 7, Status::MCFX_E_CONNECT, i, "connect refused");
            }
            log.flush(10 * S);
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("connect refused"), "{}", lines[0]);
        assert!(lines[1].contains("19999 more ops to peer 7"), "{}", lines[1]);
    }

    #[test]
    fn each_peer_and_status_gets_its_own_first_line_and_summary() {
        let lines = warnings(|| {
            let mut log = FailureLog::new(Duration::from_secs(5));
            for i in 0..300u64 {
                log.failed(i, i % 3, Status::MCFX_E_CONNECT, i, "x");
                log.failed(i, 0, Status::MCFX_E_TIMEOUT, i, "y");
            }
            log.flush(6 * S);
        });
        // 4 groups: a first line and a summary each.
        assert_eq!(lines.len(), 8, "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("99 more ops to peer 1")));
        assert!(lines
            .iter()
            .any(|l| l.contains("299 more ops to peer 0 failed with MCFX_E_TIMEOUT")));
    }

    #[test]
    fn a_new_interval_logs_its_first_failure_again() {
        let lines = warnings(|| {
            let mut log = FailureLog::new(Duration::from_secs(5));
            log.failed(0, 1, Status::MCFX_E_CONNECT, 1, "first");
            log.failed(S, 1, Status::MCFX_E_CONNECT, 2, "counted");
            log.failed(6 * S, 1, Status::MCFX_E_CONNECT, 3, "again");
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("first"));
        assert!(lines[1].contains("1 more ops"));
        assert!(lines[2].contains("again"));
    }

    #[test]
    fn the_table_is_bounded_and_the_rest_is_counted_together() {
        let lines = warnings(|| {
            let mut log = FailureLog::new(Duration::from_secs(5));
            for peer in 0..10_000u64 {
                log.failed(peer, peer, Status::MCFX_E_RESOLVE, peer, "unknown");
                assert!(log.groups() <= MAX_GROUPS);
            }
            log.flush(6 * S);
            assert_eq!(log.groups(), 0, "flushed groups are forgotten");
        });
        // One line per tracked group, one overflow notice, one overflow
        // summary; no line per failure.
        assert_eq!(lines.len(), MAX_GROUPS + 2, "{}", lines.len());
        assert!(lines.last().unwrap().contains(&format!("{} ops", 10_000 - MAX_GROUPS)));
    }
}
