//! The tracing subscriber, set up in one place. `RUST_LOG` filters; tests stay
//! quiet unless `TEST_LOG` is set.

use tracing_subscriber::EnvFilter;

pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// For tests: logs only when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("info");
    }
}
