//! notifier-worker settings from `CHAT_*`.

use super::service_account::ServiceAccount;
use crate::config::{Common, ConfigError, Settings, Strings};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct FcmSettings {
    pub account: ServiceAccount,
    /// `https://fcm.googleapis.com`; tests and emulators stand in here.
    pub endpoint: String,
    /// Defaults to the service account's `token_uri`.
    pub token_uri: String,
}

#[derive(Clone, Debug)]
pub struct NotifierSettings {
    pub common: Common,
    /// This worker's consumer name in the `notifier` group; unique per process.
    pub consumer: String,
    /// `None` runs dry: pushes are logged and recorded on the outbox stream.
    pub fcm: Option<FcmSettings>,
    /// Concurrent requests to FCM.
    pub concurrency: usize,
    /// Work items in hand at once.
    pub max_in_flight: usize,
    pub block: Duration,
    pub request_timeout: Duration,
    /// Attempts per device within one delivery of a work item; after that
    /// the item is left pending and redelivered later.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl NotifierSettings {
    pub fn from_strings(src: &dyn Strings) -> Result<Self, ConfigError> {
        let mut s = Settings::new(src);
        let common = Common::read(&mut s);
        let consumer = s.opt("CHAT_NOTIFIER_CONSUMER").unwrap_or_else(|| {
            format!(
                "notifier-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xff_ffff
            )
        });
        let fcm = match s.opt("CHAT_FCM_SERVICE_ACCOUNT") {
            None => None,
            Some(path) => match ServiceAccount::load(std::path::Path::new(&path)) {
                Ok(account) => {
                    let endpoint = s.string("CHAT_FCM_ENDPOINT", "https://fcm.googleapis.com");
                    let token_uri = s
                        .opt("CHAT_FCM_TOKEN_URI")
                        .unwrap_or_else(|| account.token_uri.clone());
                    for (k, v) in [
                        ("CHAT_FCM_ENDPOINT", &endpoint),
                        ("CHAT_FCM_TOKEN_URI", &token_uri),
                    ] {
                        if !(v.starts_with("https://") || v.starts_with("http://")) {
                            s.error(format!("{k}={v:?}: must be an http(s) URL"));
                        }
                    }
                    Some(FcmSettings {
                        account,
                        endpoint: endpoint.trim_end_matches('/').to_owned(),
                        token_uri,
                    })
                }
                Err(e) => {
                    s.error(format!("CHAT_FCM_SERVICE_ACCOUNT: {e}"));
                    None
                }
            },
        };
        let settings = Self {
            common,
            consumer,
            fcm,
            concurrency: s.parse("CHAT_NOTIFIER_CONCURRENCY", 32),
            max_in_flight: s.parse("CHAT_NOTIFIER_MAX_IN_FLIGHT", 1000),
            block: s.duration("CHAT_NOTIFIER_BLOCK", Duration::from_secs(1)),
            request_timeout: s.duration("CHAT_FCM_TIMEOUT", Duration::from_secs(10)),
            max_attempts: s.parse("CHAT_FCM_MAX_ATTEMPTS", 5),
            backoff_base: s.duration("CHAT_FCM_BACKOFF", Duration::from_millis(500)),
            backoff_max: s.duration("CHAT_FCM_BACKOFF_MAX", Duration::from_secs(30)),
        };
        if settings.concurrency == 0 || settings.max_in_flight == 0 || settings.max_attempts == 0 {
            s.error("CHAT_NOTIFIER_CONCURRENCY / CHAT_NOTIFIER_MAX_IN_FLIGHT / CHAT_FCM_MAX_ATTEMPTS: must be at least 1");
        }
        if settings.block.is_zero() || settings.request_timeout.is_zero() {
            s.error("CHAT_NOTIFIER_BLOCK / CHAT_FCM_TIMEOUT: must be more than zero");
        }
        s.finish()?;
        Ok(settings)
    }
}
