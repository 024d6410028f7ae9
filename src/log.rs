//! Logging: `tracing` events, shown only when `MCFX_LOG` is set.
//!
//! `MCFX_LOG` takes a `tracing-subscriber` filter (`warn`, `debug`,
//! `mooncake_flagcx=trace`, ...). Unset, the library installs nothing and
//! stays silent; if the host process already installed a global subscriber,
//! events go there and `MCFX_LOG` is ignored. The host's own logger gets the
//! events through `mcfx_config.log` instead (see `host_log`).
//!
//! Panics: the library catches every panic of its own (and of Rust
//! callbacks) and turns it into a status or a counter. So that the default
//! panic hook does not print them on stderr, [`init`] installs (once) a hook
//! that handles panics on the library's threads (named `mcfx-*`) and inside
//! its exported calls by logging them through `tracing`, and hands every
//! other panic to the hook that was installed before.

use std::cell::Cell;
use std::sync::Once;

use crate::host_log::ENV;

/// Prefix of the name of every thread the library starts.
pub const THREAD_PREFIX: &str = "mcfx-";

thread_local! {
    /// Depth of exported calls on this thread (a callback may call in again).
    static IN_EXPORT: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as inside an exported call until dropped.
pub struct InExport(());

impl InExport {
    #[inline]
    pub fn enter() -> InExport {
        IN_EXPORT.with(|d| d.set(d.get() + 1));
        InExport(())
    }
}

impl Drop for InExport {
    #[inline]
    fn drop(&mut self) {
        IN_EXPORT.with(|d| d.set(d.get() - 1));
    }
}

/// Whether a panic on this thread is the library's to handle.
fn ours() -> bool {
    IN_EXPORT.with(|d| d.get() > 0)
        || std::thread::current().name().is_some_and(|n| n.starts_with(THREAD_PREFIX))
}

/// Installs the process's subscriber (see `host_log::install`) when
/// `MCFX_LOG` is set, and the panic hook (see the module doc).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ours() {
                let thread = std::thread::current();
                tracing::error!(thread = thread.name().unwrap_or("?"), "panic (caught): {info}");
            } else {
                previous(info);
            }
        }));
        if std::env::var_os(ENV).is_some() {
            crate::host_log::install();
        }
    });
}
