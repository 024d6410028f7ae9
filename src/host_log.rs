//! The host's logger: `tracing` events delivered to log callbacks that
//! transports were created with (`mcfx_config.log`).
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

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Once};

use parking_lot::RwLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

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

/// Open sinks, for events with no transport context.
static SINKS: RwLock<Vec<Arc<Sink>>> = parking_lot::const_rwlock(Vec::new());
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
    Transport(Option<Arc<Sink>>),
}

thread_local! {
    static ROUTE: RefCell<Route> = const { RefCell::new(Route::Everyone) };
    /// Set while this thread runs a callback: events it causes are dropped
    /// (no recursion into the host's logger).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// The variable that turns on logging to stderr (read here, where the
/// subscriber is built; see `crate::log`).
pub(crate) const ENV: &str = "MCFX_LOG";

/// Registers a callback for levels up to `level` (`ERROR..=TRACE`) and
/// installs the subscriber if this is the first need of one.
pub fn register(level: u32, f: LogFn) -> Arc<Sink> {
    let sink = Arc::new(Sink {
        f,
        level: level.clamp(ERROR, TRACE),
        open: RwLock::new(true),
        closed: AtomicBool::new(false),
    });
    install();
    let mut sinks = SINKS.write();
    sinks.push(Arc::clone(&sink));
    update_max_level(&sinks);
    sink
}

/// Closes a sink: waits for a call of its callback in progress, and none
/// starts afterwards (threads that still hold it see it closed). Called from
/// inside a log callback (which the ABI forbids: mcfx_destroy from the
/// host's logger), it does not wait, rather than deadlock on the lock its own
/// thread holds.
pub fn close(sink: &Arc<Sink>) {
    {
        let mut sinks = SINKS.write();
        sinks.retain(|s| !Arc::ptr_eq(s, sink));
        update_max_level(&sinks);
    }
    sink.closed.store(true, SeqCst);
    if !IN_CALLBACK.try_with(Cell::get).unwrap_or(false) {
        *sink.open.write() = false;
    }
}

fn update_max_level(sinks: &[Arc<Sink>]) {
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
    pub fn enter(sink: Option<&Arc<Sink>>) -> Scope {
        let previous = ROUTE.with(|r| r.replace(Route::Transport(sink.cloned())));
        Scope(Some(previous))
    }

    /// As [`Scope::enter`], but free (one relaxed load, inlined) while no
    /// callback is registered anywhere: for the exports on the hot path.
    #[inline]
    pub fn enter_if_any(sink: Option<&Arc<Sink>>) -> Scope {
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
        let stderr = std::env::var(ENV).ok().map(|filter| {
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
        let sinks = match route {
            Route::Transport(None) => return,
            Route::Transport(Some(sink)) => vec![sink],
            // A snapshot: no lock is held while callbacks run.
            Route::Everyone => SINKS.read().clone(),
        };
        let mut message = None;
        for sink in sinks.iter().filter(|s| level <= s.level) {
            let text = message.get_or_insert_with(|| format_event(event));
            let open = sink.open.read();
            if *open && !sink.closed.load(SeqCst) {
                IN_CALLBACK.with(|c| c.set(true));
                // A panicking callback must not unwind through tracing.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (sink.f)(level, text)
                }));
                IN_CALLBACK.with(|c| c.set(false));
            }
        }
    }
}

/// `message key=value ...`, NUL-terminated (interior NULs become spaces).
fn format_event(event: &Event<'_>) -> CString {
    struct Text(String, String);
    impl Visit for Text {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.0.push_str(value);
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
    let mut text = Text(String::new(), String::new());
    event.record(&mut text);
    let mut all = text.0 + &text.1;
    all = all.replace('\0', " ");
    CString::new(all).unwrap_or_default()
}
