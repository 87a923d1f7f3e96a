//! fanout-worker settings from `CHAT_*`.

use crate::config::{Common, ConfigError, Settings, Strings};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct FanoutSettings {
    pub common: Common,
    /// This worker's consumer name in the group; unique per process.
    pub consumer: String,
    /// How long one `XREADGROUP` blocks; also bounds how fast SIGTERM is noticed.
    pub block: Duration,
    /// The summary job queue's Redis (for the automatic summary trigger).
    pub jobs_redis_url: String,
}

impl FanoutSettings {
    pub fn from_strings(src: &dyn Strings) -> Result<Self, ConfigError> {
        let mut s = Settings::new(src);
        let common = Common::read(&mut s);
        let consumer = s.opt("CHAT_FANOUT_CONSUMER").unwrap_or_else(|| {
            format!(
                "fanout-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xff_ffff
            )
        });
        let block = s.duration("CHAT_FANOUT_BLOCK", Duration::from_secs(1));
        if block.is_zero() {
            s.error("CHAT_FANOUT_BLOCK: must be more than zero");
        }
        // Needed only for the automatic summary trigger.
        let jobs_redis_url =
            common.read_jobs_url(&mut s, common.streams.summarize.every_messages > 0);
        s.finish()?;
        Ok(Self {
            common,
            consumer,
            block,
            jobs_redis_url,
        })
    }
}
