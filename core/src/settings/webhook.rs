//! webhook-worker settings from `CHAT_*`, and each endpoint's signing
//! secret from the variable its `secret_env` names.

use crate::config::{Common, ConfigError, Settings, Strings};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone)]
pub struct WebhookSettings {
    pub common: Common,
    /// This worker's consumer name in the group; unique per process.
    pub consumer: String,
    /// How long one `XREADGROUP` blocks; also bounds how fast SIGTERM is noticed.
    pub block: Duration,
    /// Signing secrets by endpoint name.
    pub secrets: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("consumer", &self.consumer)
            .field("block", &self.block)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A signing secret shorter than this is refused: it could be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

impl WebhookSettings {
    pub fn from_strings(src: &dyn Strings) -> Result<Self, ConfigError> {
        let mut s = Settings::new(src);
        let common = Common::read(&mut s);
        let consumer = s.opt("CHAT_WEBHOOK_CONSUMER").unwrap_or_else(|| {
            format!(
                "webhooks-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xff_ffff
            )
        });
        let block = s.duration("CHAT_WEBHOOK_BLOCK", Duration::from_secs(1));
        if block.is_zero() {
            s.error("CHAT_WEBHOOK_BLOCK: must be more than zero");
        }
        let mut secrets = HashMap::new();
        for e in &common.streams.webhooks.endpoints {
            match s.opt(&e.secret_env) {
                Some(v) if v.len() >= MIN_SECRET_BYTES => {
                    secrets.insert(e.name.clone(), v.into_bytes());
                }
                Some(_) => s.error(format!(
                    "{}: the signing secret of webhook endpoint {} must be at least {MIN_SECRET_BYTES} bytes",
                    e.secret_env, e.name
                )),
                None => s.error(format!(
                    "{}: required, the signing secret of webhook endpoint {}",
                    e.secret_env, e.name
                )),
            }
        }
        s.finish()?;
        Ok(Self {
            common,
            consumer,
            block,
            secrets,
        })
    }
}
