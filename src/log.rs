//! Logging: `tracing` events, shown only when `MCFX_LOG` is set.
//!
//! `MCFX_LOG` takes a `tracing-subscriber` filter (`warn`, `debug`,
//! `mooncake_flagcx=trace`, ...). Unset, the library installs nothing and
//! stays silent; if the host process already installed a global subscriber,
//! events go there and `MCFX_LOG` is ignored.

use std::sync::Once;

pub const ENV: &str = "MCFX_LOG";

/// Installs a stderr subscriber once per process when `MCFX_LOG` is set.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(filter) = std::env::var(ENV) else { return };
        let filter = tracing_subscriber::EnvFilter::new(filter);
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_thread_names(true)
            .try_init();
    });
}
