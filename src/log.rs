//! Logging: `tracing` events, shown only when `MCFX_LOG` is set.
//!
//! `MCFX_LOG` takes a `tracing-subscriber` filter (`warn`, `debug`,
//! `mooncake_flagcx=trace`, ...). Unset, the library installs nothing and
//! stays silent; if the host process already installed a global subscriber,
//! events go there and `MCFX_LOG` is ignored. The host's own logger gets the
//! events through `mcfx_config.log` instead (see `host_log`).

pub const ENV: &str = "MCFX_LOG";

/// Installs the process's subscriber (see `host_log::install`) when
/// `MCFX_LOG` is set.
pub fn init() {
    if std::env::var_os(ENV).is_some() {
        crate::host_log::install();
    }
}
