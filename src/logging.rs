//! Logging: the library's `tracing` events, to the host's log callbacks
//! (`mcfx_config.log`) and, when `MCFX_LOG` is set, to stderr.
//!
//! Owns the process's one subscriber, the open sinks (one per transport
//! created with a callback), each thread's route, and the stack-formatted
//! lines ([`Line`], [`message`]) that logging and error messages use.
//!
//! `MCFX_LOG` takes a `tracing-subscriber` filter (`warn`, `debug`,
//! `mooncake_flagcx=trace`, ...). Unset, and with no callback, nothing is
//! installed and the library stays silent; if the host process already
//! installed a global subscriber, events go there and neither `MCFX_LOG`
//! nor the callbacks see them.
//!
//! One [`tracing_subscriber`] stack is installed per process, on first need
//! (`MCFX_LOG` set, or the first callback registered): the `MCFX_LOG` stderr
//! layer, if that variable is set, and [`HostLayer`], which hands each event
//! to the callbacks it belongs to:
//! - an event on a transport's own threads (progress, connectors), or inside
//!   an export called on a transport's handle, goes to that transport's
//!   callback only (none if it has none). The threads inherit the route of
//!   the thread that created them; the exports enter a [`Scope`];
//! - an event with no transport context goes to every registered callback.
//!
//! Cost: with no callback registered the exports pay one relaxed load; events
//! more verbose than every callback's level are cut by the global max level
//! (`max_level_hint`) before they reach the subscriber. A callback is never
//! called after [`close`] returned (`mcfx_destroy` closes the handle's sink).
//!
//! A line is formatted on the stack ([`Line`]): delivering an event never
//! allocates, so logging works, and cannot abort the host, when memory is
//! short (issue 17). The subscriber's installation does allocate (once).

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Once;

use arrayvec::ArrayVec;
use parking_lot::RwLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::fallible::{NoMemory, TryArc};

/// Log levels as the C ABI numbers them (`mcfx_log_level`).
pub(crate) const ERROR: u32 = 1;
pub(crate) const WARN: u32 = 2;
pub(crate) const INFO: u32 = 3;
pub(crate) const DEBUG: u32 = 4;
pub(crate) const TRACE: u32 = 5;

/// Receives `(level, message)`; the message lives only during the call.
pub type LogFn = Box<dyn Fn(u32, &std::ffi::CStr) + Send + Sync>;

/// One transport's log callback.
pub struct Sink {
    f: LogFn,
    /// Most verbose level passed to `f` (`ERROR..=TRACE`).
    level: u32,
    /// False once closed. Held for reading during every call of `f`, so
    /// [`close`] (taking it for writing) returns only after the last call.
    open: RwLock<bool>,
    /// Set by [`close`] before it waits; a call checks it under `open`.
    /// SeqCst: read and written next to the lock, never on a hot path.
    closed: AtomicBool,
}

/// A shared sink; its allocation fails with `NoMemory` instead of
/// aborting the host (`mcfx_create` answers `MCFX_E_NO_MEMORY`).
pub type SinkRef = TryArc<Sink>;

/// Open sinks, for events with no transport context.
static SINKS: RwLock<Vec<SinkRef>> = parking_lot::const_rwlock(Vec::new());
/// The most verbose level of any open sink; 0 when there is none. Relaxed
/// everywhere: it is a filter hint, and a stale value only lets one event
/// through to the per-sink level check or drops one at the edge of a
/// registration, never touches memory.
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);

/// Where this thread's events go.
#[derive(Clone, Default)]
enum Route {
    /// No transport context: every open sink.
    #[default]
    Everyone,
    /// Inside a transport: its sink, or nowhere when it has none.
    Transport(Option<SinkRef>),
}

thread_local! {
    static ROUTE: RefCell<Route> = const { RefCell::new(Route::Everyone) };
    /// Set while this thread runs a callback: events it causes are dropped
    /// (no recursion into the host's logger).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// The variable that turns on logging to stderr.
const ENV: &CStr = c"MCFX_LOG";

/// What the library needs before its first transport: the panic hook (see
/// `panic_hook`) and, when `MCFX_LOG` is set, the subscriber. Once per
/// process. `MCFX_LOG` is looked up without a copy (`std::env::var_os`
/// would copy the value onto the heap), so this allocates nothing unless
/// the variable is set.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        crate::panic_hook::install();
        // SAFETY: a NUL-terminated name; the result is only compared with
        // NULL.
        if !unsafe { libc::getenv(ENV.as_ptr()) }.is_null() {
            install();
        }
    });
}

/// `args` formatted as a message (cut at 511 bytes) without the heap, then
/// copied into a `String` if memory allows; empty otherwise (the status of
/// the error still says what happened). For error messages on the paths
/// that must not abort when memory runs out.
pub(crate) fn message(args: fmt::Arguments<'_>) -> String {
    let mut line = Line::<512>::new();
    let _ = fmt::Write::write_fmt(&mut line, args);
    line.to_string_or_empty()
}

/// Registers a callback for levels up to `level` (`ERROR..=TRACE`) and
/// installs the subscriber if this is the first need of one.
pub fn register(level: u32, f: LogFn) -> Result<SinkRef, NoMemory> {
    let sink = TryArc::try_new(Sink {
        f,
        level: level.clamp(ERROR, TRACE),
        open: RwLock::new(true),
        closed: AtomicBool::new(false),
    })?;
    install();
    let mut sinks = SINKS.write();
    // Without memory for the list, the sink still gets its transport's
    // events (until another sink closes and the level is recomputed without
    // it), only not those of no transport.
    if sinks.try_reserve(1).is_ok() {
        sinks.push(sink.clone());
        update_max_level(&sinks);
    } else if MAX_LEVEL.fetch_max(sink.level, Relaxed) < sink.level {
        tracing::callsite::rebuild_interest_cache();
    }
    Ok(sink)
}

/// Closes a sink: waits for a call of its callback in progress, and none
/// starts afterwards (threads that still hold it see it closed). Called from
/// inside a log callback (which the ABI forbids: mcfx_destroy from the
/// host's logger), it does not wait, rather than deadlock on the lock its own
/// thread holds.
pub fn close(sink: &SinkRef) {
    {
        let mut sinks = SINKS.write();
        sinks.retain(|s| !TryArc::ptr_eq(s, sink));
        update_max_level(&sinks);
    }
    sink.closed.store(true, SeqCst);
    if !IN_CALLBACK.try_with(Cell::get).unwrap_or(false) {
        *sink.open.write() = false;
    }
}

fn update_max_level(sinks: &[SinkRef]) {
    let max = sinks.iter().map(|s| s.level).max().unwrap_or(0);
    if MAX_LEVEL.swap(max, Relaxed) != max {
        // Recomputes tracing's global max level from `max_level_hint`.
        tracing::callsite::rebuild_interest_cache();
    }
}

/// The route of this thread's events, restored when dropped.
#[must_use]
pub struct Scope(Option<Route>);

impl Scope {
    /// Routes this thread's events to `sink` (none: to nowhere) until the
    /// scope ends.
    #[inline(never)]
    pub fn enter(sink: Option<&SinkRef>) -> Scope {
        let previous = ROUTE.with(|r| r.replace(Route::Transport(sink.cloned())));
        Scope(Some(previous))
    }

    /// As [`Scope::enter`], but free (one relaxed load, inlined) while no
    /// callback is registered anywhere: for the exports on the hot path.
    #[inline]
    pub fn enter_if_any(sink: Option<&SinkRef>) -> Scope {
        if MAX_LEVEL.load(Relaxed) == 0 {
            return Scope(None);
        }
        Scope::enter(sink)
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            restore(previous);
        }
    }
}

#[inline(never)]
fn restore(previous: Route) {
    ROUTE.with(|r| *r.borrow_mut() = previous);
}

/// This thread's route, for a thread it starts (see [`Inherited::enter`]).
pub struct Inherited(Route);

pub fn inherit() -> Inherited {
    Inherited(ROUTE.with(|r| r.borrow().clone()))
}

impl Inherited {
    /// Gives the calling (new) thread the route it inherited, for good.
    pub fn enter(self) {
        ROUTE.with(|r| *r.borrow_mut() = self.0);
    }
}

/// Installs the process's subscriber once: the `MCFX_LOG` stderr layer (if
/// set) and [`HostLayer`]. If the host already installed a global `tracing`
/// subscriber, events go there, and neither `MCFX_LOG` nor the callbacks see
/// them.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stderr = std::env::var(ENV.to_str().unwrap_or_default()).ok().map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_thread_names(true)
                .with_filter(tracing_subscriber::EnvFilter::new(filter))
        });
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(HostLayer.with_filter(HostFilter))
            .try_init();
    });
}

fn number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => ERROR,
        Level::WARN => WARN,
        Level::INFO => INFO,
        Level::DEBUG => DEBUG,
        Level::TRACE => TRACE,
    }
}

/// Lets through the events some sink may want (by the global max level).
struct HostFilter;

impl<S> Filter<S> for HostFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        number(meta.level()) <= MAX_LEVEL.load(Relaxed)
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Ask `enabled` each time: MAX_LEVEL changes as sinks come and go.
        tracing::subscriber::Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        use tracing::level_filters::LevelFilter;
        Some(match MAX_LEVEL.load(Relaxed) {
            0 => LevelFilter::OFF,
            ERROR => LevelFilter::ERROR,
            WARN => LevelFilter::WARN,
            INFO => LevelFilter::INFO,
            DEBUG => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }
}

/// Formats an event and hands it to the sinks on its route.
struct HostLayer;

impl<S: Subscriber> Layer<S> for HostLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // try_with: an event from a thread-local destructor at thread exit
        // finds these gone, and is dropped.
        if IN_CALLBACK.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        let level = number(event.metadata().level());
        let Ok(route) = ROUTE.try_with(|r| r.borrow().clone()) else { return };
        // Formatted once, on the stack, when the first sink wants it.
        let mut line = None;
        match route {
            Route::Transport(None) => {}
            Route::Transport(Some(sink)) => deliver(&sink, level, event, &mut line),
            Route::Everyone => {
                // Copies of the sinks, a few at a time, so that no lock is
                // held while callbacks run and nothing is allocated. (With
                // more than 8 sinks, one closed between two batches can
                // make a later one miss this event.)
                let mut from = 0;
                loop {
                    let batch: ArrayVec<SinkRef, 8> =
                        SINKS.read().iter().skip(from).take(8).cloned().collect();
                    for sink in &batch {
                        deliver(sink, level, event, &mut line);
                    }
                    if batch.len() < 8 {
                        break;
                    }
                    from += batch.len();
                }
            }
        }
    }
}

/// Hands `event` to `sink` if it wants its level and is open.
fn deliver(sink: &Sink, level: u32, event: &Event<'_>, line: &mut Option<EventLine>) {
    if level > sink.level {
        return;
    }
    let text = line.get_or_insert_with(|| format_event(event)).as_c_str();
    let open = sink.open.read();
    if *open && !sink.closed.load(SeqCst) {
        IN_CALLBACK.with(|c| c.set(true));
        // A panicking callback must not unwind through tracing.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (sink.f)(level, text)));
        IN_CALLBACK.with(|c| c.set(false));
    }
}

/// An event as the host's callback gets it (cut at 1023 bytes).
type EventLine = Line<1024>;

/// `message key=value ...`, on the stack: a log line never needs the heap,
/// so logging works (and cannot abort) when memory is short. Interior NULs
/// become spaces; longer lines are cut and end in `...`.
fn format_event(event: &Event<'_>) -> EventLine {
    /// The message and the other fields, apart: `message` may be recorded
    /// after them.
    struct Text(Line<512>, Line<512>);
    impl Visit for Text {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                let _ = self.0.write_str(value);
            } else {
                let _ = write!(self.1, " {}={value}", field.name());
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            } else {
                let _ = write!(self.1, " {}={value:?}", field.name());
            }
        }
    }
    let mut text = Text(Line::new(), Line::new());
    event.record(&mut text);
    let mut line = EventLine::new();
    let _ = line.write_str(text.0.as_str());
    let _ = line.write_str(text.1.as_str());
    line
}

/// A line of text formatted on the stack, for paths that must not need the
/// heap (log lines, error messages while memory is short). Holds at most
/// `N - 1` bytes and a NUL: longer text is cut at a character boundary and
/// ends in `...`; interior NULs become spaces.
pub(crate) struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
    cut: bool,
}

impl<const N: usize> Line<N> {
    /// Room kept for the `...` that marks cut text.
    const ELLIPSIS: usize = 3;

    pub(crate) fn new() -> Line<N> {
        Line { buf: [0; N], len: 0, cut: false }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole characters (and the ASCII ellipsis) are ever copied in.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// The text, NUL-terminated (the NUL is written here).
    pub(crate) fn as_c_str(&mut self) -> &CStr {
        self.buf[self.len] = 0;
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).unwrap_or(c"")
    }

    /// The text as a `String`, or an empty one when no memory can be had for
    /// it (a `String::new()` allocates nothing).
    pub(crate) fn to_string_or_empty(&self) -> String {
        let mut s = String::new();
        if s.try_reserve_exact(self.len).is_ok() {
            s.push_str(self.as_str());
        }
        s
    }
}

impl<const N: usize> fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        // One byte for the NUL; the ellipsis' room is given up only by the
        // text that fits exactly.
        let room = N - 1 - self.len;
        let take = if s.len() <= room {
            s.len()
        } else {
            self.cut = true;
            let mut end = room.saturating_sub(Self::ELLIPSIS);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            end
        };
        for (dst, &b) in self.buf[self.len..self.len + take].iter_mut().zip(&s.as_bytes()[..take]) {
            *dst = if b == 0 { b' ' } else { b };
        }
        self.len += take;
        if self.cut {
            let dots = Self::ELLIPSIS.min(N - 1 - self.len);
            self.buf[self.len..self.len + dots].fill(b'.');
            self.len += dots;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the allocator refuses is `NoMemory` (mcfx_create answers
    /// `MCFX_E_NO_MEMORY`), not an abort of the host; nothing was
    /// registered. The next registration goes through.
    #[test]
    fn a_sink_without_memory_is_no_memory_and_registers_nothing() {
        let sinks = SINKS.read().len();
        crate::fallible::fail_after(Some(0));
        let refused = register(WARN, Box::new(|_, _| {}));
        crate::fallible::fail_after(None);
        assert!(matches!(refused, Err(NoMemory)));
        assert_eq!(SINKS.read().len(), sinks);
        let sink = register(WARN, Box::new(|_, _| {})).unwrap();
        close(&sink);
    }

    #[test]
    fn a_message_is_the_formatted_text() {
        assert_eq!(message(format_args!("peer {}: {}", 7, "gone")), "peer 7: gone");
    }

    #[test]
    fn a_line_cuts_long_text_at_a_character_boundary_and_marks_it() {
        let mut l = Line::<8>::new();
        write!(l, "ab\0cdéfgh").unwrap();
        assert_eq!(l.as_str(), "ab c...");
        assert_eq!(l.as_c_str().to_bytes(), b"ab c...");
        let mut l = Line::<8>::new();
        write!(l, "1234567").unwrap();
        assert_eq!(l.as_str(), "1234567", "text that fits exactly is not cut");
        let mut l = Line::<8>::new();
        write!(l, "1234").unwrap();
        write!(l, "éé").unwrap();
        assert_eq!(l.as_str(), "1234...");
    }
}
